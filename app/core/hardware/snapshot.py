"""Immutable hardware snapshots. Bytes are ints; anything a backend cannot tell is ``None``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from app.core.units import gib

GpuKind = Literal["nvidia", "amd", "simulated"]

#: Process names used when psutil cannot tell.
UNKNOWN_PROCESS = "unknown"
ACCESS_DENIED_PROCESS = "unknown (access denied)"
EXITED_PROCESS = "exited"


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process holding memory on a GPU."""

    pid: int
    name: str
    #: Bytes this process holds on the device; ``None`` when the driver does not say (WDDM, MIG).
    used_bytes: int | None
    #: "compute", "graphics" or "compute+graphics".
    kind: str = "compute"


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU (or MIG instance) at one moment."""

    index: int
    name: str
    kind: GpuKind
    total_bytes: int
    used_bytes: int
    free_bytes: int
    uuid: str | None = None
    pci_bus_id: str | None = None
    #: Memory the driver keeps for itself (NVML memory_v2); not usable by anyone.
    reserved_bytes: int | None = None
    utilization_percent: float | None = None
    memory_utilization_percent: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    compute_capability: tuple[int, int] | None = None
    processes: tuple[GpuProcess, ...] = ()
    #: Set when the GPU fell off the bus or stopped answering; memory figures are then 0.
    #: (Construction guarantees 0 <= used <= total and 0 <= free <= total - used: figures a backend
    #: read outside that are clamped, and "memory" is marked unavailable with a reason.)
    lost: bool = False
    #: For a MIG instance, the index of its parent GPU in the same profile.
    mig_parent: int | None = None
    #: Fields the backend could not read, each with the reason: ``(("power_w", "not supported"),)``.
    unavailable: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # The allocator's guarantee, whatever a backend read: 0 <= used <= total, 0 <= free <= total - used.
        total, used, free = self.total_bytes, self.used_bytes, self.free_bytes
        if total >= 0 and 0 <= used <= total and 0 <= free <= total - used:
            return
        total = max(0, total)
        used = min(max(0, used), total)
        free = min(max(0, free), total - used)
        object.__setattr__(self, "total_bytes", total)
        object.__setattr__(self, "used_bytes", used)
        object.__setattr__(self, "free_bytes", free)
        if self.reason_unavailable("memory") is None:
            object.__setattr__(self, "unavailable", (*self.unavailable, ("memory", "implausible figures clamped")))

    @property
    def device_id(self) -> str:
        """The id used by loaders and the allocator: ``cuda:N`` (ROCm builds of torch use it too)."""
        return f"cuda:{self.index}"

    def reason_unavailable(self, field_name: str) -> str | None:
        for name, reason in self.unavailable:
            if name == field_name:
                return reason
        return None


@dataclass(frozen=True, slots=True)
class HostMemory:
    """System memory and CPU facts from psutil."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    swap_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    process_rss_bytes: int | None = None
    cpu_count: int = 1
    logical_cpu_count: int = 1
    platform: str = ""
    machine: str = ""
    #: True where CPU and GPU share one memory pool (Apple silicon): RAM *is* the GPU memory.
    unified_memory: bool = False
    #: The unified-memory GPU's name where known ("Apple M2 Pro").
    unified_gpu_name: str | None = None
    unavailable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """Whether a backend is in use, and if not, why."""

    name: str
    available: bool
    reason: str | None = None
    driver_version: str | None = None
    #: CUDA (NVML) or ROCm (amdsmi) version the driver supports.
    runtime_version: str | None = None


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """Everything the profiler saw at one moment.

    The seed's fields (``total_vram_gb`` … ``platform``) are derived properties so seed code runs.
    Those describe the *primary* GPU, the first one that is not lost, as the seed's did (it loaded
    on ``cuda:0``); multi-GPU code should read ``gpus``.
    """

    timestamp: float
    gpus: tuple[GpuDevice, ...]
    host: HostMemory
    backends: tuple[BackendStatus, ...] = field(default=())

    @property
    def primary_gpu(self) -> GpuDevice | None:
        return next((g for g in self.gpus if not g.lost and g.mig_parent is None), None)

    # --- the seed's HardwareProfile fields -------------------------------------------------
    @property
    def total_vram_gb(self) -> float:
        gpu = self.primary_gpu
        return gib(gpu.total_bytes) if gpu else 0.0

    @property
    def available_vram_gb(self) -> float:
        gpu = self.primary_gpu
        return gib(gpu.free_bytes) if gpu else 0.0

    @property
    def total_ram_gb(self) -> float:
        return gib(self.host.total_bytes)

    @property
    def available_ram_gb(self) -> float:
        return gib(self.host.available_bytes)

    @property
    def cuda_available(self) -> bool:
        """True when a CUDA-capable GPU answers (simulated GPUs stand in for NVIDIA cards)."""
        return any(g.kind in ("nvidia", "simulated") and not g.lost for g in self.gpus)

    @property
    def cuda_compute_capability(self) -> tuple[int, int] | None:
        gpu = self.primary_gpu
        return gpu.compute_capability if gpu else None

    @property
    def device_name(self) -> str | None:
        gpu = self.primary_gpu
        if gpu is not None:
            return gpu.name
        return self.host.unified_gpu_name

    @property
    def cpu_count(self) -> int:
        return self.host.cpu_count

    @property
    def platform(self) -> str:
        return self.host.platform

    def backend(self, name: str) -> BackendStatus | None:
        return next((b for b in self.backends if b.name == name), None)


def to_dict(obj: Any) -> Any:
    """A snapshot as plain JSON-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
