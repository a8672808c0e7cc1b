"""The CLI's JSON documents (a stable interface: keys may be added, never change meaning)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.hardware.snapshot import GpuDevice, HardwareProfile

__all__ = ["GpuProcessRow", "gpu_processes", "status_document"]


@dataclass(frozen=True, slots=True)
class GpuProcessRow:
    """One process holding memory on one GPU, as ``modeldeck status`` and the dashboard list it.

    ``used_bytes`` is ``None`` when the driver does not say (WDDM, MIG); ``own`` marks ModelDeck's
    processes, and ``models`` the models ModelDeck runs in it on that device.
    """

    device: str
    gpu_index: int
    gpu_name: str
    pid: int
    name: str
    used_bytes: int | None
    kind: str
    own: bool = False
    models: tuple[str, ...] = ()


def gpu_processes(profile: HardwareProfile, *, own_pids: Iterable[int] = (),
                  models: Mapping[str, Sequence[str]] | None = None) -> tuple[GpuProcessRow, ...]:
    """Every process on every GPU of ``profile`` (lost GPUs have none), largest first per GPU.

    ``models``: device (``cuda:N``) -> names of the models ModelDeck holds there, shown on its own
    process's row. Reads the profile only: the driver was asked when it was sampled.
    """
    own = frozenset(own_pids)
    rows: list[GpuProcessRow] = []
    for gpu in profile.gpus:
        rows += sorted(_rows_of(gpu, own, models or {}), key=lambda r: -(r.used_bytes or 0))
    return tuple(rows)


def _rows_of(gpu: GpuDevice, own: frozenset[int], models: Mapping[str, Sequence[str]]) -> list[GpuProcessRow]:
    return [GpuProcessRow(gpu.device_id, gpu.index, gpu.name, p.pid, p.name, p.used_bytes, p.kind, p.pid in own,
                          tuple(models.get(gpu.device_id, ())) if p.pid in own else ())
            for p in gpu.processes]


def _gpu_document(gpu: GpuDevice) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "name": gpu.name,
        "kind": gpu.kind,
        "device_id": gpu.device_id,
        "uuid": gpu.uuid,
        "pci_bus_id": gpu.pci_bus_id,
        "total_bytes": gpu.total_bytes,
        "used_bytes": gpu.used_bytes,
        "free_bytes": gpu.free_bytes,
        "reserved_bytes": gpu.reserved_bytes,
        "utilization_percent": gpu.utilization_percent,
        "memory_utilization_percent": gpu.memory_utilization_percent,
        "temperature_c": gpu.temperature_c,
        "power_w": gpu.power_w,
        "power_limit_w": gpu.power_limit_w,
        "sm_clock_mhz": gpu.sm_clock_mhz,
        "memory_clock_mhz": gpu.memory_clock_mhz,
        "compute_capability": list(gpu.compute_capability) if gpu.compute_capability else None,
        "lost": gpu.lost,
        "mig_parent": gpu.mig_parent,
        "processes": [
            {
                "pid": p.pid,
                "name": p.name,
                # The contract wants an int; `used_known` says whether the driver told us.
                "used_bytes": p.used_bytes if p.used_bytes is not None else 0,
                "used_known": p.used_bytes is not None,
                "kind": p.kind,
            }
            for p in _rows_of(gpu, frozenset(), {})
        ],
        "unavailable": {name: reason for name, reason in gpu.unavailable},
    }


def status_document(profile: HardwareProfile, models: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """``modeldeck status --json``."""
    host = profile.host
    return {
        "timestamp": profile.timestamp,
        "devices": [_gpu_document(g) for g in profile.gpus],
        "ram": {
            "total_bytes": host.total_bytes,
            "available_bytes": host.available_bytes,
            "used_bytes": host.used_bytes,
            "swap_total_bytes": host.swap_total_bytes,
            "swap_used_bytes": host.swap_used_bytes,
            "process_rss_bytes": host.process_rss_bytes,
            "unified_memory": host.unified_memory,
            "unified_gpu_name": host.unified_gpu_name,
        },
        "cpu": {"physical": host.cpu_count, "logical": host.logical_cpu_count,
                "platform": host.platform, "machine": host.machine},
        "backends": [
            {"name": b.name, "available": b.available, "reason": b.reason,
             "driver_version": b.driver_version, "runtime_version": b.runtime_version}
            for b in profile.backends
        ],
        "models": [dict(m) for m in models],
    }
