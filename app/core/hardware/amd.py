"""AMD GPUs through amdsmi (ROCm), when it is installed: ``pip install 'modeldeck[amd]'``."""

from __future__ import annotations

import logging
import threading
from typing import Any

from app.core.hardware.faults import FaultLog
from app.core.hardware.processes import ProcessNames
from app.core.hardware.snapshot import BackendStatus, GpuDevice, GpuProcess
from app.core.units import MiB

_log = logging.getLogger(__name__)


def _number(value: Any) -> float | None:
    """amdsmi reports 'N/A' (a string) for values the card does not have."""
    if isinstance(value, dict):
        value = value.get("value")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class AmdBackend:
    """Reads AMD GPUs; unavailable, with the reason, where amdsmi or the driver is missing."""

    name = "amdsmi"

    def __init__(self, amdsmi: Any = None, *, process_names: ProcessNames | None = None) -> None:
        self._smi = amdsmi
        self._names = process_names
        self._lock = threading.Lock()
        self._started = False
        self._tried = False
        self._status = BackendStatus(self.name, False, "not started yet")
        self._faults = FaultLog(_log)

    def status(self) -> BackendStatus:
        with self._lock:
            self._ensure_started()
            return self._status

    def close(self) -> None:
        with self._lock:
            if self._started:
                try:
                    self._smi.amdsmi_shut_down()
                except Exception:  # noqa: BLE001
                    pass
            self._started = False

    def _ensure_started(self) -> bool:
        if self._started or self._tried:
            return self._started
        self._tried = True
        if self._smi is None:
            try:
                import amdsmi
            except ImportError:
                self._status = BackendStatus(
                    self.name, False, "amdsmi is not installed (AMD GPUs need ROCm and pip install 'modeldeck[amd]')"
                )
                return False
            except Exception as err:  # noqa: BLE001 - amdsmi raises on import when ROCm libs are missing
                self._status = BackendStatus(self.name, False, f"amdsmi could not load: {err}")
                return False
            self._smi = amdsmi
        try:
            self._smi.amdsmi_init()
        except Exception as err:  # noqa: BLE001
            self._status = BackendStatus(self.name, False, f"the AMD driver did not answer: {err}")
            return False
        self._started = True
        driver = None
        try:
            handles = self._smi.amdsmi_get_processor_handles()
            if handles:
                driver = str(self._smi.amdsmi_get_gpu_driver_info(handles[0]).get("driver_version"))
        except Exception:  # noqa: BLE001
            pass
        self._status = BackendStatus(self.name, True, None, driver_version=driver)
        return True

    def read(self) -> list[GpuDevice]:
        with self._lock:
            if not self._ensure_started():
                return []
            try:
                handles = list(self._smi.amdsmi_get_processor_handles())
                self._faults.clear("handles")
            except Exception as err:  # noqa: BLE001
                self._faults.fault("handles", f"AMD GPUs not listed: {err}")
                return []
            devices, raw = [], []
            for i, h in enumerate(handles):
                device, procs = self._read_one(i, h)
                devices.append(device)
                raw.append(procs)
        pids = {pid for procs in raw for pid, _ in procs}
        names: dict[int, str] = {}
        if pids:
            if self._names is None:
                self._names = ProcessNames()
            names = self._names.lookup(pids)
        return [
            _with_processes(d, tuple(GpuProcess(pid, names.get(pid, "unknown"), used) for pid, used in procs))
            for d, procs in zip(devices, raw, strict=True)
        ]

    def _call(self, i: int, field: str, una: list[tuple[str, str]], fn: Any, *args: Any) -> Any:
        try:
            value = fn(*args)
        except Exception as err:  # noqa: BLE001
            self._faults.fault((i, field), f"AMD GPU {i}: cannot read {field}: {err}", logging.INFO)
            una.append((field, str(err)))
            return None
        self._faults.clear((i, field))
        return value

    def _read_one(self, i: int, h: Any) -> tuple[GpuDevice, list[tuple[int, int | None]]]:
        smi = self._smi
        una: list[tuple[str, str]] = []
        asic = self._call(i, "name", una, smi.amdsmi_get_gpu_asic_info, h) or {}
        vram = self._call(i, "memory", una, smi.amdsmi_get_gpu_vram_usage, h)
        lost = vram is None
        total = int(_number(vram.get("vram_total")) or 0) * MiB if vram else 0
        used = int(_number(vram.get("vram_used")) or 0) * MiB if vram else 0
        activity = self._call(i, "utilization_percent", una, smi.amdsmi_get_gpu_activity, h) or {}
        temp = None
        if hasattr(smi, "AmdSmiTemperatureType"):
            temp = self._call(
                i, "temperature_c", una, smi.amdsmi_get_temp_metric, h,
                smi.AmdSmiTemperatureType.EDGE, smi.AmdSmiTemperatureMetric.CURRENT,
            )
        power = self._call(i, "power_w", una, smi.amdsmi_get_power_info, h) or {}
        watts = _number(power.get("current_socket_power")) or _number(power.get("average_socket_power"))
        uuid = self._call(i, "uuid", una, smi.amdsmi_get_gpu_device_uuid, h)
        plist = self._call(i, "processes", una, smi.amdsmi_get_gpu_process_list, h) or []
        procs: list[tuple[int, int | None]] = []
        for p in plist:
            if not isinstance(p, dict) or "pid" not in p:
                continue
            mem = p.get("memory_usage", {}).get("vram_mem") if isinstance(p.get("memory_usage"), dict) else p.get("mem")
            procs.append((int(p["pid"]), int(mem) if isinstance(mem, (int, float)) else None))
        device = GpuDevice(
            index=i,
            name=str(asic.get("market_name") or f"AMD GPU {i}"),
            kind="amd",
            total_bytes=total,
            used_bytes=used,
            free_bytes=max(0, total - used),
            uuid=str(uuid) if uuid else None,
            utilization_percent=_number(activity.get("gfx_activity")),
            temperature_c=_number(temp),
            power_w=watts,
            lost=lost,
            unavailable=tuple(una),
        )
        return device, procs


def _with_processes(device: GpuDevice, processes: tuple[GpuProcess, ...]) -> GpuDevice:
    import dataclasses

    return dataclasses.replace(device, processes=processes) if processes else device
