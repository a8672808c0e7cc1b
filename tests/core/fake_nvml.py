"""A stand-in for the `pynvml` module that injects faults real hardware won't produce on demand.

It raises pynvml's *real* ``NVMLError`` subclasses (built from the real module), so the backend's
error handling is exercised exactly as it would be against a driver.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable
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
        #: (function name, device index or None for every device) -> error code, or an exception to raise.
        self.device_faults: dict[tuple[str, Any], Any] = {}
        #: What nvmlDeviceGetCount answers instead of the real count (e.g. 100_000 from a confused driver).
        self.count_override: Any = None

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
        if self.device_faults:
            injected = self.device_faults.get((fn, device), self.device_faults.get((fn, None)))
            if injected is not None:
                if isinstance(injected, BaseException):  # a fresh one, as a binding would raise
                    raise type(injected)(*injected.args)
                raise nvml_error(injected)

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
        return len(self.gpus) if self.count_override is None else self.count_override

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex", i)
        if not 0 <= i < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # what the driver answers past its count
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


# --- fault storms ------------------------------------------------------------------------------
# The storm run shared by tests/core/test_nvml_hardening.py (1,000 ticks) and benchmarks/bench_faults.py
# (12,000 ticks): randomized fault storms through FakeNvml, one storm at a time with clean gaps between,
# every tick checked by rules that do not come from the backend.

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

#: NVML function -> the GpuDevice fields a fault in it may take away.
FIELD_FUNCTIONS: dict[str, frozenset[str]] = {
    "nvmlDeviceGetName": frozenset({"name"}),
    "nvmlDeviceGetUUID": frozenset({"uuid"}),
    "nvmlDeviceGetMemoryInfo_v2": frozenset({"memory_v2", "memory"}),
    "nvmlDeviceGetUtilizationRates": frozenset({"utilization_percent", "memory_utilization_percent"}),
    "nvmlDeviceGetTemperature": frozenset({"temperature_c"}),
    "nvmlDeviceGetPowerUsage": frozenset({"power_w"}),
    "nvmlDeviceGetEnforcedPowerLimit": frozenset({"power_limit_w"}),
    "nvmlDeviceGetClockInfo": frozenset({"sm_clock_mhz", "memory_clock_mhz"}),
    "nvmlDeviceGetCudaComputeCapability": frozenset({"compute_capability"}),
    "nvmlDeviceGetPciInfo": frozenset({"pci_bus_id"}),
    "nvmlDeviceGetComputeRunningProcesses": frozenset({"compute_processes", "processes"}),
    "nvmlDeviceGetGraphicsRunningProcesses": frozenset({"graphics_processes", "processes"}),
}

#: Per-field error codes a healthy driver session can answer (not the session-wide ones).
FIELD_ERRORS = (
    pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_TIMEOUT, pynvml.NVML_ERROR_IRQ_ISSUE,
    pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_INSUFFICIENT_SIZE, pynvml.NVML_ERROR_MEMORY,
    pynvml.NVML_ERROR_CORRUPTED_INFOROM, pynvml.NVML_ERROR_INVALID_ARGUMENT, 555,  # 555: a code pynvml does not know
)


def _odd(**changes: Any) -> Callable[[FakeGpu], FakeGpu]:
    return lambda g: dataclasses.replace(g, **changes)


#: Odd values a driver (or a binding bug) has produced: name -> (change to the GPU, fields it may take away).
ODD_VALUES: dict[str, tuple[Callable[[FakeGpu], FakeGpu], frozenset[str]]] = {
    "utilization None": (_odd(util=(None, 12)), frozenset({"utilization_percent"})),
    "utilization 250 %": (_odd(util=(250, 12)), frozenset({"utilization_percent"})),
    "memory utilization -5 %": (_odd(util=(37, -5)), frozenset({"memory_utilization_percent"})),
    "bus id garbage": (_odd(bus_id=b"\xff\xfe\x00zz"), frozenset({"pci_bus_id"})),
    "bus id None": (_odd(bus_id=None), frozenset({"pci_bus_id"})),
    "-273 C": (_odd(temperature=-273), frozenset({"temperature_c"})),
    "temperature 2^32-1": (_odd(temperature=U32), frozenset({"temperature_c"})),
    "used > total": (lambda g: dataclasses.replace(g, used=g.total + 5 * GiB), frozenset({"memory"})),
    "used 2^64-1": (_odd(used=U64), frozenset({"memory"})),
    "total 2^64-1": (_odd(total=U64), frozenset({"memory"})),
    "pid -1": (_odd(compute=[(-1, GiB)]), frozenset({"compute_processes", "processes"})),
    "process holds 2^63 bytes": (_odd(compute=[(4242, 1 << 63)]), frozenset({"compute_processes", "processes"})),
    "power -1 mW": (_odd(power_mw=-1), frozenset({"power_w"})),
    "power 2^32-1 mW": (_odd(power_mw=U32), frozenset({"power_w"})),
    "SM clock 2^32-1": (_odd(clocks=(U32, 10501)), frozenset({"sm_clock_mhz"})),
    "compute capability (None, 9)": (_odd(cc=(None, 9)), frozenset({"compute_capability"})),
    "name None": (_odd(name=None), frozenset({"name"})),
    "uuid 12345": (_odd(uuid=12345), frozenset({"uuid"})),
}

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")


def implausible(device: Any) -> list[str]:
    """What is implausible in one GpuDevice, by rules of physics and NVML, not the backend's own."""
    d, bad = device, []
    if not (0 <= d.total_bytes <= 1 << 50):
        bad.append(f"total {d.total_bytes}")
    if not (0 <= d.used_bytes <= d.total_bytes):
        bad.append(f"used {d.used_bytes} of {d.total_bytes}")
    if not (0 <= d.free_bytes and d.used_bytes + d.free_bytes <= d.total_bytes):
        bad.append(f"free {d.free_bytes} + used {d.used_bytes} > total {d.total_bytes}")
    if d.reserved_bytes is not None and not (0 <= d.reserved_bytes <= d.total_bytes):
        bad.append(f"reserved {d.reserved_bytes}")
    for name, lo, hi in (("utilization_percent", 0, 100), ("memory_utilization_percent", 0, 100),
                         ("temperature_c", -50, 150), ("power_w", 0, 10_000), ("power_limit_w", 0, 10_000),
                         ("sm_clock_mhz", 0, 100_000), ("memory_clock_mhz", 0, 100_000)):
        v = getattr(d, name)
        if v is not None and not (isinstance(v, (int, float)) and lo <= v <= hi):
            bad.append(f"{name} {v!r}")
    cc = d.compute_capability
    if cc is not None and not (isinstance(cc[0], int) and isinstance(cc[1], int) and 1 <= cc[0] <= 99
                               and 0 <= cc[1] <= 99):
        bad.append(f"compute capability {cc!r}")
    if d.pci_bus_id is not None and not _BUS_ID.match(d.pci_bus_id):
        bad.append(f"bus id {d.pci_bus_id!r}")
    if not (isinstance(d.name, str) and d.name.isprintable() and d.name and d.name != "None"):
        bad.append(f"name {d.name!r}")
    if d.uuid is not None and not (isinstance(d.uuid, str) and d.uuid.isprintable() and d.uuid):
        bad.append(f"uuid {d.uuid!r}")
    for p in d.processes:
        if not (isinstance(p.pid, int) and 0 < p.pid < 1 << 32):
            bad.append(f"pid {p.pid!r}")
        if p.used_bytes is not None and not (0 <= p.used_bytes <= (d.total_bytes or 1 << 50)):  # 0: unknown
            bad.append(f"process {p.pid} holds {p.used_bytes}")
    for entry in d.unavailable:
        if not (isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
            bad.append(f"unavailable entry {entry!r}")
    return bad


def expected_clean(g: FakeGpu) -> dict[str, Any]:
    """What a clean read of a FakeGpu gives (memory_v2 present)."""
    return {
        "name": g.name, "uuid": g.uuid, "total_bytes": g.total, "used_bytes": g.used,
        "free_bytes": g.total - g.used - g.reserved, "reserved_bytes": g.reserved,
        "utilization_percent": float(g.util[0]), "memory_utilization_percent": float(g.util[1]),
        "temperature_c": float(g.temperature), "power_w": g.power_mw / 1000.0,
        "power_limit_w": g.power_limit_mw / 1000.0,
        "sm_clock_mhz": g.clocks[0], "memory_clock_mhz": g.clocks[1], "compute_capability": g.cc,
        "pci_bus_id": g.bus_id, "lost": False, "unavailable": (),
        "pids": tuple(sorted({pid for pid, _ in g.compute} | {pid for pid, _ in g.graphics})),
    }


def observed(d: Any) -> dict[str, Any]:
    return {k: getattr(d, k) for k in (
        "name", "uuid", "total_bytes", "used_bytes", "free_bytes", "reserved_bytes", "utilization_percent",
        "memory_utilization_percent", "temperature_c", "power_w", "power_limit_w", "sm_clock_mhz",
        "memory_clock_mhz", "compute_capability", "pci_bus_id", "lost", "unavailable",
    )} | {"pids": tuple(p.pid for p in d.processes)}


class ManualClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Storm:
    kind: str
    detail: str
    start: int
    end: int  # first tick without the fault
    #: device index -> fields this storm may take away from it ("*" = any, "lost" = may be reported lost).
    reach: dict[int, frozenset[str]]
    lines: int = 0
    recovered_at: int | None = None
    log_examples: list[str] = field(default_factory=list)


@dataclass
class StormReport:
    ticks: int = 0
    storms: list[Storm] = field(default_factory=list)
    crashes: int = 0
    crash_examples: list[str] = field(default_factory=list)
    hidden_device_ticks: int = 0
    collateral_field_ticks: int = 0
    hidden_examples: list[str] = field(default_factory=list)
    implausible_ticks: int = 0
    implausible_examples: list[str] = field(default_factory=list)
    faulted_s: list[float] = field(default_factory=list)
    clean_s: list[float] = field(default_factory=list)
    log_lines: int = 0

    @property
    def unrecovered(self) -> list[Storm]:
        return [s for s in self.storms if s.recovered_at is None]

    def not_recovered_within(self, interval_ticks: float) -> list[Storm]:
        return [s for s in self.storms if s.recovered_at is None or s.recovered_at - s.end > interval_ticks]

    @property
    def max_lines_per_storm(self) -> int:
        return max((s.lines for s in self.storms), default=0)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class StormRun:
    """Ticks a backend over FakeNvml with one seeded fault storm after another; 1 tick = 1 s of fake clock."""

    KINDS = ("field error", "not supported", "driver loss", "odd value", "flapping", "device count", "gpu lost")

    def __init__(self, ticks: int = 1000, gpus: int = 4, seed: int = 7, retry_interval_s: float = 10.0,
                 backend_factory: Callable[..., Any] | None = None,
                 device_counts: tuple[int, ...] = (100_000, 65, 257, 1 << 31), isolate_storms: bool = False) -> None:
        self.ticks, self.seed, self.retry_interval_s = ticks, seed, retry_interval_s
        self.device_counts = device_counts
        #: A fresh backend for every storm: what one storm does, without what earlier storms left behind.
        self.isolate_storms = isolate_storms
        self.base = [
            FakeGpu(name=f"NVIDIA GeForce RTX 4090 #{i}", uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
                    used=(i + 1) * GiB, bus_id=f"00000000:{i + 1:02X}:00.0", compute=[(1000 + i, GiB)])
            for i in range(gpus)
        ]
        self.fake = FakeNvml([dataclasses.replace(g) for g in self.base])
        self.clock = ManualClock()
        self._factory = backend_factory
        self.backend = self._new_backend()
        self.rng = random.Random(seed)
        self._deck: list[str] = []
        self.expected = [expected_clean(g) for g in self.base]

    def _new_backend(self) -> Any:
        if self._factory is not None:
            return self._factory(self.fake, self.clock, self.retry_interval_s)
        from app.core.hardware.nvml import NvmlBackend
        from app.core.hardware.processes import ProcessNames

        names = ProcessNames(FakePsutil({1000 + i: f"worker{i}" for i in range(len(self.base))} | {4242: "leak"}))
        return NvmlBackend(self.fake, process_names=names, clock=self.clock, retry_interval_s=self.retry_interval_s)

    # --- one storm -------------------------------------------------------------------------------
    def _plan(self, start: int) -> tuple[Storm, Callable[[int], None]]:
        rng, fake, n = self.rng, self.fake, len(self.base)
        if not self._deck:  # every kind once per round, in a shuffled order
            self._deck = list(self.KINDS)
            rng.shuffle(self._deck)
        kind = self._deck.pop()
        end = start + rng.randint(3, 40)
        every = rng.random() < 0.3
        target = None if every else rng.randrange(n)
        targets = range(n) if every else [target]
        fn = rng.choice(list(FIELD_FUNCTIONS))
        if kind in ("field error", "flapping", "not supported"):
            if kind == "not supported":
                what: Any = pynvml.NVML_ERROR_NOT_SUPPORTED
            elif rng.random() < 0.2:
                what = rng.choice([RuntimeError("ctypes went wrong"), TypeError("bad struct"), OSError("EIO")])
            else:
                what = rng.choice(FIELD_ERRORS)
            reach = {i: FIELD_FUNCTIONS[fn] | {"memory_v2"} for i in targets}
            flap = rng.random() < 0.5
            detail = f"{fn} -> {what!r} on {'every GPU' if every else f'GPU {target}'}"

            def apply(t: int) -> None:
                on = t < end and (kind != "flapping" or (t % 2 == 0 if flap else rng.random() < 0.5))
                if on:
                    fake.device_faults[(fn, target)] = what
                else:
                    fake.device_faults.clear()
            return Storm(kind, detail, start, end, reach), apply
        if kind == "driver loss":
            code = rng.choice([pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_UNKNOWN,
                               pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH])
            half = start + (end - start) // 2
            detail = f"NOT_SUPPORTED from {fn} on every GPU, then the driver goes ({code}) and comes back"

            def apply(t: int) -> None:
                if t < half:
                    fake.device_faults[(fn, None)] = pynvml.NVML_ERROR_NOT_SUPPORTED
                elif t == half:
                    fake.device_faults.clear()
                    fake.initialized, fake.init_error = False, code
                elif t >= end:
                    fake.init_error = None
            return Storm(kind, detail, start, end, dict.fromkeys(range(n), frozenset({"*"}))), apply
        if kind == "odd value":
            name = rng.choice(list(ODD_VALUES))
            change, fields = ODD_VALUES[name]
            detail = f"{name} on {'every GPU' if every else f'GPU {target}'}"

            def apply(t: int) -> None:
                for i in targets:
                    fake.gpus[i] = change(self.base[i]) if t < end else dataclasses.replace(self.base[i])
            return Storm(kind, detail, start, end, dict.fromkeys(targets, fields)), apply
        if kind == "device count":
            count = rng.choice(self.device_counts)
            detail = f"nvmlDeviceGetCount answers {count}"

            def apply(t: int) -> None:
                fake.count_override = count if t < end else None
            return Storm(kind, detail, start, end, {}), apply
        # gpu lost
        gpu = rng.randrange(n)
        detail = f"GPU {gpu} falls off the bus"

        def apply(t: int) -> None:
            if t < end:
                fake.device_faults[("nvmlDeviceGetMemoryInfo_v2", gpu)] = pynvml.NVML_ERROR_GPU_IS_LOST
            else:
                fake.device_faults.clear()
        return Storm(kind, detail, start, end, {gpu: frozenset({"lost", "*"})}), apply

    # --- the run -----------------------------------------------------------------------------------
    def run(self) -> StormReport:
        report = StormReport(ticks=self.ticks)
        handler = _Records()
        logger = logging.getLogger("app.core.hardware")
        old_level, old_propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            self._run(report, handler)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
        return report

    def _run(self, report: StormReport, handler: _Records) -> None:
        storm: Storm | None = None
        apply: Callable[[int], None] | None = None
        next_start = 20
        for t in range(self.ticks):
            self.clock.t = 1000.0 + t
            if t == next_start and t + 40 + 30 < self.ticks:  # only storms that can end and heal in the run
                if self.isolate_storms:
                    self.backend.close()
                    self.backend = self._new_backend()
                    self.backend.read()
                storm, apply = self._plan(t)
                report.storms.append(storm)
                next_start = storm.end + self.rng.randint(30, 50)
            if apply is not None and storm is not None and t <= storm.end:
                apply(t)
            lines_before = len(handler.records)
            start = time.perf_counter()
            try:
                devices = self.backend.read()
                available = self.backend.status().available
            except Exception as err:  # noqa: BLE001 - counted, not raised
                elapsed = time.perf_counter() - start
                report.crashes += 1
                if len(report.crash_examples) < 5:
                    report.crash_examples.append(f"tick {t} ({storm.kind if storm else 'clean'}): {err!r}")
                devices, available = [], True  # every device hidden by an exception
            else:
                elapsed = time.perf_counter() - start
            new_lines = handler.records[lines_before:]
            if storm is not None:
                storm.lines += len(new_lines)
                storm.log_examples.extend(r.getMessage()[:160] for r in new_lines[:8 - len(storm.log_examples)])
            in_storm = storm is not None and t < storm.end
            (report.faulted_s if in_storm else report.clean_s if storm is None or storm.recovered_at is not None
             else []).append(elapsed)
            self._check(t, storm, in_storm, devices, available, report)
        report.log_lines = len(handler.records)

    def _check(self, t: int, storm: Storm | None, in_storm: bool, devices: list[Any], available: bool,
               report: StormReport) -> None:
        for d in devices:
            bad = implausible(d)
            if bad:
                report.implausible_ticks += 1
                if len(report.implausible_examples) < 5:
                    where = storm.detail if storm else "clean"
                    report.implausible_examples.append(f"tick {t} ({where}): GPU {d.index}: {bad}")
                break
        by_index = {d.index: d for d in devices if d.mig_parent is None}
        if not in_storm:
            clean = len(by_index) == len(self.base) and all(
                observed(by_index[i]) == self.expected[i] for i in range(len(self.base)))
            if storm is not None and storm.recovered_at is None and clean:
                storm.recovered_at = t
            if storm is None or storm.recovered_at is not None:
                return  # a clean tick: nothing more to check
        if not available:
            return  # the driver is gone: no device is expected
        reach = storm.reach if storm is not None else {}  # the storm's reach lasts until it has recovered
        hidden = collateral = False
        for i in range(len(self.base)):
            allowed = reach.get(i, frozenset())
            d = by_index.get(i)
            if d is None or (d.lost and "lost" not in allowed):
                hidden = True
                why = "missing" if d is None else "reported lost"
            elif "*" not in allowed and any(f not in allowed for f, _ in d.unavailable):
                collateral = True
                why = f"lost fields {d.unavailable}"
            elif not allowed and observed(d) != self.expected[i]:
                collateral = True
                why = "values changed"
            else:
                continue
            if len(report.hidden_examples) < 5:
                report.hidden_examples.append(f"tick {t} ({storm.detail if storm else 'clean'}): GPU {i} {why}")
        report.hidden_device_ticks += hidden
        report.collateral_field_ticks += collateral
