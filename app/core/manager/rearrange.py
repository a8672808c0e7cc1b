"""The planner's steps that touch other models: make room on a GPU, or move one model to another GPU.

Each is a function of the planner's state (:class:`app.core.manager.planner._Planner`); neither
changes anything: they return a Decision whose actions say what would be offloaded, unloaded or
moved, and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from app.core.manager.eviction import choose_victims, eviction_order
from app.core.manager.placement import Action, Decision, DeviceRoom, Holding
from app.core.units import format_gib

if TYPE_CHECKING:
    from app.core.manager.planner import _Planner

__all__ = ["make_room", "move"]


def _short_rooms(p: _Planner, level: str) -> Iterator[tuple[DeviceRoom, int, int]]:
    """The GPUs that could run ``level`` but lack room now: (room, bytes needed, bytes short)."""
    est = p.est(level)
    for room in p.gpus:
        need = p.adds(est, room)
        short = need - room.available_bytes
        if p.level_ok(level, room) and short > 0:
            yield room, need, short


def make_room(p: _Planner) -> Decision | None:
    """Offload (to RAM) or unload idle, unpinned models on one GPU, as few as policy order allows."""
    if not p.req.make_room:
        return None
    for lv in p.good:
        best: tuple[int, Decision] | None = None
        for room, need, short in _short_rooms(p, lv):
            victims = choose_victims(eviction_order(p.ledger.holdings, device=room.device,
                                                    exclude=p.meta.id), room.device, short)
            if not victims:
                continue
            why = (f"to make room for {p.meta.name} at {lv} on {room.device} (needs {format_gib(need, 2)}, "
                   f"{format_gib(room.available_bytes, 2)} bookable)")
            actions = evictions(p, victims, room.device, why)
            disturbed = sum(v.total_bytes for v in victims)
            placement = p.whole(lv, room, f"{lv} fits on {room.device} once "
                                   + ", ".join(f"{a.name} is {a.kind}ed" for a in actions))
            if best is None or disturbed < best[0]:
                best = (disturbed, Decision(placement, actions))
        if best is not None:
            return best[1]
    return None


def evictions(p: _Planner, victims: list[Holding], device: str, why: str) -> tuple[Action, ...]:
    ram = p.cpu.available_bytes
    out = []
    for v in victims:
        idle = max(0.0, p.ledger.now - v.last_used)
        detail = f"{v.model_type.value}, priority {v.priority}, idle {idle:.0f} s"
        if v.weights_bytes <= ram and device != "cpu":
            ram -= v.weights_bytes
            out.append(Action("offload", v.model_id, v.name, device, "cpu", v.bytes_on(device),
                              f"offloaded to RAM {why}; chosen as the least valuable ({detail})"))
        else:
            out.append(Action("unload", v.model_id, v.name, device, None, v.bytes_on(device),
                              f"unloaded {why} (no room in RAM to offload it); chosen as the least valuable "
                              f"({detail})"))
    return tuple(out)


def move(p: _Planner) -> Decision | None:
    """Move one idle model whole to another GPU where it fits, if that makes room."""
    if not p.req.make_room or len(p.all_gpus) < 2:
        return None
    for lv in p.good:
        best: tuple[int, Decision] | None = None
        for room, need, short in _short_rooms(p, lv):
            for h in eviction_order(p.ledger.holdings, device=room.device, exclude=p.meta.id):
                held = h.placement
                if held is None or held.kind != "gpu" or h.bytes_on(room.device) < short:
                    continue
                for dest in p.all_gpus:
                    if dest.device == room.device or not p.level_ok(held.level, dest):
                        continue
                    if h.compute_capability_min and (dest.compute_capability or (0, 0)) < h.compute_capability_min:
                        continue
                    s = held.shares[0]
                    if s.adds_to(dest) > dest.available_bytes:
                        continue
                    if best is None or h.total_bytes < best[0]:
                        why = (f"to make room for {p.meta.name} at {lv} on {room.device} "
                               f"(needs {format_gib(need, 2)}, {format_gib(room.available_bytes, 2)} bookable); "
                               f"{dest.device} has room for it")
                        action = Action("move", h.model_id, h.name, room.device, dest.device,
                                        h.bytes_on(room.device), f"moved {why}")
                        placement = p.whole(lv, room, f"{lv} fits on {room.device} once {h.name} moves to "
                                               f"{dest.device}")
                        best = (h.total_bytes, Decision(placement, (action,)))
        if best is not None:
            return best[1]
    return None
