"""The manager's policy knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.memory_allocator import AllocatorSettings, SafetyMargins
from app.core.model_spec import ModelType

__all__ = ["ManagerSettings", "DEFAULT_PRIORITY"]

DEFAULT_PRIORITY = {
    ModelType.LLM: 50,
    ModelType.TEXT_TO_IMAGE: 40,
    ModelType.TEXT_TO_VIDEO: 40,
    ModelType.SPEECH_TO_TEXT: 30,
    ModelType.TEXT_TO_SPEECH: 30,
    ModelType.EMBEDDING: 20,
}


@dataclass(frozen=True)
class ManagerSettings:
    """Policy knobs. ``keep_alive_s``: 0 unloads as soon as a model is idle, -1 never expires.

    ``auto_swap`` is the default of ``make_room`` for loads: offload or unload idle, unpinned
    models (and move them between GPUs) when a load does not fit otherwise.
    """

    keep_alive_s: float = 300.0
    max_loaded_models: int | None = None
    auto_swap: bool = True
    #: Higher stays loaded longer; evicted lowest first.
    type_priority: dict[ModelType, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITY))
    #: Models loaded by ``start()``: ids, or (id, level) pairs.
    preload: tuple[str | tuple[str, str], ...] = ()
    #: Consecutive pressure readings before a lower level is proposed (and back up).
    requantize_after_ticks: int = 5
    #: Apply proposals (reload at the new level) instead of only announcing them.
    auto_requantize: bool = False
    #: Without a chosen level, levels at or under this perplexity increase are tried first.
    quality_floor_ppl: float = 0.3
    allocator: AllocatorSettings = field(default_factory=AllocatorSettings)

    @property
    def margins(self) -> SafetyMargins:
        return self.allocator.margins
