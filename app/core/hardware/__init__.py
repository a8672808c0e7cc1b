"""Hardware backends (NVML, amdsmi, psutil, simulated) and their immutable snapshots."""

from app.core.hardware.snapshot import (
    BackendStatus,
    GpuDevice,
    GpuProcess,
    HardwareProfile,
    HostMemory,
    to_dict,
)

__all__ = ["BackendStatus", "GpuDevice", "GpuProcess", "HardwareProfile", "HostMemory", "to_dict"]
