"""The CLI's JSON documents (a stable interface: keys may be added, never change meaning)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.core.hardware.snapshot import GpuDevice, HardwareProfile


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
            for p in gpu.processes
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
