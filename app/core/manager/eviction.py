"""Who may make room for another model, in what order, and how few will do.

Only loaded, idle, unpinned models are candidates. Least valuable first: the lowest type priority,
then the least recently used, then the largest (one big model rather than several small ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from app.core.manager.placement import Holding

__all__ = ["eviction_order", "choose_victims"]


def eviction_order(holdings: Iterable[Holding], *, device: str | None = None,
                   exclude: str | None = None) -> list[Holding]:
    """Evictable holdings (on ``device`` when given), least valuable first."""
    candidates = [h for h in holdings
                  if h.movable and not h.pinned and h.model_id != exclude
                  and (device is None or h.bytes_on(device) > 0)]
    return sorted(candidates, key=lambda h: (h.priority, h.last_used, -h.total_bytes))


def choose_victims(order: Sequence[Holding], device: str, shortfall: int) -> list[Holding]:
    """The fewest holdings, in policy order, whose bytes on ``device`` cover ``shortfall``; [] if none do."""
    chosen: list[Holding] = []
    total = 0
    for h in order:
        if total >= shortfall:
            break
        chosen.append(h)
        total += h.bytes_on(device)
    if total < shortfall:
        return []
    # Only as much as needed: drop the most valuable ones the others already cover.
    for h in reversed(list(chosen)):
        if total - h.bytes_on(device) >= shortfall:
            chosen.remove(h)
            total -= h.bytes_on(device)
    return chosen
