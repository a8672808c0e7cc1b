"""System memory and CPU through psutil; Apple silicon's unified memory is reported as such."""

from __future__ import annotations

import logging
import os
import platform as _platform
import subprocess
import threading
from typing import Any

from app.core.hardware.faults import FaultLog
from app.core.hardware.snapshot import BackendStatus, HostMemory

_log = logging.getLogger(__name__)


class HostBackend:
    """Reads RAM, swap, CPU counts and this process's RSS. Never raises."""

    name = "host"

    def __init__(
        self,
        psutil_module: Any = None,
        *,
        system: str | None = None,
        machine: str | None = None,
        apple_chip: str | None = None,
    ) -> None:
        if psutil_module is None:
            import psutil

            psutil_module = psutil
        self._ps = psutil_module
        self._lock = threading.Lock()
        self._faults = FaultLog(_log)
        self._system = system if system is not None else _platform.system()
        self._machine = machine if machine is not None else _platform.machine()
        self._unified = self._system == "Darwin" and self._machine in ("arm64", "aarch64")
        self._chip = apple_chip if apple_chip is not None else (self._apple_chip() if self._unified else None)
        self._cpu_count, self._logical = self._cpu_counts()
        self._process: Any = None

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True, None)

    def close(self) -> None:
        pass

    def _cpu_counts(self) -> tuple[int, int]:
        try:
            logical = self._ps.cpu_count(logical=True) or os.cpu_count() or 1
        except Exception:  # noqa: BLE001
            logical = os.cpu_count() or 1
        try:
            physical = self._ps.cpu_count(logical=False) or logical
        except Exception:  # noqa: BLE001 - PermissionError in some sandboxes
            physical = logical
        return int(physical), int(logical)

    @staticmethod
    def _apple_chip() -> str | None:
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2, check=False
            )
            return out.stdout.strip() or None
        except Exception:  # noqa: BLE001
            return None

    def read(self) -> HostMemory:
        una: list[tuple[str, str]] = []
        with self._lock:
            total = available = used = 0
            try:
                vm = self._ps.virtual_memory()
                total, available, used = int(vm.total), int(vm.available), int(vm.used)
                self._faults.clear("ram")
            except Exception as err:  # noqa: BLE001
                self._faults.fault("ram", f"cannot read system memory: {err!r}")
                una.append(("ram", repr(err)))
            swap_total = swap_used = None
            try:
                sw = self._ps.swap_memory()
                swap_total, swap_used = int(sw.total), int(sw.used)
                self._faults.clear("swap")
            except Exception as err:  # noqa: BLE001
                self._faults.fault("swap", f"cannot read swap: {err!r}", logging.INFO)
                una.append(("swap", repr(err)))
            rss = None
            try:
                if self._process is None:
                    self._process = self._ps.Process()
                rss = int(self._process.memory_info().rss)
            except Exception as err:  # noqa: BLE001
                self._faults.fault("rss", f"cannot read this process's memory: {err!r}", logging.INFO)
                una.append(("process_rss_bytes", repr(err)))
        return HostMemory(
            total_bytes=total,
            available_bytes=available,
            used_bytes=used,
            swap_total_bytes=swap_total,
            swap_used_bytes=swap_used,
            process_rss_bytes=rss,
            cpu_count=self._cpu_count,
            logical_cpu_count=self._logical,
            platform=self._system,
            machine=self._machine,
            unified_memory=self._unified,
            unified_gpu_name=f"{self._chip} (unified memory)" if self._unified and self._chip else
            ("Apple GPU (unified memory)" if self._unified else None),
            unavailable=tuple(una),
        )
