"""Ensembles: several models placed together, their levels chosen jointly, packed across the GPUs.

Each model's levels are reduced to a Pareto front of (bytes, quality loss); fronts are combined
(keeping only combinations no other beats on both), and the combinations are tried best quality
first until one packs onto the devices — best fit, largest model first, each GPU paying one
runtime context. Exact on the fronts, and bounded.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.core.estimation import MemoryEstimate
from app.core.manager.placement import Decision, DeviceRoom, LedgerView, Placement, PlacementRequest, Policy
from app.core.manager.planner import decide
from app.core.model_spec import ModelMetadata, ModelType
from app.core.quantization_strategy import candidate_levels, estimate_model, quality_of
from app.core.units import format_gib

__all__ = ["EnsembleItem", "EnsemblePlan", "plan_ensemble", "pareto"]

#: Combinations tried for packing before giving up (the front is sorted best quality first).
MAX_PACKINGS = 400


@dataclass(frozen=True, slots=True)
class EnsembleItem:
    model_id: str
    quantization: str
    device: str
    estimate: MemoryEstimate
    quality_ppl: float
    placement: Placement | None = None


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    """Levels and devices chosen together so every model fits at the best total quality, or why not."""

    feasible: bool
    items: tuple[EnsembleItem, ...]
    total_bytes: int
    available_bytes: dict[str, int]
    reason: str


Option = tuple[int, float, tuple[tuple[str, MemoryEstimate], ...]]


def pareto(options: list[Option]) -> list[Option]:
    """Keep the (bytes, loss, …) options no other option beats on both."""
    out = []
    best_loss = float("inf")
    for opt in sorted(options, key=lambda o: (o[0], o[1])):
        if opt[1] < best_loss:
            out.append(opt)
            best_loss = opt[1]
    return out


def _own(est: MemoryEstimate) -> int:
    return est.weights_bytes + est.kv_cache_bytes + est.compute_bytes


def _pack(chosen: Sequence[tuple[int, str, MemoryEstimate]], rooms: Sequence[DeviceRoom]) -> dict[int, str] | None:
    """Model index → device, best fit with the largest first; None when they do not all fit."""
    left = {r.device: r.available_bytes for r in rooms}
    context = {r.device: r.runtime_bytes for r in rooms}
    out: dict[int, str] = {}
    for i, _, est in sorted(chosen, key=lambda c: -(_own(c[2]) + c[2].overhead_bytes)):
        best: tuple[int, str] | None = None
        for r in rooms:
            need = _own(est) + max(0, est.overhead_bytes - context[r.device])
            if need <= left[r.device] and (best is None or left[r.device] - need < best[0]):
                best = (left[r.device] - need, r.device)
        if best is None:
            return None
        device = best[1]
        left[device] -= _own(est) + max(0, est.overhead_bytes - context[device])
        context[device] = max(context[device], est.overhead_bytes)
        out[i] = device
    return out


def _confirm(models: Sequence[tuple[ModelMetadata, int | None]], chosen: Sequence[tuple[int, str, MemoryEstimate]],
             packed: dict[int, str], rooms: Sequence[DeviceRoom], policy: Policy) -> list[EnsembleItem] | None:
    """Each model's placement from the planner itself, on the rooms the ones before it left (None if
    it disagrees with the packing: that combination is skipped)."""
    left = {r.device: r for r in rooms}
    by_index: dict[int, EnsembleItem] = {}
    for i, level, _est in sorted(chosen, key=lambda c: -(_own(c[2]) + c[2].overhead_bytes)):
        meta, ctx = models[i]
        request = PlacementRequest(meta, level, packed[i], ctx, make_room=False, allow_cpu=packed[i] == "cpu")
        answer = decide(request, LedgerView(tuple(left.values()), ()), policy)
        if not isinstance(answer, Decision) or answer.placement.kind not in ("gpu", "cpu"):
            return None
        share = answer.placement.shares[0]
        room = left[share.device]
        adds = share.adds_to(room)
        left[share.device] = room._replace(available_bytes=room.available_bytes - adds,
                                           runtime_bytes=max(room.runtime_bytes, share.runtime_bytes))
        placement = dataclasses.replace(answer.placement, reason=f"{level} on {share.device}, chosen with the "
                                        f"rest of the ensemble: {answer.placement.reason}")
        by_index[i] = EnsembleItem(meta.id, level, share.device, answer.placement.estimate, quality_of(level)[0],
                                   placement)
    return [by_index[i] for i in range(len(models))]


def plan_ensemble(models: Sequence[tuple[ModelMetadata, int | None]], rooms: Sequence[DeviceRoom],
                  priority: Mapping[ModelType, int], policy: Policy | None = None) -> EnsemblePlan:
    """Choose every model's level and device together (``rooms``: the devices to pack onto). Each
    item's placement is the planner's own answer for that level and device."""
    policy = policy or Policy(priority)
    kind = "cpu" if all(not r.is_gpu for r in rooms) else "gpu"
    budget = sum(r.available_bytes for r in rooms)
    fp8_ok = all((r.compute_capability or (0, 0)) >= (8, 9) for r in rooms) and kind == "gpu"
    fronts: list[list[Option]] = []
    for meta, ctx in models:
        weight = 1 + priority.get(meta.model_type, 0) / 50
        options: list[Option] = []
        for lv in candidate_levels(meta):
            if lv == "fp8" and not fp8_ok:
                continue
            est = estimate_model(meta, lv, context=ctx, device_kind=kind)
            options.append((_own(est), quality_of(lv)[0] * weight, ((lv, est),)))
        fronts.append(pareto(options))
    combined: list[Option] = [(0, 0.0, ())]
    for front in fronts:
        merged = [(b1 + b2, l1 + l2, c1 + c2) for (b1, l1, c1), (b2, l2, c2) in itertools.product(combined, front)
                  if b1 + b2 <= budget]
        combined = pareto(merged)
        if not combined:
            break
    available = {r.device: r.available_bytes for r in rooms}
    minimum = sum(min(o[0] for o in f) for f in fronts if f)
    where = ", ".join(r.device for r in rooms)
    for option in sorted(combined, key=lambda o: (o[1], o[0]))[:MAX_PACKINGS] if combined and combined[0][2] else []:
        chosen = [(i, lv, est) for i, (lv, est) in enumerate(option[2])]
        packed = _pack(chosen, rooms)
        if packed is None:
            continue
        items = _confirm(models, chosen, packed, rooms, policy)
        if items is None:
            continue
        used = sorted({it.device for it in items})
        total = sum(_own(it.estimate) for it in items)
        return EnsemblePlan(True, tuple(items), total, available,
                            f"all {len(items)} fit on {', '.join(used)}: {format_gib(total, 2)} of "
                            f"{format_gib(budget, 2)} bookable "
                            f"({', '.join(f'{it.model_id} {it.quantization} on {it.device}' for it in items)})")
    smallest = ", ".join(f"{meta.name} {min(f, key=lambda o: o[0])[2][0][0]} {format_gib(min(o[0] for o in f), 2)}"
                         for (meta, _), f in zip(models, fronts, strict=True) if f)
    return EnsemblePlan(False, (), minimum, available,
                        f"does not fit on {where}: even at the smallest levels ({smallest}) they need "
                        f"{format_gib(minimum, 2)} plus a runtime context per GPU, and {format_gib(budget, 2)} is "
                        "bookable in all")
