"""The planner: one pure function that decides where and at which level a model loads.

``decide(request, ledger, policy)`` returns a :class:`Decision` (a placement and the actions that
make it possible) or a :class:`Refusal` (the numbers and the options that would work). It reads
nothing but its arguments and the memoised estimates, so the CLI, the picker, the manager and the
ensemble planner get the same answer from the same ledger.

Order, for a request without a device: a GPU with room (best fit, so later models still fit) →
move one idle model whole to another GPU where it fits (it keeps running at full speed) → make
room on a GPU by offloading or unloading idle, unpinned models in policy order → split the layers
across GPUs → a lower level on one GPU → a partial offload (layers in RAM) → the CPU, where the
request allows it. Without a chosen level, each GPU
step tries the levels at or above the policy's quality floor, best first. An explicit device is
honoured or refused, never replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from app.core.estimation import MemoryEstimate, runtime_overhead_bytes
from app.core.manager.placement import (
    Decision,
    DeviceRoom,
    LedgerView,
    Placement,
    PlacementKind,
    PlacementRequest,
    Policy,
    Refusal,
    Share,
)
from app.core.manager.rearrange import make_room, move
from app.core.model_spec import ModelMetadata, ModelType
from app.core.quantization_strategy import Candidate, candidate_levels, estimate_model, level_name, quality_of
from app.core.runtime_profile import RuntimeProfile, level_suits, lighter_settings
from app.core.units import format_gib

__all__ = ["decide", "retarget", "FP8_MIN_CAPABILITY"]

#: FP8 kernels need Ada, Hopper or newer.
FP8_MIN_CAPABILITY = (8, 9)


def decide(request: PlacementRequest, ledger: LedgerView, policy: Policy) -> Decision | Refusal:
    """Where and at which level ``request.metadata`` loads now, or why it cannot."""
    return _Planner(request, ledger, policy).decide()


def retarget(placement: Placement, device: str, reason: str) -> Placement:
    """A whole-GPU placement moved to another GPU (same level, same bytes)."""
    share = placement.shares[0]._replace(device=device)
    return dataclasses.replace(placement, shares=(share,), reason=reason)


class _Planner:
    def __init__(self, request: PlacementRequest, ledger: LedgerView, policy: Policy) -> None:
        self.req = request
        self.meta: ModelMetadata = request.metadata
        self._estimates: dict[tuple[str, str], MemoryEstimate] = {}
        self._candidates: tuple[Candidate, ...] | None = None
        self.ledger = ledger
        self.policy = policy
        self.rooms = ledger.rooms
        cc_min = self.meta.compute_capability_min
        self.all_gpus = [r for r in ledger.gpus if r.total_bytes > 0
                         and (not cc_min or (r.compute_capability or (0, 0)) >= tuple(cc_min))]
        self.gpus = self.all_gpus
        if request.device not in (None, "cpu"):
            self.gpus = [r for r in self.all_gpus if r.device == request.device]
        self.cpu = self.rooms.get("cpu") or DeviceRoom("cpu", "System RAM", 0, 0, 0)
        cache = self.meta.estimate_cache
        layers = cache.get("layers", False)
        if layers is False:
            arch = self.meta.estimation_architecture
            layers = cache["layers"] = arch.layers if arch else None
        self.layers: int | None = layers
        self.good: tuple[str, ...]
        self.low: tuple[str, ...]
        if request.level is None:
            self.levels = candidate_levels(self.meta)
            if request.runtime is not None:
                self.levels = tuple(lv for lv in self.levels if level_suits(request.runtime, lv)) or self.levels
            key = ("quality split", policy.quality_floor_ppl, self.levels)
            split = cache.get(key)
            if split is None:
                good = [lv for lv in self.levels if quality_of(lv)[0] <= policy.quality_floor_ppl] or list(self.levels)
                split = cache[key] = (tuple(good), tuple(lv for lv in self.levels if lv not in good))
            self.good, self.low = split
        else:
            self.levels = (level_name(request.level),)
            self.good, self.low = self.levels, ()

    # --- estimates --------------------------------------------------------------------------------
    def est(self, level: str, kind: str = "gpu") -> MemoryEstimate:
        key = (level, kind)
        est = self._estimates.get(key)
        if est is None:
            req = self.req
            est = estimate_model(self.meta, level, context=req.context, device_kind=kind, kv_dtype=req.kv_dtype,
                                 batch=req.batch, width=req.width, height=req.height, profile=req.runtime)
            calibrate = self.policy.calibrate
            if calibrate is not None:  # what real loads of it (or of others) measured
                est = calibrate(est, self.meta.id, level, req.context)
            self._estimates[key] = est
        return est

    @staticmethod
    def adds(est: MemoryEstimate, room: DeviceRoom) -> int:
        own = est.weights.bytes + est.kv_cache.bytes + est.compute.bytes
        over = est.overhead.bytes - room.runtime_bytes
        return own + over if over > 0 else own

    @staticmethod
    def level_ok(level: str, room: DeviceRoom) -> bool:
        """FP8 needs a GPU with FP8 kernels (none on the CPU)."""
        return level != "fp8" or (room.is_gpu and (room.compute_capability or (0, 0)) >= FP8_MIN_CAPABILITY)

    def whole(self, level: str, room: DeviceRoom, reason: str) -> Placement:
        kind: PlacementKind = "gpu" if room.is_gpu else "cpu"
        est = self.est(level, kind)
        share = Share(room.device, est.weights_bytes, est.kv_cache_bytes, est.compute_bytes, est.overhead_bytes)
        layers = self.layers if room.is_gpu else (0 if self.layers else None)
        return Placement(self.meta.id, level, kind, (share,), est, reason, self.req.context, layers, self.layers,
                         self.candidates())

    def candidates(self) -> tuple[Candidate, ...]:
        """Every level with whether it fits the roomiest GPU as things are (when the request explains)."""
        if not self.req.explain:
            return ()
        if self._candidates is None:
            self._candidates = self._all_candidates()
        return self._candidates

    def _all_candidates(self) -> tuple[Candidate, ...]:
        best = max(self.gpus, key=lambda r: r.available_bytes, default=None)
        out = []
        for lv in self.levels:
            est = self.est(lv)
            fits = best is not None and self.level_ok(lv, best) and self.adds(est, best) <= best.available_bytes
            out.append(Candidate(lv, est, fits, *quality_of(lv)))
        return tuple(out)

    # --- the steps ----------------------------------------------------------------------------------
    def decide(self) -> Decision | Refusal:
        if self.req.device is not None and self.req.device != "cpu" and not self.gpus:
            return no_such_device(self)
        return self.first() or refuse(self)

    def first(self) -> Decision | None:
        """The first step, in policy order, that places the model."""
        if self.req.device is not None and self.req.device != "cpu" and not self.gpus:
            return None
        if self.req.device == "cpu":
            return self.on_cpu(explicit=True)
        steps: tuple[Callable[[], Decision | None], ...] = (
            lambda: self.free_gpu(self.good), lambda: move(self), lambda: make_room(self), self.split,
            lambda: self.free_gpu(self.low), self.partial, lambda: self.on_cpu(explicit=False))
        for step in steps:
            decision = step()
            if decision is not None:
                return decision
        return None

    def free_gpu(self, levels: Iterable[str]) -> Decision | None:
        """The best level that fits on a GPU as things are; among GPUs, the one it fills best."""
        for lv in levels:
            est = self.est(lv)
            own = est.weights.bytes + est.kv_cache.bytes + est.compute.bytes
            over = est.overhead.bytes
            fp8 = lv == "fp8"
            fits = []
            for r in self.gpus:
                left = r.available_bytes - own - max(0, over - r.runtime_bytes)
                if left >= 0 and (not fp8 or self.level_ok(lv, r)):
                    fits.append((left, r))
            if fits:
                left, room = min(fits, key=lambda f: (f[0], f[1].device))
                why = (f"{lv} is the best level that fits on {room.device} as things are, "
                       f"leaving {format_gib(left, 2)} bookable")
                if any(other > left for other, _ in fits):  # a real choice, not a tie between equal GPUs
                    why += " (the GPU it fills best, so larger models still fit on the others)"
                return Decision(self.whole(lv, room, why))
        return None

    def split(self) -> Decision | None:
        """Layers across several GPUs (each holds its own compute buffer and runtime context)."""
        if self.req.device is not None or not self.layers or len(self.gpus) < 2:
            return None
        layers = self.layers
        for lv in self.good:
            est = self.est(lv)
            rooms = sorted((r for r in self.gpus if self.level_ok(lv, r)), key=lambda r: -r.available_bytes)
            per = (est.weights_bytes + est.kv_cache_bytes) // layers
            left, counts = layers, []
            for r in rooms:
                if left <= 0:
                    break
                fixed = est.compute_bytes + max(0, est.overhead_bytes - r.runtime_bytes)
                n = min(left, max(0, (r.available_bytes - fixed) // per)) if per > 0 else left
                if n > 0:
                    counts.append((r.device, int(n)))
                    left -= n
            if left > 0 or len(counts) < 2:
                continue
            shares = self.layer_shares(est, counts, est.overhead_bytes)
            text = ", ".join(f"{n} on {d}" for d, n in counts)
            reason = f"{lv} is the best level that fits across {len(counts)} GPUs: {text} of {layers} layers"
            return Decision(Placement(self.meta.id, lv, "split", shares, est, reason, self.req.context, layers, layers,
                                      self.candidates()))
        return None

    def layer_shares(self, est: MemoryEstimate, counts: list[tuple[str, int]], runtime: int) -> tuple[Share, ...]:
        layers = self.layers or 1
        return tuple(Share(d, est.weights_bytes * n // layers, est.kv_cache_bytes * n // layers, est.compute_bytes,
                           runtime, n) for d, n in counts)

    def partial(self) -> Decision | None:
        """Some layers on one GPU, the rest in RAM (runtimes that offload layers: LLMs)."""
        explicit = self.req.device is not None
        if (not self.policy.allow_partial or not self.layers or self.meta.model_type != ModelType.LLM
                or not self.gpus or self.req.allow_cpu is False or (explicit and self.req.allow_cpu is not True)):
            return None
        layers = self.layers
        room = max(self.gpus, key=lambda r: r.available_bytes)
        cpu_runtime = runtime_overhead_bytes("cpu")[0]
        options: list[tuple[str, int, float, tuple[Share, ...]]] = []
        for lv in self.levels:
            if not self.level_ok(lv, room):
                continue
            est = self.est(lv)
            per = (est.weights_bytes + est.kv_cache_bytes) // layers
            # With layers in RAM, llama.cpp copies their weights (the output matrix included) to the GPU for
            # each large batch: the GPU's compute buffer grows by about the output matrix.
            graph = est.offload_graph_bytes
            fixed = est.compute_bytes + graph + max(0, est.overhead_bytes - room.runtime_bytes)
            n = layers if per <= 0 else max(0, min(layers - 1, (room.available_bytes - fixed) // per))
            if n <= 0:
                continue
            gpu = self.layer_shares(est, [(room.device, int(n))], est.overhead_bytes)[0]
            gpu = gpu._replace(compute_bytes=gpu.compute_bytes + graph)
            # RAM holds the other layers and what the runtime keeps there anyway (the token embeddings).
            rest = Share("cpu", est.weights_bytes - gpu.weights_bytes + est.host_bytes,
                         est.kv_cache_bytes - gpu.kv_cache_bytes, 0, cpu_runtime, layers - int(n))
            if rest.own_bytes + max(0, cpu_runtime - self.cpu.runtime_bytes) > self.cpu.available_bytes:
                continue
            options.append((lv, int(n), quality_of(lv)[0], (gpu, rest)))
        if not options:
            return None
        # The best level that keeps at least half the layers on the GPU; else the most layers at a
        # good level; else the most layers.
        half = [o for o in options if o[1] >= layers / 2]
        good = [o for o in options if o[2] <= self.policy.quality_floor_ppl]
        lv, n, _, shares = half[0] if half else max(good or options, key=lambda o: o[1])
        reason = (f"{lv} does not fit {room.device} whole: {n} of {layers} layers on the GPU, "
                  f"the rest in RAM (slower)")
        return Decision(Placement(self.meta.id, lv, "partial", shares, self.est(lv), reason, self.req.context, n,
                                  layers, self.candidates()))

    def on_cpu(self, *, explicit: bool) -> Decision | None:
        allowed = explicit or self.req.allow_cpu is True or (self.req.allow_cpu is None and not self.all_gpus)
        if not allowed:
            return None
        for lv in self.levels:
            if not self.level_ok(lv, self.cpu):
                continue
            est = self.est(lv, "cpu")
            if self.adds(est, self.cpu) <= self.cpu.available_bytes:
                if explicit:
                    why = f"{lv} is the best level that fits in RAM, on the CPU as requested"
                elif self.all_gpus:
                    why = f"no GPU has room; {lv} runs on the CPU from RAM, as allowed (slower)"
                else:
                    why = f"no GPU; {lv} runs on the CPU from RAM"
                return Decision(self.whole(lv, self.cpu, why))
        return None


# --- refusals ---------------------------------------------------------------------------------------

def no_such_device(p: _Planner) -> Refusal:
    known = ", ".join([r.device for r in p.all_gpus] + ["cpu"])
    gone = p.rooms.get(p.req.device or "")
    why = (f"{p.req.device} is lost or not usable now" if gone is not None
           else f"no device {p.req.device!r}")
    if gone is not None and gone.total_bytes > 0 and p.meta.compute_capability_min:
        why = f"{p.meta.name} needs compute capability {'.'.join(map(str, p.meta.compute_capability_min))}+"
    return Refusal(p.meta.id, p.req.level or p.levels[0], p.req.device, 0, 0,
                   f"{why}; choose one of: {known}", estimate=p.est(p.levels[0]),
                   alternatives=p.candidates(), cause="device")


def refuse(p: _Planner) -> Refusal:
    kind = "cpu" if p.req.device == "cpu" or not p.gpus else "gpu"
    rooms = [p.cpu] if kind == "cpu" else p.gpus
    usable = [lv for lv in p.levels if any(p.level_ok(lv, r) for r in rooms)] or list(p.levels)
    smallest = min(usable, key=lambda lv: p.est(lv).total_bytes)
    est = p.est(smallest, kind)
    able = [r for r in p.gpus if p.level_ok(smallest, r)] or p.gpus
    room = p.cpu if kind == "cpu" else max(able, key=lambda r: r.available_bytes - p.adds(est, r))
    need = p.adds(est, room)
    where = "RAM" if kind == "cpu" else room.device
    cause = "memory"
    if p.req.level is not None and smallest == p.req.level and not p.level_ok(smallest, room):
        cause = "capability"
        has = ("the CPU has none" if not room.is_gpu
               else f"{room.device} has {'.'.join(map(str, room.compute_capability or (0, 0)))}")
        reason = f"{p.meta.name} at {smallest} needs FP8 kernels (compute capability 8.9+); {has}"
    else:
        level_text = f"at {smallest}" if p.req.level is not None else f"even at {smallest}"
        reason = (f"{p.meta.name} {level_text} needs {format_gib(need, 2)} on {where}; "
                  f"{format_gib(room.available_bytes, 2)} is bookable there "
                  f"({format_gib(room.margin_bytes, 2)} kept free)")
        if not p.req.make_room:
            reason += "; nothing else was touched (make_room is off)"
    return Refusal(p.meta.id, p.req.level or smallest, room.device, need, room.available_bytes, reason,
                   options(p), est, p.candidates(), cause)


def options(p: _Planner) -> tuple[str, ...]:
    """What would work instead: each relaxation of the request the planner accepts."""
    out: list[str] = []
    tries = []
    if not p.req.make_room:
        tries.append(("with make_room", dataclasses.replace(p.req, make_room=True)))
    if p.req.level is not None:
        tries.append(("another level", dataclasses.replace(p.req, level=None)))
    if p.req.device is not None:
        tries.append(("another device", dataclasses.replace(p.req, device=None)))
    if p.req.allow_cpu is not True and p.req.device != "cpu":
        tries.append(("with allow_cpu", dataclasses.replace(p.req, allow_cpu=True, device=None)))
    for label, req in tries:
        decision = _Planner(req, p.ledger, p.policy).first()
        if decision is not None:
            text = f"{label}: {_briefly(decision)}"
            if text not in out:
                out.append(text)
    # Lighter runtime settings, one at a time; all of them together only when none alone is enough.
    lighter = _lighter_runtimes(p)
    found = False
    for i, (label, profile) in enumerate(lighter):
        if found and i == len(lighter) - 1 and len(lighter) > 2:
            break
        decision = _Planner(dataclasses.replace(p.req, runtime=profile), p.ledger, p.policy).first()
        if decision is not None:
            found = True
            out.append(f"{label}: {_briefly(decision)}")
    return tuple(out)


def _briefly(decision: Decision) -> str:
    """A decision in one short clause for a list of options: where, and whom it moves (the numbers are in
    the plan itself): "fp16 on cuda:0, after offloading Stable Diffusion 1.5 and Ministral 8B to RAM"."""
    text = decision.placement.describe()
    groups: dict[str, list[str]] = {}
    for a in decision.actions:
        groups.setdefault(a.kind, []).append(a.name)
    done = {"offload": "offloading {} to RAM", "unload": "unloading {}", "move": "moving {} to another GPU"}
    parts = [done[kind].format(" and ".join(names)) for kind, names in groups.items()]
    return text + (", after " + "; ".join(parts) if parts else "")


def _lighter_runtimes(p: _Planner) -> list[tuple[str, RuntimeProfile]]:
    """Runtime settings that hold less, for the refusal's options (the user chooses; nothing changes by itself)."""
    return lighter_settings(p.meta.model_type, p.req.runtime or RuntimeProfile())
