"""The typed faces of the core objects the views take (structural Protocols, the napari way).

A view is handed a sampler, a registry and (optionally) a manager; it renders what they push to it
and asks them questions. It never reaches past these methods into the allocator, and never
repeats a rule the core owns (pressure thresholds, which actions a state allows, placements):
those are answers it asks for. Any object with these methods fits: ``Sampler``,
``ModelRegistry`` and ``ModelResourceManager`` do, and so does a host's own facade.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from app.core.events import Signal as CoreSignal
from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.booking_history import BookingInterval
from app.core.manager.lifecycle import LoadedModel, ModelState
from app.core.manager.placement import Decision, Refusal
from app.core.manager.queries import Booking
from app.core.manager.settings import ManagerSettings
from app.core.memory_allocator import DeviceLedger, PressureLevel
from app.core.model_registry import ModelMetadata
from app.core.runtime_profile import RuntimeProfile

__all__ = ["SamplerPort", "RegistryPort", "ManagedRegistry", "ManagerPort", "runtime_profile_of"]


@runtime_checkable
class SamplerPort(Protocol):
    """Hardware samples: the newest profile, its histories, and an event per sample."""

    sampled: CoreSignal[Callable[[HardwareProfile], None]]

    @property
    def latest(self) -> HardwareProfile | None: ...

    @property
    def interval_s(self) -> float: ...

    def window(self, key: str | None, metric: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class RegistryPort(Protocol):
    """The model catalog and the user's own models."""

    registry_changed: CoreSignal[Callable[[], None]]

    def get_model(self, model_id: str) -> ModelMetadata | None: ...

    def list_models(self, *args: Any, **kwargs: Any) -> list[ModelMetadata]: ...

    def search(self, query: str, limit: int = 20) -> list[ModelMetadata]: ...

    def register_model(self, metadata: ModelMetadata, *, persist: bool = True) -> ModelMetadata: ...

    def remove_model(self, model_id: str) -> None: ...


class ManagedRegistry(RegistryPort, Protocol):
    """A registry the Models tab can add to, edit and scan into (``ModelRegistry`` is one)."""

    def register_model(self, metadata: ModelMetadata, *, persist: bool = True,
                       override: bool = False) -> ModelMetadata: ...

    def update_model(self, model_id: str, /, *, override: bool = False, **changes: Any) -> ModelMetadata: ...

    def register_scanned(self, scanned: Any, *, persist: bool = True) -> ModelMetadata: ...

    def is_override(self, model_id: str) -> bool: ...

    def builtin(self, model_id: str) -> ModelMetadata | None: ...


@runtime_checkable
class ManagerPort(Protocol):
    """The resource manager's query API and the actions a view may ask for."""

    model_state_changed: CoreSignal[Any]
    allocation_changed: CoreSignal[Any]
    pressure_changed: CoreSignal[Any]
    evicted: CoreSignal[Any]
    plan_ready: CoreSignal[Any]
    quantization_proposed: CoreSignal[Any]

    settings: ManagerSettings
    #: The runtime settings the host's runtimes use (``RuntimeProfile(vae_tiling=True)``, say), applied to
    #: every request that names none. A port without it counts as None: read it with ``runtime_profile_of``.
    runtime_profile: RuntimeProfile | None

    @property
    def clock(self) -> Callable[[], float]: ...

    # --- questions ---
    def devices(self) -> list[str]: ...

    def ledgers(self) -> tuple[DeviceLedger, ...]: ...

    def bookings(self, device: str) -> tuple[Booking, ...]: ...

    def loaded_models(self) -> tuple[LoadedModel, ...]: ...

    def state_of(self, model_id: str) -> ModelState: ...

    def allowed_actions(self, model_id: str) -> frozenset[str]: ...

    def pressure(self, device: str) -> PressureLevel: ...

    def safety_margin(self, device: str) -> int: ...

    def booking_history(self, device: str, since: float | None = None) -> tuple[BookingInterval, ...]: ...

    def observe(self, profile: HardwareProfile) -> None: ...

    def decide(self, request: Any) -> Decision | Refusal: ...

    # --- actions ---
    def load(self, model_id: str, level: Any = None, device: str | None = None, **kwargs: Any) -> LoadedModel: ...

    async def aload(self, model_id: str, level: Any = None, device: str | None = None,
                    **kwargs: Any) -> LoadedModel: ...

    def unload(self, model_id: str, *, reason: str = ...) -> None: ...

    def offload(self, model_id: str, *, reason: str = ...) -> LoadedModel: ...

    def restore(self, model_id: str, *, make_room: bool | None = None) -> LoadedModel: ...

    def pin(self, model_id: str, pinned: bool = True) -> None: ...

    def cancel_load(self, model_id: str) -> None: ...

    def update_settings(self, settings: ManagerSettings) -> None: ...

    def free_memory(self, model_ids: Iterable[str], *, offload: bool = False) -> list[tuple[str, str]]: ...


def runtime_profile_of(manager: Any) -> RuntimeProfile | None:
    """The runtime settings ``manager`` says its runtimes use; None for no manager, or a port without them."""
    profile = getattr(manager, "runtime_profile", None)
    return profile if isinstance(profile, RuntimeProfile) else None
