"""Re-quantization proposals: a lower level under sustained pressure, back up when memory is calm."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.core.manager.lifecycle import ModelState, Record
from app.core.memory_allocator import DeviceLedger, PressureLevel
from app.core.quantization_strategy import candidate_levels, estimate_model, quality_of
from app.core.units import format_gib

__all__ = ["QuantizationProposal", "Requantizer"]


@dataclass(frozen=True, slots=True)
class QuantizationProposal:
    """A suggestion to reload a model at another level (down under pressure, up when memory frees)."""

    model_id: str
    current: str
    proposed: str
    frees_bytes: int
    reason: str


class Requantizer:
    """Counts pressure readings per device; after ``after_ticks`` in a row, proposes one change.

    Pinned models are never proposed: pinned means pinned.
    """

    def __init__(self, after_ticks: int, priority: dict) -> None:
        self.after_ticks = after_ticks
        self._priority = priority
        self._pressure: dict[str, int] = {}
        self._calm: dict[str, int] = {}

    def proposals(self, ledgers: Iterable[DeviceLedger], records: Iterable[Record]) -> list[QuantizationProposal]:
        n = self.after_ticks
        out: list[QuantizationProposal] = []
        records = list(records)
        for ledger in ledgers:
            device = ledger.device
            if ledger.total_bytes <= 0:
                continue
            high = ledger.pressure.rank >= PressureLevel.HIGH.rank
            calm = ledger.pressure == PressureLevel.OK
            self._pressure[device] = self._pressure.get(device, 0) + 1 if high else 0
            self._calm[device] = self._calm.get(device, 0) + 1 if calm else 0
            here = [r for r in records if r.state == ModelState.LOADED and r.device == device and not r.pinned]
            rank = lambda r: self._priority.get(r.metadata.model_type, 0)  # noqa: E731
            if self._pressure[device] == n:
                out += [p for p in (self._step(r, down=True) for r in sorted(here, key=rank)) if p][:1]
            if self._calm[device] == n:
                out += [p for p in (self._step(r, down=False, room=ledger.available_bytes)
                                    for r in sorted(here, key=rank, reverse=True)) if p][:1]
        return out

    @staticmethod
    def _step(r: Record, *, down: bool, room: int = 0) -> QuantizationProposal | None:
        levels = list(candidate_levels(r.metadata))
        if r.level not in levels or r.placement is None:
            return None
        ctx = r.placement.context
        i = levels.index(r.level)
        current = estimate_model(r.metadata, r.level, context=ctx).total_bytes
        for lv in (levels[i + 1:] if down else list(reversed(levels[:i]))):
            size = estimate_model(r.metadata, lv, context=ctx).total_bytes
            if down and size < current:
                return QuantizationProposal(r.model_id, r.level, lv, current - size,
                                            f"{r.device} under sustained pressure: {lv} frees "
                                            f"{format_gib(current - size, 2)}")
            if not down and size - current <= room:
                if r.preferred and quality_of(lv)[0] < quality_of(r.preferred)[0]:
                    continue  # never above what the user asked for
                return QuantizationProposal(r.model_id, r.level, lv, current - size,
                                            f"memory is free on {r.device} again: back up to {lv}")
        return None
