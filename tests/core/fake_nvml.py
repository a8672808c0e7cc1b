"""A stand-in for the `pynvml` module that injects faults real hardware won't produce on demand.

It raises pynvml's *real* ``NVMLError`` subclasses (built from the real module), so the backend's
error handling is exercised exactly as it would be against a driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GiB = 1 << 30


def nvml_error(code: int) -> pynvml.NVMLError:
    """pynvml's own exception for an NVML return code (e.g. NVMLError_GpuIsLost)."""
    return pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    total: int = 24 * GiB
    used: int = 3 * GiB
    reserved: int = 300 * 1024 * 1024
    util: tuple[int, int] = (37, 12)
    temperature: int = 55
    power_mw: int = 123_000
    power_limit_mw: int = 450_000
    clocks: tuple[int, int] = (2520, 10501)  # SM, memory
    cc: tuple[int, int] = (8, 9)
    bus_id: str = "00000000:01:00.0"
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    mig: list[FakeGpu] | None = None


class FakeNvml:
    """Module-like: attribute look-ups fall back to the real pynvml for constants and error classes."""

    def __init__(self, gpus: list[FakeGpu] | None = None) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        #: function name -> error code, or (error code, device index) for one device only.
        self.faults: dict[str, Any] = {}
        self.calls: dict[str, int] = {}
        self.init_error: int | None = None
        self.initialized = False
        self.v2_missing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(pynvml, name)

    # --- fault injection ----------------------------------------------------------------------
    def fail(self, fn: str, code: int, device: int | None = None) -> None:
        self.faults[fn] = (code, device)

    def heal(self, fn: str | None = None) -> None:
        if fn is None:
            self.faults.clear()
        else:
            self.faults.pop(fn, None)

    def _enter(self, fn: str, device: int | None = None) -> None:
        self.calls[fn] = self.calls.get(fn, 0) + 1
        if not self.initialized and fn != "nvmlInit":
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        fault = self.faults.get(fn)
        if fault is not None:
            code, only = fault
            if only is None or only == device:
                raise nvml_error(code)

    def _gpu(self, handle: Any) -> FakeGpu:
        return handle.gpu

    # --- the NVML API used by NvmlBackend -----------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] = self.calls.get("nvmlInit", 0) + 1
        if self.init_error is not None:
            raise nvml_error(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "580.95.05"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return 13000

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex", i)
        return SimpleNamespace(index=i, gpu=self.gpus[i])

    def _dev(self, fn: str, handle: Any) -> FakeGpu:
        self._enter(fn, getattr(handle, "index", None))
        return self._gpu(handle)

    def nvmlDeviceGetName(self, h: Any) -> str:
        return self._dev("nvmlDeviceGetName", h).name

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return self._dev("nvmlDeviceGetUUID", h).uuid

    def nvmlDeviceGetMemoryInfo(self, h: Any, version: int | None = None) -> Any:
        if version is not None:
            if self.v2_missing:
                self._enter("nvmlDeviceGetMemoryInfo_v2", h.index)
                raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            g = self._dev("nvmlDeviceGetMemoryInfo_v2", h)
            return SimpleNamespace(total=g.total, used=g.used, free=g.total - g.used - g.reserved, reserved=g.reserved)
        g = self._dev("nvmlDeviceGetMemoryInfo", h)
        return SimpleNamespace(total=g.total, used=g.used + g.reserved, free=g.total - g.used - g.reserved)

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        g = self._dev("nvmlDeviceGetUtilizationRates", h)
        return SimpleNamespace(gpu=g.util[0], memory=g.util[1])

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._dev("nvmlDeviceGetTemperature", h).temperature

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return self._dev("nvmlDeviceGetPowerUsage", h).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        return self._dev("nvmlDeviceGetEnforcedPowerLimit", h).power_limit_mw

    def nvmlDeviceGetClockInfo(self, h: Any, kind: int) -> int:
        g = self._dev("nvmlDeviceGetClockInfo", h)
        return g.clocks[0] if kind == pynvml.NVML_CLOCK_SM else g.clocks[1]

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:
        return self._dev("nvmlDeviceGetCudaComputeCapability", h).cc

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        return SimpleNamespace(busId=self._dev("nvmlDeviceGetPciInfo", h).bus_id)

    def _procs(self, items: list[tuple[int, int | None]]) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in items]

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        return self._procs(self._dev("nvmlDeviceGetComputeRunningProcesses", h).compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: Any) -> list[Any]:
        return self._procs(self._dev("nvmlDeviceGetGraphicsRunningProcesses", h).graphics)

    def nvmlDeviceGetMigMode(self, h: Any) -> tuple[int, int]:
        g = self._dev("nvmlDeviceGetMigMode", h)
        if g.mig is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        self._dev("nvmlDeviceGetMaxMigDeviceCount", h)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, j: int) -> Any:
        g = self._dev("nvmlDeviceGetMigDeviceHandleByIndex", h)
        if g.mig is None or j >= len(g.mig):
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return SimpleNamespace(index=(h.index, j), gpu=g.mig[j])


class FakePsutil:
    """Just enough psutil for process names, with AccessDenied / NoSuchProcess on chosen pids."""

    import psutil as _real

    AccessDenied = _real.AccessDenied
    NoSuchProcess = _real.NoSuchProcess

    def __init__(self, names: dict[int, str], denied: set[int] = frozenset(), gone: set[int] = frozenset()) -> None:
        self.names, self.denied, self.gone = names, set(denied), set(gone)
        self.lookups = 0
        outer = self

        class Process:
            def __init__(self, pid: int) -> None:
                self.pid = pid

            def name(self) -> str:
                outer.lookups += 1
                if self.pid in outer.denied:
                    raise outer.AccessDenied(self.pid)
                if self.pid in outer.gone:
                    raise outer.NoSuchProcess(self.pid)
                return outer.names[self.pid]

        self.Process = Process
