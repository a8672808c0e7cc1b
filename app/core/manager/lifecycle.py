"""A model's lifecycle: its states, the transitions allowed between them, and what views see.

Transitional states (LOADING, UNLOADING, OFFLOADING, RESTORING, MOVING) hold their bookings while
the loader works outside the manager's lock; each ends in a state whose booking matches what the
loader reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.core.manager.placement import Placement
from app.core.model_spec import ModelMetadata, ModelType

__all__ = ["ModelState", "TRANSITIONS", "InvalidTransitionError", "LoadedModel", "Record", "TRANSITIONAL"]


class ModelState(str, Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    BUSY = "busy"
    OFFLOADING = "offloading"
    OFFLOADED = "offloaded"
    RESTORING = "restoring"
    MOVING = "moving"
    UNLOADING = "unloading"
    FAILED = "failed"


S = ModelState
TRANSITIONS: dict[ModelState, frozenset[ModelState]] = {
    S.UNLOADED: frozenset({S.LOADING}),
    S.LOADING: frozenset({S.LOADED, S.FAILED}),
    S.LOADED: frozenset({S.BUSY, S.OFFLOADING, S.UNLOADING, S.MOVING}),
    S.BUSY: frozenset({S.LOADED}),
    S.OFFLOADING: frozenset({S.OFFLOADED, S.LOADED}),
    S.OFFLOADED: frozenset({S.RESTORING, S.UNLOADING}),
    S.RESTORING: frozenset({S.LOADED, S.OFFLOADED}),
    S.MOVING: frozenset({S.LOADED, S.OFFLOADED, S.FAILED}),
    S.UNLOADING: frozenset({S.UNLOADED, S.FAILED}),
    S.FAILED: frozenset({S.LOADING, S.UNLOADING, S.UNLOADED}),
}
TRANSITIONAL = frozenset({S.LOADING, S.UNLOADING, S.OFFLOADING, S.RESTORING, S.MOVING})


class InvalidTransitionError(RuntimeError):
    """A lifecycle change the state machine does not allow (say, offloading a model that is loading)."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model the manager holds, as views and scripts see it."""

    model_id: str
    name: str
    model_type: ModelType
    state: ModelState
    device: str
    quantization: str
    #: What the model holds alone (runtime contexts are per device, shared: see ``bookings``).
    reserved_bytes: int
    gpu_layers: int | None
    pinned: bool
    keep_alive_s: float
    #: Monotonic time when it expires if still idle; None when it never does.
    expires_at: float | None
    last_used: float
    reason: str | None = None
    placement: Placement | None = None
    #: What the runtime reported it allocated, (device, category, bytes); empty while not known.
    measured: tuple[tuple[str, str, int], ...] = ()

    @property
    def measured_bytes(self) -> dict[str, int] | None:
        """Bytes the runtime allocated per device (None when the loader does not measure)."""
        if not self.measured:
            return None
        out: dict[str, int] = {}
        for device, _, nbytes in self.measured:
            out[device] = out.get(device, 0) + nbytes
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "name": self.name, "model_type": self.model_type.value,
                "state": self.state.value, "device": self.device, "quantization": self.quantization,
                "reserved_bytes": self.reserved_bytes, "gpu_layers": self.gpu_layers, "pinned": self.pinned,
                "keep_alive_s": self.keep_alive_s, "reason": self.reason,
                "measured_bytes": self.measured_bytes}


@dataclass
class Record:
    """The manager's own, mutable record of one model (only touched under the manager's lock)."""

    metadata: ModelMetadata
    state: ModelState = ModelState.UNLOADED
    placement: Placement | None = None
    #: The level the user asked for, if any (re-quantization never goes above it).
    preferred: str | None = None
    handle: Any = None
    pinned: bool = False
    keep_alive_s: float = 300.0
    last_used: float = 0.0
    busy: int = 0
    reason: str | None = None
    #: Where the model is now: the placement's devices, or "cpu" once offloaded.
    device: str = ""
    #: What the runtime reported it allocated: (device, category, bytes).
    measured: tuple[tuple[str, str, int], ...] = ()

    @property
    def model_id(self) -> str:
        return self.metadata.id

    @property
    def level(self) -> str:
        return self.placement.level if self.placement else ""

    def set_state(self, new: ModelState, reason: str | None = None) -> tuple[str, ModelState, ModelState]:
        """Move to ``new`` (raises :class:`InvalidTransitionError`); returns the event to emit."""
        old = self.state
        if new not in TRANSITIONS[old]:
            raise InvalidTransitionError(f"{self.model_id} cannot go from {old.value} to {new.value}")
        self.state = new
        if reason is not None or new != ModelState.FAILED:
            self.reason = reason
        return (self.model_id, old, new)
