"""The manager's errors: each says what was needed, what was available, and what to do."""

from __future__ import annotations

from app.core.manager.placement import Refusal
from app.core.memory_allocator import AllocationError
from app.core.quantization_strategy import PlacementError

__all__ = ["UnknownModelError", "InsufficientMemoryError", "PlacementRefused", "LoaderError", "PinnedModelError"]


class UnknownModelError(KeyError):
    """A model id the registry does not know (or a model the manager does not hold)."""

    def __str__(self) -> str:  # KeyError quotes its argument; this is a sentence
        return str(self.args[0])


class InsufficientMemoryError(AllocationError):
    """A load that does not fit even after the eviction policy did what it may."""

    def __init__(self, model_id: str, device: str, needed_bytes: int, available_bytes: int, why: str) -> None:
        super().__init__(model_id, device, needed_bytes, available_bytes)
        self.why = why
        self.args = (f"{self.args[0]} ({why})",)


class PlacementRefused(InsufficientMemoryError, PlacementError):
    """The planner's refusal, raised: ``.refusal`` has the numbers and the options that would work."""

    def __init__(self, refusal: Refusal) -> None:  # noqa: D107 - both parents' fields, one message
        Exception.__init__(self, refusal.message())
        self.refusal = refusal
        self.model_id = refusal.model_id
        self.device = refusal.device or "any"
        self.needed_bytes = refusal.needed_bytes
        self.available_bytes = refusal.available_bytes
        self.why = refusal.reason
        self.level = refusal.level or ""

    def __str__(self) -> str:
        return str(self.args[0])


class LoaderError(RuntimeError):
    """The host's loader failed; the model's state and booking say what it still holds."""


class PinnedModelError(RuntimeError):
    """A pinned model was asked to unload, offload or move: unpin it first."""
