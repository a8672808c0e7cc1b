"""Moving a loaded model: offload its weights to RAM, restore them to its GPU(s), or move it to another GPU.

Each is an operation (see :mod:`app.core.manager.calls`): bookings change under the lifecycle's
lock, the loader runs outside it, and the state that follows matches what the loader reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.core.manager.calls import Call, Op
from app.core.manager.errors import LoaderError, PlacementRefused
from app.core.manager.lifecycle import InvalidTransitionError, ModelState, Record
from app.core.manager.placement import Action, Placement, Refusal
from app.core.manager.planner import retarget
from app.core.memory_allocator import AllocationError
from app.core.units import format_gib

if TYPE_CHECKING:
    from app.core.manager.operations import Lifecycle

__all__ = ["Relocation"]

S = ModelState


class Relocation:
    """Offload, restore and move, for one :class:`Lifecycle`."""

    def __init__(self, life: Lifecycle) -> None:
        self.life = life

    # --- offload ------------------------------------------------------------------------------------
    def offload(self, model_id: str, reason: str, *, policy: bool = False) -> Op:
        with self.life.locked() as news:
            record = self.life.movable(model_id, "offload", policy)
            if record.state != S.LOADED:
                raise InvalidTransitionError(
                    f"{model_id} is {record.state.value}; only a loaded model can be offloaded")
            if record.device == "cpu":
                raise InvalidTransitionError(f"{model_id} already runs on the CPU")
            weights = sum(r.category("weights") for r in self.life.allocator.reservations(model_id=model_id))
            before = self.life.allocator.reservations("cpu", model_id)
            self.life.allocator.reserve(model_id, "cpu", {"weights": weights})  # raises when RAM has no room
            news.transitions.append(record.set_state(S.OFFLOADING, reason))
        ok, value = yield Call(self.life.loader.offload, (model_id, record.handle), "offload")
        with self.life.locked() as news:
            if not ok:
                self.life.allocator.release(model_id, "cpu")
                for r in before:
                    parts = {**dict(r.bytes_by_category), "overhead": r.runtime_bytes}
                    self.life.allocator.reserve(model_id, "cpu", parts, state=r.state, force=True)
                news.transitions.append(record.set_state(S.LOADED, f"offload failed: {value!r}"))
                if isinstance(value, NotImplementedError):
                    raise value
                raise LoaderError(f"{model_id}: offload failed: {value!r}; it stays on {record.device}") from value
            for r in self.life.allocator.reservations(model_id=model_id):
                if r.device != "cpu":
                    self.life.allocator.release(model_id, r.device)
            self.life.allocator.set_state(model_id, "offloaded", "cpu")
            record.device = "cpu"
            record.measured = ()
            self.life.take_measurement(record, "offloaded")  # a runtime that reloaded it in RAM says what it holds
            news.transitions.append(record.set_state(S.OFFLOADED, reason))
            if policy:
                news.evictions.append((model_id, reason))
            return self.life.snapshot(record)

    # --- restore ------------------------------------------------------------------------------------
    def restore(self, model_id: str, make_room: Callable[[Placement], tuple[Action, ...] | Refusal] | None) -> Op:
        with self.life.locked() as news:
            record = self.life.require(model_id)
            if record.state != S.OFFLOADED or record.placement is None:
                raise InvalidTransitionError(f"{model_id} is {record.state.value}, not offloaded")
            placement = record.placement
            gpu = {d: parts for d, parts in placement.bookings().items() if d != "cpu"}
            actions: tuple[Action, ...] = ()
            try:
                self.life.allocator.reserve_all(model_id, gpu)
            except AllocationError as err:
                answer = make_room(placement) if make_room is not None else None
                if not isinstance(answer, tuple):
                    text = (f"{model_id} stays offloaded: {format_gib(err.needed_bytes, 2)} needed on {err.device}, "
                            f"{format_gib(err.available_bytes, 2)} bookable")
                    raise PlacementRefused(answer if isinstance(answer, Refusal) else Refusal(
                        model_id, placement.level, err.device, err.needed_bytes, err.available_bytes, text)) from err
                actions = answer
        if actions:
            for action in actions:
                yield from self.life.act(action)
            with self.life.locked() as news:
                try:
                    self.life.allocator.reserve_all(model_id, gpu)
                except AllocationError as err:
                    raise PlacementRefused(Refusal(model_id, placement.level, err.device, err.needed_bytes,
                                                   err.available_bytes, f"{model_id} stays offloaded: memory changed "
                                                   "while making room")) from err
        with self.life.locked() as news:
            news.transitions.append(record.set_state(S.RESTORING, f"restoring to {placement.home_device}"))
        ok, value = yield Call(self.life.loader.restore, (model_id, record.handle, placement.home_device), "restore")
        with self.life.locked() as news:
            if not ok:
                for d in gpu:
                    self.life.allocator.release(model_id, d)
                news.transitions.append(record.set_state(S.OFFLOADED, f"restore failed: {value!r}"))
                raise LoaderError(f"{model_id}: restore failed: {value!r}; it stays offloaded") from value
            cpu = placement.share_on("cpu")
            if cpu is not None:
                self.life.allocator.reserve(model_id, "cpu", cpu.parts(), state="loaded", force=True)
            else:
                self.life.allocator.release(model_id, "cpu")
            self.life.allocator.set_state(model_id, "loaded")
            record.device = placement.device
            record.last_used = self.life.clock()
            record.measured = ()
            self.life.take_measurement(record, news=news)
            news.transitions.append(record.set_state(S.LOADED, f"restored to {placement.device}"))
            return self.life.snapshot(record)

    # --- move ---------------------------------------------------------------------------------------
    def move(self, model_id: str, target: str, reason: str, *, policy: bool = False) -> Op:
        """Move a whole-GPU model to another GPU: offload then restore there (or unload then load)."""
        with self.life.locked() as news:
            record = self.life.movable(model_id, "move", policy)
            placement = record.placement
            if record.state != S.LOADED or placement is None or placement.kind != "gpu":
                raise InvalidTransitionError(f"{model_id} is not loaded whole on one GPU; it cannot be moved")
            source = placement.home_device
            if target == source:
                raise InvalidTransitionError(f"{model_id} is already on {target}")
            if target not in self.life.allocator.devices() or target == "cpu":
                raise InvalidTransitionError(f"{target!r} is not a GPU here; offload() moves a model to RAM")
            moved = retarget(placement, target, f"moved from {source} to {target}: {reason}")
            self.life.allocator.reserve(model_id, target, moved.shares[0].parts())  # raises when there is no room
            news.transitions.append(record.set_state(S.MOVING, reason))
        ok, value = yield Call(self.life.loader.offload, (model_id, record.handle), "offload")
        reloaded = False
        if not ok and isinstance(value, NotImplementedError):
            ok, value = yield Call(self.life.loader.unload, (model_id, record.handle), "unload")
            if not ok:
                return self._move_failed(record, target, f"unload failed: {value!r}", value, keep_source=True)
            ok, value = yield Call(self.life.loader.load, (record.metadata, moved), "load")
            if not ok:
                return self._move_failed(record, target, f"reload on {target} failed: {value!r}", value,
                                         keep_source=False)
            record.handle, reloaded = value, True
        elif not ok:
            with self.life.locked() as news:
                self.life.allocator.release(model_id, target)
                news.transitions.append(record.set_state(S.LOADED, f"move failed: {value!r}"))
            raise LoaderError(f"{model_id}: moving to {target} failed: {value!r}; it stays on {source}") from value
        if not reloaded:
            ok, value = yield Call(self.life.loader.restore, (model_id, record.handle, target), "restore")
            if not ok:
                with self.life.locked() as news:
                    weights = record.placement.estimate.weights_bytes if record.placement else 0
                    self.life.allocator.release(model_id)
                    self.life.allocator.reserve(model_id, "cpu", {"weights": weights}, state="offloaded", force=True)
                    record.device = "cpu"
                    news.transitions.append(record.set_state(S.OFFLOADED, f"restore on {target} failed: {value!r}"))
                raise LoaderError(f"{model_id}: restoring on {target} failed: {value!r}; it is offloaded") from value
        with self.life.locked() as news:
            self.life.allocator.release(model_id, source)
            self.life.allocator.set_state(model_id, "loaded")
            record.placement, record.device = moved, target
            record.measured = ()
            self.life.take_measurement(record, news=news)
            news.transitions.append(record.set_state(S.LOADED, moved.reason))
            if policy:
                news.evictions.append((model_id, reason))
            return self.life.snapshot(record)

    def _move_failed(self, record: Record, target: str, why: str, err: BaseException, *, keep_source: bool) -> Any:
        with self.life.locked() as news:
            self.life.allocator.release(record.model_id, target)
            if not keep_source:
                self.life.allocator.release(record.model_id)
                record.handle = None
            news.transitions.append(record.set_state(S.FAILED, why + ("" if not keep_source else
                                                                       "; its booking stays: unload to retry")))
        raise LoaderError(f"{record.model_id}: {why}") from err
