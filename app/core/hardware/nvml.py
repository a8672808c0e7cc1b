"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py).

NVML starts lazily, once, under a lock. Nothing here raises to the caller: a missing driver makes
the backend unavailable with a reason (and it tries again later), a field the card does not support
is ``None``, a GPU that falls off the bus is reported as lost while the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app.core.hardware.faults import FaultLog
from app.core.hardware.processes import ProcessNames
from app.core.hardware.snapshot import BackendStatus, GpuDevice, GpuProcess

_log = logging.getLogger(__name__)

#: NVML's "value not available" for 64-bit counters.
_NOT_AVAILABLE_U64 = (1 << 64) - 1


class _Lost(Exception):
    """The device stopped answering in the middle of a read."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


class NvmlBackend:
    """Reads every NVIDIA GPU (and MIG instance) NVML can see."""

    name = "nvml"

    def __init__(
        self,
        nvml: Any = None,
        *,
        process_names: ProcessNames | None = None,
        retry_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = nvml
        self._names = process_names
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._lock = threading.RLock()
        self._started = False
        self._next_try = 0.0
        self._status = BackendStatus(self.name, False, "not started yet")
        self._faults = FaultLog(_log)
        #: (device index, field) pairs the card said it does not support: not asked again.
        self._unsupported: dict[tuple[int, str], str] = {}
        #: Last known identity per index, so a lost GPU still has a name.
        self._known: dict[int, tuple[str, str | None]] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def status(self) -> BackendStatus:
        with self._lock:
            self._ensure_started()
            return self._status

    def close(self) -> None:
        with self._lock:
            if self._started:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # noqa: BLE001
                    pass
            self._started = False

    def _module(self) -> Any:
        if self._nvml is None:
            import pynvml  # nvidia-ml-py; pure ctypes, imports fine without a GPU

            self._nvml = pynvml
        return self._nvml

    def _ensure_started(self) -> bool:
        if self._started:
            return True
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry_interval_s
        try:
            nvml = self._module()
        except ImportError:
            self._set_unavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
            return False
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            self._set_unavailable(self._init_reason(nvml, err))
            return False
        except Exception as err:  # noqa: BLE001 - e.g. OSError from ctypes on a broken install
            self._set_unavailable(f"NVML could not start: {err}")
            return False
        self._started = True
        self._status = BackendStatus(
            self.name,
            True,
            None,
            driver_version=self._optional(lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            runtime_version=self._optional(lambda: self._cuda_version(nvml.nvmlSystemGetCudaDriverVersion())),
        )
        self._faults.clear("init")
        _log.info("NVML started (driver %s)", self._status.driver_version)
        return True

    def _set_unavailable(self, reason: str) -> None:
        self._status = BackendStatus(self.name, False, reason)
        self._faults.fault("init", f"NVIDIA GPUs unavailable: {reason}", logging.INFO)

    def _fail_backend(self, reason: str) -> None:
        """A fault that makes the whole backend unusable; shut down and try again later."""
        self.close()
        self._next_try = self._clock() + self._retry_interval_s
        self._set_unavailable(reason)

    @staticmethod
    def _init_reason(nvml: Any, err: Exception) -> str:
        reasons = {
            "NVML_ERROR_LIBRARY_NOT_FOUND": "the NVIDIA driver library (libnvidia-ml) was not found: "
            "no NVIDIA driver is installed on this machine",
            "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA driver is installed but not loaded: "
            "check that the nvidia kernel module is loaded (nvidia-smi)",
            "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "the NVIDIA driver and its library have different versions "
            "(usually after a driver update): reboot or reload the nvidia kernel module",
            "NVML_ERROR_NO_PERMISSION": "no permission to open the NVIDIA devices: "
            "check the permissions of /dev/nvidia*",
            "NVML_ERROR_INSUFFICIENT_POWER": "a GPU is not connected to power properly",
        }
        code = getattr(err, "value", None)
        for const, reason in reasons.items():
            if code is not None and code == getattr(nvml, const, object()):
                return reason
        return f"NVML could not start: {err}"

    @staticmethod
    def _cuda_version(value: int) -> str:
        return f"{value // 1000}.{(value % 1000) // 10}"

    def _optional(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001
            return None

    # --- reading -----------------------------------------------------------------------------
    def read(self) -> list[GpuDevice]:
        """Every GPU, then its MIG instances; indexes are this backend's own (the profiler renumbers)."""
        with self._lock:
            if not self._ensure_started():
                return []
            nvml = self._nvml
            try:
                count = nvml.nvmlDeviceGetCount()
            except Exception as err:  # noqa: BLE001
                self._fail_backend(f"NVML stopped answering: {err}")
                return []
            devices: list[GpuDevice] = []
            raw_processes: list[list[tuple[int, int | None, str]]] = []
            for i in range(count):
                for device, procs in self._read_gpu(i):
                    devices.append(device)
                    raw_processes.append(procs)
        return self._attach_process_names(devices, raw_processes)

    def _attach_process_names(
        self, devices: list[GpuDevice], raw: list[list[tuple[int, int | None, str]]]
    ) -> list[GpuDevice]:
        pids = {pid for procs in raw for pid, _, _ in procs}
        if not pids:
            return devices
        if self._names is None:
            self._names = ProcessNames()
        names = self._names.lookup(pids)
        out = []
        for device, procs in zip(devices, raw, strict=True):
            if procs:
                processes = tuple(GpuProcess(pid, names[pid], used, kind) for pid, used, kind in procs)
                device = dataclasses.replace(device, processes=processes)
            out.append(device)
        return out

    def _read_gpu(self, i: int) -> list[tuple[GpuDevice, list[tuple[int, int | None, str]]]]:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            device, procs = self._read_handle(i, handle, mig_parent=None)
        except _Lost:
            return [(self._lost_device(i), [])]
        except nvml.NVMLError as err:
            if self._is(err, "NVML_ERROR_GPU_IS_LOST"):
                return [(self._lost_device(i), [])]
            self._faults.fault((i, "handle"), f"GPU {i}: cannot open the device: {err}")
            return [(self._lost_device(i, reason=str(err)), [])]
        self._faults.clear((i, "lost"))
        self._faults.clear((i, "handle"))
        result = [(device, procs)]
        result.extend(self._read_mig(i, handle))
        return result

    def _lost_device(self, i: int, reason: str = "the GPU has fallen off the bus or stopped answering") -> GpuDevice:
        self._faults.fault((i, "lost"), f"GPU {i} lost: {reason}", logging.ERROR)
        name, uuid = self._known.get(i, (f"NVIDIA GPU {i}", None))
        return GpuDevice(
            index=i, name=name, kind="nvidia", uuid=uuid, total_bytes=0, used_bytes=0, free_bytes=0,
            lost=True, unavailable=(("memory", reason),),
        )

    def _is(self, err: Exception, const: str) -> bool:
        return getattr(err, "value", None) == getattr(self._nvml, const, object())

    def _field(self, i: int, field: str, unavailable: list[tuple[str, str]], fn: Callable[..., Any], *args: Any) -> Any:
        """One NVML query: its value, or ``None`` with the reason noted. Raises ``_Lost`` if the GPU is gone."""
        known = self._unsupported.get((i, field))
        if known is not None:
            unavailable.append((field, known))
            return None
        nvml = self._nvml
        try:
            value = fn(*args)
        except nvml.NVMLError as err:
            if self._is(err, "NVML_ERROR_GPU_IS_LOST"):
                raise _Lost from err
            if self._is(err, "NVML_ERROR_NOT_SUPPORTED") or self._is(err, "NVML_ERROR_FUNCTION_NOT_FOUND"):
                self._unsupported[(i, field)] = "not supported by this GPU or driver"
                unavailable.append((field, "not supported by this GPU or driver"))
                return None
            reason = str(err)
            self._faults.fault((i, field), f"GPU {i}: cannot read {field}: {reason}")
            unavailable.append((field, reason))
            return None
        except Exception as err:  # noqa: BLE001 - ctypes or a binding bug: still not the caller's problem
            self._faults.fault((i, field), f"GPU {i}: cannot read {field}: {err!r}")
            unavailable.append((field, repr(err)))
            return None
        self._faults.clear((i, field))
        return value

    def _memory(self, i: int, handle: Any, unavailable: list[tuple[str, str]]) -> tuple[int, int, int, int | None]:
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None and (i, "memory_v2") not in self._unsupported:
            mem = self._field(i, "memory_v2", [], nvml.nvmlDeviceGetMemoryInfo, handle, version)
            if mem is not None:
                return int(mem.total), int(mem.used), int(mem.free), int(mem.reserved)
        mem = self._field(i, "memory", unavailable, nvml.nvmlDeviceGetMemoryInfo, handle)
        if mem is None:
            return 0, 0, 0, None
        return int(mem.total), int(mem.used), int(mem.free), None

    def _read_handle(
        self, i: int, handle: Any, mig_parent: int | None
    ) -> tuple[GpuDevice, list[tuple[int, int | None, str]]]:
        nvml = self._nvml
        una: list[tuple[str, str]] = []
        key = i if mig_parent is None else (mig_parent, i)
        name = self._field(key, "name", una, nvml.nvmlDeviceGetName, handle)  # type: ignore[arg-type]
        name = _text(name) if name is not None else f"NVIDIA GPU {i}"
        uuid = self._field(key, "uuid", una, nvml.nvmlDeviceGetUUID, handle)  # type: ignore[arg-type]
        uuid = _text(uuid) if uuid is not None else None
        if mig_parent is None:
            self._known[i] = (name, uuid)
        total, used, free, reserved = self._memory(key, handle, una)  # type: ignore[arg-type]
        util = self._field(key, "utilization_percent", una, nvml.nvmlDeviceGetUtilizationRates, handle)  # type: ignore[arg-type]
        temp = self._field(key, "temperature_c", una, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)  # type: ignore[arg-type]
        power = self._field(key, "power_w", una, nvml.nvmlDeviceGetPowerUsage, handle)  # type: ignore[arg-type]
        limit = self._field(key, "power_limit_w", una, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)  # type: ignore[arg-type]
        sm = self._field(key, "sm_clock_mhz", una, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)  # type: ignore[arg-type]
        memclk = self._field(key, "memory_clock_mhz", una, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM)  # type: ignore[arg-type]
        cc = self._field(key, "compute_capability", una, nvml.nvmlDeviceGetCudaComputeCapability, handle)  # type: ignore[arg-type]
        pci = self._field(key, "pci_bus_id", una, nvml.nvmlDeviceGetPciInfo, handle)  # type: ignore[arg-type]
        procs = self._processes(key, handle, una)
        device = GpuDevice(
            index=i,
            name=name,
            kind="nvidia",
            total_bytes=total,
            used_bytes=used,
            free_bytes=free,
            uuid=uuid,
            pci_bus_id=_text(pci.busId) if pci is not None else None,
            reserved_bytes=reserved,
            utilization_percent=float(util.gpu) if util is not None else None,
            memory_utilization_percent=float(util.memory) if util is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=power / 1000.0 if power is not None else None,
            power_limit_w=limit / 1000.0 if limit is not None else None,
            sm_clock_mhz=int(sm) if sm is not None else None,
            memory_clock_mhz=int(memclk) if memclk is not None else None,
            compute_capability=(int(cc[0]), int(cc[1])) if cc is not None else None,
            mig_parent=mig_parent,
            unavailable=tuple(una),
        )
        return device, procs

    def _processes(self, key: Any, handle: Any, una: list[tuple[str, str]]) -> list[tuple[int, int | None, str]]:
        nvml = self._nvml
        merged: dict[int, tuple[int | None, str]] = {}
        for kind, fn in (
            ("compute", nvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics", nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            procs = self._field(key, f"{kind}_processes", una, fn, handle)
            for p in procs or ():
                used = getattr(p, "usedGpuMemory", None)
                used = None if used is None or used == _NOT_AVAILABLE_U64 else int(used)
                pid = int(p.pid)
                if pid in merged:
                    # The same allocation is reported in both lists: count it once.
                    known = [x for x in (merged[pid][0], used) if x is not None]
                    merged[pid] = (max(known) if known else None, "compute+graphics")
                else:
                    merged[pid] = (used, kind)
        return [(pid, used, kind) for pid, (used, kind) in sorted(merged.items())]

    def _read_mig(self, i: int, handle: Any) -> list[tuple[GpuDevice, list[tuple[int, int | None, str]]]]:
        nvml = self._nvml
        if (i, "mig") in self._unsupported:
            return []
        mode = self._field(i, "mig", [], nvml.nvmlDeviceGetMigMode, handle)
        if mode is None or mode[0] != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        count = self._field(i, "mig_count", [], nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        out = []
        for j in range(count):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except nvml.NVMLError:
                continue  # an empty slot reports NOT_FOUND
            try:
                out.append(self._read_handle(j, mig, mig_parent=i))
            except _Lost:
                continue
        return out
