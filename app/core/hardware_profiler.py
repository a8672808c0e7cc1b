"""HardwareProfiler: every GPU and the host's memory, as immutable snapshots.

The seed's ``HardwareProfiler().get_profile()`` keeps working; it now sees every GPU through the
backends instead of GPU 0 through torch, and never raises.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from app.core.hardware.faults import FaultLog
from app.core.hardware.host import HostBackend
from app.core.hardware.snapshot import BackendStatus, GpuDevice, HardwareProfile, HostMemory
from app.core.units import bytes_from_gib

__all__ = ["GpuBackend", "HardwareProfile", "HardwareProfiler", "default_backends"]

_log = logging.getLogger(__name__)


@runtime_checkable
class GpuBackend(Protocol):
    """A source of GPUs. ``read`` and ``status`` should not raise; the profiler guards them anyway."""

    name: str

    def status(self) -> BackendStatus: ...

    def read(self) -> list[GpuDevice]: ...

    def close(self) -> None: ...


def default_backends(simulate: str | None = None, clock: Callable[[], float] = time.time) -> list[GpuBackend]:
    """Simulated GPUs for a spec, otherwise the real drivers (NVML, then amdsmi)."""
    if simulate:
        from app.core.hardware.simulated import SimulatedBackend

        return [SimulatedBackend.from_spec(simulate, clock=clock)]
    from app.core.hardware.amd import AmdBackend
    from app.core.hardware.nvml import NvmlBackend

    return [NvmlBackend(), AmdBackend()]


class HardwareProfiler:
    """Detects and monitors GPUs and system memory.

    ``get_profile()`` reads every backend now and returns a :class:`HardwareProfile`. GPUs are
    numbered across backends in order (NVIDIA first). A backend that fails is reported as
    unavailable with its reason; the profile is still complete for everything else.
    """

    def __init__(
        self,
        backends: Sequence[GpuBackend] | None = None,
        *,
        host: HostBackend | None = None,
        simulate: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._backends: tuple[GpuBackend, ...] = tuple(
            backends if backends is not None else default_backends(simulate, clock)
        )
        self._host = host if host is not None else HostBackend()
        self._faults = FaultLog(_log)
        self._lock = threading.Lock()
        self.logger = _log

    @property
    def backends(self) -> tuple[GpuBackend, ...]:
        return self._backends

    def get_profile(self) -> HardwareProfile:
        """Current hardware and resource availability."""
        with self._lock:
            gpus: list[GpuDevice] = []
            statuses: list[BackendStatus] = []
            for backend in self._backends:
                devices, status = self._read_backend(backend)
                offset = len(gpus)
                for d in devices:
                    parent = d.mig_parent + offset if d.mig_parent is not None else None
                    gpus.append(dataclasses.replace(d, index=len(gpus), mig_parent=parent))
                statuses.append(status)
            host = self._read_host()
            statuses.append(self._host.status())
        return HardwareProfile(timestamp=self._clock(), gpus=tuple(gpus), host=host, backends=tuple(statuses))

    def _read_backend(self, backend: GpuBackend) -> tuple[list[GpuDevice], BackendStatus]:
        name = getattr(backend, "name", type(backend).__name__)
        try:
            devices = list(backend.read())
            status = backend.status()
        except Exception as err:  # noqa: BLE001 - a broken backend must not break the profile
            self._faults.fault(name, f"GPU backend {name} failed: {err!r}", logging.ERROR)
            return [], BackendStatus(name, False, f"backend error: {err!r}")
        self._faults.clear(name)
        return devices, status

    def _read_host(self) -> HostMemory:
        try:
            host = self._host.read()
            self._faults.clear("host")
            return host
        except Exception as err:  # noqa: BLE001
            self._faults.fault("host", f"host backend failed: {err!r}", logging.ERROR)
            return HostMemory(total_bytes=0, available_bytes=0, used_bytes=0, unavailable=(("ram", repr(err)),))

    def close(self) -> None:
        for backend in self._backends:
            try:
                backend.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> HardwareProfiler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the seed's helpers -------------------------------------------------------------------
    def is_ampere_or_newer(self) -> bool:
        """True when the primary GPU has compute capability 8.0 or above."""
        cc = self.get_profile().cuda_compute_capability
        return cc is not None and cc[0] >= 8

    def has_sufficient_vram(self, required_gb: float) -> bool:
        """True when the primary GPU has at least ``required_gb`` GiB free now."""
        gpu = self.get_profile().primary_gpu
        return gpu is not None and gpu.free_bytes >= bytes_from_gib(required_gb)

    def has_sufficient_ram(self, required_gb: float) -> bool:
        """True when at least ``required_gb`` GiB of system memory is available now."""
        return self.get_profile().host.available_bytes >= bytes_from_gib(required_gb)
