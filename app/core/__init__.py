"""ModelDeck's GUI-free core. Never imports Qt: a host daemon can use it without a display.

Names resolve lazily so ``import app.core`` stays cheap for scripts and hosts.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "HardwareProfiler": "app.core.hardware_profiler",
    "HardwareProfile": "app.core.hardware.snapshot",
    "GpuDevice": "app.core.hardware.snapshot",
    "GpuProcess": "app.core.hardware.snapshot",
    "HostMemory": "app.core.hardware.snapshot",
    "BackendStatus": "app.core.hardware.snapshot",
    "Sampler": "app.core.sampler",
    "RingBuffer": "app.core.sampler",
    "Signal": "app.core.events",
    "ModelResourceManager": "app.core.model_resource_manager",
    "ModelState": "app.core.model_resource_manager",
    "ReservationLoader": "app.core.model_resource_manager",
    "SimulatedLoader": "app.core.model_resource_manager",
    "Decision": "app.core.model_resource_manager",
    "Placement": "app.core.model_resource_manager",
    "Refusal": "app.core.model_resource_manager",
    "PlacementRefused": "app.core.model_resource_manager",
    "PinnedModelError": "app.core.model_resource_manager",
    "MemoryAllocator": "app.core.memory_allocator",
    "ModelRegistry": "app.core.model_registry",
    "ModelMetadata": "app.core.model_registry",
    "QuantizationStrategy": "app.core.quantization_strategy",
    "QuantizationLevel": "app.core.quantization_strategy",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    # `X as X` marks each name as re-exported (the lazy __getattr__ below is what runs).
    from app.core.events import Signal as Signal
    from app.core.hardware.snapshot import BackendStatus as BackendStatus
    from app.core.hardware.snapshot import GpuDevice as GpuDevice
    from app.core.hardware.snapshot import GpuProcess as GpuProcess
    from app.core.hardware.snapshot import HardwareProfile as HardwareProfile
    from app.core.hardware.snapshot import HostMemory as HostMemory
    from app.core.hardware_profiler import HardwareProfiler as HardwareProfiler
    from app.core.memory_allocator import MemoryAllocator as MemoryAllocator
    from app.core.model_registry import ModelMetadata as ModelMetadata
    from app.core.model_registry import ModelRegistry as ModelRegistry
    from app.core.model_resource_manager import Decision as Decision
    from app.core.model_resource_manager import ModelResourceManager as ModelResourceManager
    from app.core.model_resource_manager import ModelState as ModelState
    from app.core.model_resource_manager import PinnedModelError as PinnedModelError
    from app.core.model_resource_manager import Placement as Placement
    from app.core.model_resource_manager import PlacementRefused as PlacementRefused
    from app.core.model_resource_manager import Refusal as Refusal
    from app.core.model_resource_manager import ReservationLoader as ReservationLoader
    from app.core.model_resource_manager import SimulatedLoader as SimulatedLoader
    from app.core.quantization_strategy import QuantizationLevel as QuantizationLevel
    from app.core.quantization_strategy import QuantizationStrategy as QuantizationStrategy
    from app.core.sampler import RingBuffer as RingBuffer
    from app.core.sampler import Sampler as Sampler


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app.core' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
