"""The lifecycle: the records of the models a manager holds, loading and unloading them.

Loads and unloads are operations (see :mod:`app.core.manager.calls`): state and bookings change
under the lock, the loader runs outside it, and events are emitted once the lock is released.
Offload, restore and move live in :mod:`app.core.manager.relocation`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from app.core.manager.calls import Call, News, Op, Signals, run_async, run_sync
from app.core.manager.errors import LoaderError, PinnedModelError, PlacementRefused, UnknownModelError
from app.core.manager.lifecycle import TRANSITIONAL, InvalidTransitionError, LoadedModel, ModelState, Record
from app.core.manager.loaders import ModelLoader
from app.core.manager.placement import Action, Decision, Placement, Refusal
from app.core.manager.relocation import Relocation
from app.core.memory_allocator import AllocationError, MemoryAllocator
from app.core.model_spec import ModelMetadata
from app.core.units import format_gib

__all__ = ["Lifecycle", "Signals", "Call", "Op"]

_log = logging.getLogger("app.core.model_resource_manager")
S = ModelState


class _Locked:
    """``with life.locked() as news``: holds the lock; emits the news after releasing it."""

    __slots__ = ("_life", "_news")

    def __init__(self, life: Lifecycle) -> None:
        self._life = life
        self._news = News()

    def __enter__(self) -> News:
        self._life.lock.acquire()
        self._life.allocator.hold_news()
        return self._news

    def __exit__(self, *exc: object) -> None:
        life, news = self._life, self._news
        life.version += 1
        life.lock.release()
        life.allocator.release_news()
        for mid, old, new in news.transitions:
            life.signals.model_state_changed.emit(mid, old, new)
        for mid, reason in news.evictions:
            _log.info("%s: %s", mid, reason)
            life.signals.evicted.emit(mid, reason)
        for call in news.later:
            call()


class Lifecycle:
    """The records of the models a manager holds, and the operations that change them."""

    def __init__(self, allocator: MemoryAllocator, loader: ModelLoader, clock: Callable[[], float],
                 signals: Signals) -> None:
        self.allocator = allocator
        self.loader = loader
        self.clock = clock
        self.signals = signals
        self.lock = threading.RLock()
        self.records: dict[str, Record] = {}
        #: Told (after the lock) what a runtime allocated for a model: (metadata, placement, figures).
        self.on_measured: Callable[[ModelMetadata, Placement, Mapping[str, Mapping[str, int]]], None] | None = None
        #: Bumped whenever a record changes in a way the planner sees.
        self.version = 0
        self.relocation = Relocation(self)

    run = staticmethod(run_sync)
    arun = staticmethod(run_async)

    def locked(self) -> _Locked:
        """The lock, and a place for news that is announced once the lock is released."""
        return _Locked(self)

    # --- reading ------------------------------------------------------------------------------------
    def find(self, model_id: str) -> Record | None:
        return self.records.get(model_id)

    def require(self, model_id: str) -> Record:
        record = self.records.get(model_id)
        if record is None:
            raise UnknownModelError(f"{model_id!r} is not loaded")
        return record

    def held_bytes(self, model_id: str) -> int:
        return sum(r.total_bytes for r in self.allocator.reservations(model_id=model_id))

    def snapshot(self, r: Record) -> LoadedModel:
        never = r.pinned or r.keep_alive_s < 0
        p = r.placement
        return LoadedModel(r.model_id, r.metadata.name, r.metadata.model_type, r.state, r.device, r.level,
                           self.held_bytes(r.model_id), p.gpu_layers if p else None, r.pinned, r.keep_alive_s,
                           None if never else r.last_used + r.keep_alive_s, r.last_used, r.reason, p, r.measured)

    def take_measurement(self, record: Record, state: str = "loaded", news: News | None = None) -> None:
        """Ask the loader what the runtime allocated (loaders that measure, such as llama.cpp's) and
        book that instead of the estimate: the ledger then holds what is really held. Under the lock."""
        measured = getattr(self.loader, "measured", None)
        if measured is None:
            return
        try:
            figures = measured(record.handle)
        except Exception as err:  # noqa: BLE001 - a loader's report is never worth a failed load
            _log.warning("%s: the loader could not say what it allocated: %r", record.model_id, err)
            return
        if not figures:
            return
        mid = record.model_id
        booked = {r.device: r for r in self.allocator.reservations(model_id=mid)}
        rows: list[tuple[str, str, int]] = []
        for device, parts in figures.items():
            parts = {c: max(0, int(b)) for c, b in parts.items()}
            rows += [(device, c, b) for c, b in sorted(parts.items())]
            old = booked.pop(device, None)
            book = {"weights": parts.get("weights", 0), "kv_cache": parts.get("kv_cache", 0),
                    "compute": parts.get("compute", 0) + parts.get("output", 0),
                    "overhead": old.runtime_bytes if old is not None else 0}
            self.allocator.reserve(mid, device, book, state=state, force=True)
        for device in booked:  # booked where the runtime put nothing
            self.allocator.release(mid, device)
        if state == "loaded":
            self.allocator.set_state(mid, "loaded")
        record.measured = tuple(rows)
        hook, placement = self.on_measured, record.placement
        if hook is not None and news is not None and placement is not None:
            news.later.append(lambda: hook(record.metadata, placement, figures))

    # --- load ---------------------------------------------------------------------------------------
    def load(self, metadata: ModelMetadata, decide: Callable[[], Decision | Refusal], *, level: str | None,
             pin: bool, keep_alive_s: float, preferred: str | None,
             announce: Callable[[Decision], None] | None = None, device: str | None = None) -> Op:
        """Decide (under the lock), run the decision's actions, book, and call the loader.

        ``announce`` hears the decision once the lock is released."""
        mid = metadata.id
        with self.locked() as news:
            done = self._already(self.records.get(mid), level, device, pin, keep_alive_s)
            if done is not None:
                return done
            decision = decide()
            if isinstance(decision, Refusal):
                raise PlacementRefused(decision)
            placement = decision.placement
            if announce is not None:
                news.later.append(lambda: announce(decision))
            if not decision.actions:
                record = self._book(metadata, placement, pin, keep_alive_s, preferred, news)
        if decision.actions:
            for action in decision.actions:
                yield from self.act(action)
            with self.locked() as news:
                done = self._already(self.records.get(mid), level, device, pin, keep_alive_s)
                if done is not None:  # another caller loaded it meanwhile
                    return done
                record = self._book(metadata, placement, pin, keep_alive_s, preferred, news)
        ok, value = yield Call(self.loader.load, (metadata, placement), "load")
        with self.locked() as news:
            if not ok:
                self.allocator.release(mid)
                record.handle = None
                news.transitions.append(record.set_state(S.FAILED, f"load failed: {value!r}"))
                _log.error("%s: load failed: %r", mid, value)
                raise value
            record.handle = value
            record.last_used = self.clock()
            self.allocator.set_state(mid, "loaded")
            self.take_measurement(record, news=news)
            news.transitions.append(record.set_state(S.LOADED, placement.reason))
            return self.snapshot(record)

    def _book(self, metadata: ModelMetadata, placement: Placement, pin: bool, keep_alive_s: float,
              preferred: str | None, news: News) -> Record:
        """Book a placement (re-validated against the ledger now) and start loading."""
        mid = metadata.id
        old = self.records.get(mid)
        try:
            self.allocator.reserve_all(mid, placement.bookings())
        except AllocationError as err:
            raise PlacementRefused(Refusal(
                mid, placement.level, err.device, err.needed_bytes, err.available_bytes,
                f"{metadata.name} at {placement.level} no longer fits on {err.device}: it needs "
                f"{format_gib(err.needed_bytes, 2)} and {format_gib(err.available_bytes, 2)} is bookable now",
                ("plan again: memory changed since this placement was made",))) from err
        record = Record(metadata=metadata, pinned=pin or bool(old and old.pinned), keep_alive_s=keep_alive_s,
                        preferred=preferred, placement=placement, device=placement.device,
                        state=old.state if old else S.UNLOADED)
        self.records[mid] = record
        news.transitions.append(record.set_state(S.LOADING, placement.reason))
        return record

    def _already(self, record: Record | None, level: str | None, device: str | None, pin: bool,
                 keep_alive_s: float | None) -> LoadedModel | None:
        if record is None:
            return None
        if record.state in (S.LOADED, S.BUSY, S.LOADING, S.RESTORING, S.MOVING, S.OFFLOADING):
            where = record.placement.device if record.placement else record.device
            # An explicit device is honoured or refused: "cuda:1" is not "partly on cuda:1, partly in RAM".
            if device is not None and device != where:
                raise InvalidTransitionError(
                    f"{record.model_id} is already {record.state.value} on {record.device}, not {device}; "
                    f"move() it to {device}, or unload it first")
            if level is None or level == record.level:
                record.last_used = self.clock()
                record.pinned = record.pinned or pin
                if keep_alive_s is not None:
                    record.keep_alive_s = keep_alive_s
                return self.snapshot(record)
            raise InvalidTransitionError(f"{record.model_id} is already {record.state.value} at {record.level}; "
                                         "unload it first or use swap()")
        if record.state == S.OFFLOADED:
            raise InvalidTransitionError(f"{record.model_id} is offloaded to RAM; restore() it instead")
        if record.state in (S.UNLOADING,) or (record.state == S.FAILED and self.held_bytes(record.model_id)):
            raise InvalidTransitionError(f"{record.model_id} is {record.state.value} and still holds memory; "
                                         "unload it first")
        return None

    # --- actions on other models ------------------------------------------------------------------------
    def act(self, action: Action) -> Op:
        """Run one of a decision's actions; an offload the loader cannot do becomes an unload."""
        if action.kind == "move":
            yield from self.relocation.move(action.model_id, action.target or "", action.reason, policy=True)
        elif action.kind == "offload":
            try:
                yield from self.relocation.offload(action.model_id, action.reason, policy=True)
            except NotImplementedError:
                yield from self.unload(action.model_id, action.reason + " (the loader cannot offload: unloaded)",
                                       policy=True)
                return
        else:
            yield from self.unload(action.model_id, action.reason, policy=True)

    def movable(self, model_id: str, verb: str, policy: bool) -> Record:
        record = self.require(model_id)
        if record.pinned:
            raise PinnedModelError(f"{model_id} is pinned; unpin it to {verb} it")
        if policy and (record.state != S.LOADED or record.busy):
            raise InvalidTransitionError(f"{model_id} is {record.state.value} now; it was to be {verb}ed "
                                         "to make room, so plan again")
        return record

    # --- unload -------------------------------------------------------------------------------------
    def unload(self, model_id: str, reason: str, *, policy: bool = False) -> Op:
        with self.locked() as news:
            record = self.records.get(model_id)
            if record is None or record.state == S.UNLOADED:
                return None
            if record.state == S.FAILED and not self.held_bytes(model_id):
                news.transitions.append(record.set_state(S.UNLOADED, reason))
                self.records.pop(model_id, None)
                return None
            self.movable(model_id, "unload", policy)
            if record.state == S.BUSY:
                raise InvalidTransitionError(f"{model_id} is busy; wait until it is idle (end_use)")
            if record.state in TRANSITIONAL:
                raise InvalidTransitionError(f"{model_id} is {record.state.value}; wait for it to finish")
            news.transitions.append(record.set_state(S.UNLOADING, reason))
        ok, value = yield Call(self.loader.unload, (model_id, record.handle), "unload")
        with self.locked() as news:
            if not ok:
                held = self.held_bytes(model_id)
                why = (f"unload failed: {value!r}; its {format_gib(held, 2)} stay booked, since the loader may "
                       "still hold them: unload again to retry")
                news.transitions.append(record.set_state(S.FAILED, why))
                raise LoaderError(f"{model_id}: {why}") from value
            self.allocator.release(model_id)
            record.handle = None
            news.transitions.append(record.set_state(S.UNLOADED, reason))
            self.records.pop(model_id, None)
            if policy:
                news.evictions.append((model_id, reason))
        return None

    # --- small changes ------------------------------------------------------------------------------
    def set_pinned(self, model_id: str, pinned: bool) -> None:
        with self.locked():
            self.require(model_id).pinned = pinned

    def touch(self, model_id: str) -> None:
        with self.locked():
            self.require(model_id).last_used = self.clock()

    def begin_use(self, model_id: str) -> None:
        with self.locked() as news:
            record = self.require(model_id)
            if record.busy == 0:
                news.transitions.append(record.set_state(S.BUSY))
            record.busy += 1
            record.last_used = self.clock()

    def end_use(self, model_id: str) -> None:
        with self.locked() as news:
            record = self.require(model_id)
            if record.busy == 0:
                raise InvalidTransitionError(f"{model_id} is not busy")
            record.busy -= 1
            record.last_used = self.clock()
            if record.busy == 0:
                news.transitions.append(record.set_state(S.LOADED))

    def replace_preferred(self, model_id: str, preferred: str | None) -> None:
        with self.locked():
            record = self.records.get(model_id)
            if record is not None:
                record.preferred = preferred
