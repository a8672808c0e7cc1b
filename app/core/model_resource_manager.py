"""ModelResourceManager: the facade over the manager package, with the seed's API.

It resolves ids, builds the planner's view of the ledger, and hands the rest to the parts in
``app.core.manager``: the planner decides (once), the lifecycle books and calls the loader
(outside the lock), eviction, keep-alive, ensemble and re-quantization do their one job each.
Every decision is announced as an event with its reason. The seed's API (``select_best_model``,
``prepare_model_loading``, ``cleanup_model``, ``check_memory_pressure``, ``model_registry``) runs
as written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from app.core.calibration import Calibration, CalibrationError, CalibrationStore, calibrate, learn_corrections
from app.core.estimation import MemoryEstimate, UnknownQuantizationError
from app.core.events import Signal
from app.core.hardware.snapshot import HardwareProfile
from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.admission import Admission, SyncGuard
from app.core.manager.booking_history import BookingHistory, BookingInterval
from app.core.manager.ensemble import EnsembleItem, EnsemblePlan, plan_ensemble
from app.core.manager.errors import (
    InsufficientMemoryError,
    LoaderError,
    PinnedModelError,
    PlacementRefused,
    UnknownModelError,
)
from app.core.manager.lifecycle import InvalidTransitionError, LoadedModel, ModelState
from app.core.manager.loaders import (
    ModelLoader,
    ReservationLoader,
    SimulatedLoader,
)
from app.core.manager.operations import Lifecycle, Signals
from app.core.manager.placement import Decision, LedgerView, Placement, PlacementRequest, Policy, Refusal
from app.core.manager.planner import decide
from app.core.manager.queries import Booking, LedgerQueries
from app.core.manager.requantize import QuantizationProposal
from app.core.manager.settings import ManagerSettings
from app.core.manager.upkeep import Upkeep
from app.core.memory_allocator import (
    AllocationError,
    DeviceLedger,
    MemoryAllocation,
    MemoryAllocator,
    PressureLevel,
    Reservation,
)
from app.core.model_registry import ModelRegistry
from app.core.model_spec import ModelMetadata, ModelProvider, ModelType
from app.core.quantization_strategy import (
    QuantizationConfig,
    QuantizationLevel,
    QuantizationStrategy,
    file_level,
    level_name,
)
from app.core.runtime_profile import RuntimeProfile
from app.core.units import format_gib, gib

#: The context a plan without one assumes (the estimator's default), and so what a load measured is kept under.
DEFAULT_CONTEXT = 4096

__all__ = [
    "Booking", "Decision", "EnsembleItem", "EnsemblePlan", "InsufficientMemoryError", "InvalidTransitionError",
    "LoadPreparation", "LoadedModel", "LoaderError", "ManagerSettings", "ModelLoader", "ModelResourceManager",
    "ModelState", "PinnedModelError", "Placement", "PlacementRefused", "QuantizationProposal", "Refusal",
    "ReservationLoader", "SimulatedLoader", "UnknownModelError",
]

_log = logging.getLogger(__name__)


class LoadPreparation(NamedTuple):
    """``prepare_model_loading``'s answer; unpacks as the seed's (metadata, quantization, allocation)."""

    metadata: ModelMetadata
    quantization: QuantizationConfig
    allocation: MemoryAllocation

    @property
    def can_load(self) -> bool:
        return True


class ModelResourceManager:
    """Central coordinator for model resources.

    ``ModelResourceManager()`` with no arguments is the shared instance (as in the seed); any
    argument makes an isolated manager (tests, or a host with its own loader)::

        manager = ModelResourceManager(loader=MyLoader(), profiler=HardwareProfiler(simulate="rtx3060"))

    Signals (plain Python, fired on the calling thread, never under the lock):
        model_state_changed(model_id, old, new), allocation_changed(device), pressure_changed(device, level),
        evicted(model_id, reason), plan_ready(decision), quantization_proposed(proposal)
    """

    _shared: ModelResourceManager | None = None
    _shared_lock = threading.Lock()

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelResourceManager:
        if args or kwargs:
            return super().__new__(cls)
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = super().__new__(cls)
            return cls._shared

    def __init__(self, *, profiler: HardwareProfiler | None = None, registry: ModelRegistry | None = None,
                 strategy: QuantizationStrategy | None = None, allocator: MemoryAllocator | None = None,
                 loader: ModelLoader | None = None, settings: ManagerSettings | None = None,
                 clock: Callable[[], float] = time.monotonic, calibration: CalibrationStore | None = None) -> None:
        """``calibration``: where real loads' measurements are kept (the user's store in the dashboard
        and the CLI); plans then use what was measured. None: nothing is recorded or read."""
        if getattr(self, "_initialized", False):
            return
        self.logger = _log
        self.settings = settings or ManagerSettings()
        #: The runtime settings every plan and load assumes unless a request names its own (None: each
        #: model's runtime with its defaults). A host sets what its runtimes really use (VAE tiling, slots).
        self.runtime_profile: RuntimeProfile | None = None
        self.hardware_profiler = profiler or HardwareProfiler()
        self.model_registry = registry or ModelRegistry()
        self.quantization_strategy = strategy or QuantizationStrategy()
        self._clock = clock
        profile = self.hardware_profiler.get_profile()
        self.memory_allocator = allocator or MemoryAllocator(profile, settings=self.settings.allocator, clock=clock)
        if allocator is not None:
            allocator.update(profile)
        signals = Signals()
        self._life = Lifecycle(self.memory_allocator, loader or ReservationLoader(), clock, signals)
        self.model_state_changed = signals.model_state_changed
        self.evicted = signals.evicted
        self.plan_ready: Signal[Callable[[Decision], None]] = Signal("plan_ready")
        self.quantization_proposed: Signal[Callable[[QuantizationProposal], None]] = Signal("quantization_proposed")
        self.allocation_changed = self.memory_allocator.allocation_changed
        self.pressure_changed = self.memory_allocator.pressure_changed
        self._calibration = calibration
        self._measured: tuple[Calibration, ...] = ()
        self._calib_state: tuple[frozenset[str], Mapping[str, Any], dict[Any, Any]] = (frozenset(), {}, {})
        self._set_measured(tuple(calibration.entries()) if calibration is not None else ())
        self._policy = Policy(self.settings.type_priority, self.settings.quality_floor_ppl, calibrate=self._calibrate)
        if calibration is not None:
            self._life.on_measured = self._record_measurement
        self._upkeep = Upkeep(self, self._life)
        self._guard = SyncGuard()
        self._admission = Admission(self._life, self.settings, self.decide, self.ledger_view,
                                    lambda decision: self.plan_ready.emit(decision))
        self._queries = LedgerQueries(self.memory_allocator, self._life, self.settings)
        self._history = BookingHistory()
        self.allocation_changed.connect(self._record_bookings)
        self._initialized = True
        self.logger.info("hardware: %d GPU(s), %s RAM available", len(profile.gpus),
                         format_gib(profile.host.available_bytes))

    @classmethod
    def configure_shared(cls, **kwargs: Any) -> ModelResourceManager:
        """Create the shared instance with a host's own parts (loader, profiler, registry …),
        so code written against ``ModelResourceManager()`` uses them."""
        manager = object.__new__(cls)
        manager.__init__(**kwargs)  # type: ignore[misc]
        with cls._shared_lock:
            if cls._shared is not None and cls._shared is not manager:
                cls._shared.stop()
            cls._shared = manager
        return manager

    @classmethod
    def reset_shared(cls) -> None:
        """Forget the shared instance (tests; a host re-initialising)."""
        with cls._shared_lock:
            if cls._shared is not None:
                cls._shared.stop()
            cls._shared = None

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock keep-alive deadlines are measured on (views show countdowns with it)."""
        return self._clock

    @property
    def loader(self) -> ModelLoader:
        return self._life.loader

    @loader.setter
    def loader(self, loader: ModelLoader) -> None:
        self._life.loader = loader

    # --- the seed's API ------------------------------------------------------------------------
    @property
    def registry(self) -> ModelRegistry:
        return self.model_registry

    def select_best_model(self, provider: ModelProvider | str | None = None,
                          model_type: ModelType | str | None = None) -> ModelMetadata | None:
        """The largest model of this provider and type that fits the hardware now."""
        return self.model_registry.select_best_model(provider, model_type, self._measure(),
                                                     self.quantization_strategy)

    def prepare_model_loading(self, model_id: str, model_type: str = "llm",
                              preferred_quantization: QuantizationLevel | str | None = None, *,
                              context: int | None = None, device: str | None = None) -> LoadPreparation:
        """Plan and book a model the host will load itself: ``(metadata, quantization, allocation)``.

        Makes room by the policy when needed. Raises :class:`UnknownModelError` for an id the
        registry does not know and :class:`PlacementRefused` (an ``InsufficientMemoryError`` and a
        ``PlacementError``) when it cannot be placed.
        """
        loaded = self.load(model_id, preferred_quantization, device, context=context)
        placement = loaded.placement
        assert placement is not None
        config = QuantizationConfig(level=QuantizationLevel.parse(placement.level), description=placement.reason,
                                    estimated_memory_gb=gib(placement.estimate.total_bytes),
                                    requires_calibration=placement.level in ("int2", "gptq-int4", "awq-int4"),
                                    estimate=placement.estimate)
        allocation = self.memory_allocator.allocation_of(loaded.model_id)
        assert allocation is not None
        return LoadPreparation(self._resolve(loaded.model_id), config, allocation)

    def cleanup_model(self, model_id: str, model_type: str = "llm") -> None:
        """Release a model and its memory (the seed's name for unload)."""
        self.unload(model_id, reason="released by the host")

    def check_memory_pressure(self) -> bool:
        """True when any device is at high or critical pressure (after a fresh measurement)."""
        self._measure()
        return self.memory_allocator.is_under_memory_pressure()

    # --- measurement and planning ----------------------------------------------------------------
    def _measure(self) -> HardwareProfile:
        profile = self.hardware_profiler.get_profile()
        self.memory_allocator.update(profile)
        return profile

    def observe(self, profile: HardwareProfile) -> None:
        """Feed a measurement taken elsewhere (the sampler), without reading the driver again."""
        self.memory_allocator.update(profile)

    def _resolve(self, model_id: str) -> ModelMetadata:
        metadata = self.model_registry.get_model(model_id)
        if metadata is None:
            close = [m.id for m in self.model_registry.search(model_id, limit=3)]
            hint = f"; did you mean {', '.join(close)}?" if close else "; register it first"
            raise UnknownModelError(f"unknown model {model_id!r}{hint}")
        return metadata

    def request(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None, *,
                context: int | None = None, make_room: bool | None = None, allow_cpu: bool | None = None,
                explain: bool = False, runtime: RuntimeProfile | None = None) -> PlacementRequest:
        """A placement request with the manager's defaults (``make_room``: the settings' auto_swap).

        A GGUF file is planned at its own level: a runtime loads the file as it is, so another level
        is refused here with what to do instead."""
        metadata = self._resolve(model_id)
        name = level_name(level) if level is not None else None
        own = file_level(metadata)
        if own is not None:
            if name is not None and name != own:
                raise UnknownQuantizationError(
                    f"{metadata.name} is a {own} file ({metadata.path}); it loads at {own} only. Quantize it to "
                    f"{name} with llama.cpp's llama-quantize and scan the new file, or load it at {own}")
            name = own
        return PlacementRequest(metadata, name, device, context,
                                make_room=self.settings.auto_swap if make_room is None else make_room,
                                allow_cpu=allow_cpu, explain=explain, runtime=runtime or self.runtime_profile)

    def decide(self, request: PlacementRequest) -> Decision | Refusal:
        """The planner's answer for ``request`` against this manager's ledger now."""
        return decide(request, self.ledger_view(exclude=(request.metadata.id,)), self._policy)

    def plan(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None, *,
             context: int | None = None, make_room: bool | None = None,
             allow_cpu: bool | None = None, runtime: RuntimeProfile | None = None) -> Decision | Refusal:
        """What :meth:`load` would do now (nothing is booked): a Decision, or a Refusal with options."""
        answer = self.decide(self.request(model_id, level, device, context=context, make_room=make_room,
                                          allow_cpu=allow_cpu, explain=True, runtime=runtime))
        if isinstance(answer, Decision):
            self.plan_ready.emit(answer)
        return answer

    # --- the query API for views ----------------------------------------------------------------
    # --- calibration: what real loads measured ------------------------------------------------------
    def _calibrate(self, estimate: MemoryEstimate, model_id: str, level: str, context: int | None) -> MemoryEstimate:
        """The estimate as real loads corrected it (memoised per estimate until a new load is kept)."""
        seen, corrections, memo = self._calib_state
        if model_id not in seen and not any(c.usable for c in corrections.values()):
            return estimate
        key = (id(estimate), model_id, level, context)
        hit = memo.get(key)
        if hit is not None and hit[0] is estimate:
            return hit[1]
        ctx = DEFAULT_CONTEXT if context is None else context
        mine = [e for e in self._measured if e.model_id == model_id]  # the rest only teach the corrections
        out = calibrate(mine, estimate, model_id, level, ctx, corrections=corrections)[0]
        memo[key] = (estimate, out)
        return out

    def _set_measured(self, entries: tuple[Calibration, ...]) -> None:
        self._measured = entries
        self._calib_state = (frozenset(e.model_id for e in entries), learn_corrections(entries) if entries else {}, {})

    def _record_measurement(self, metadata: ModelMetadata, placement: Placement,
                            figures: Mapping[str, Mapping[str, int]]) -> None:
        """Keep what the runtime allocated beside what was predicted, for the whole model (after the lock)."""
        store = self._calibration
        if store is None:
            return
        predicted = {"weights": sum(s.weights_bytes for s in placement.shares),
                     "kv_cache": sum(s.kv_cache_bytes for s in placement.shares),
                     "compute": sum(s.compute_bytes for s in placement.shares),
                     "runtime": max((s.runtime_bytes for s in placement.shares), default=0)}
        measured: dict[str, int] = {}
        for parts in figures.values():
            for category, nbytes in parts.items():
                measured[category] = measured.get(category, 0) + int(nbytes)
        if len(placement.shares) > 1:
            # Split or partial: each device holds a compute buffer of its own, so their sum is no
            # whole-model compute term; weights and KV cache add up, and are what is kept.
            measured = {c: b for c, b in measured.items() if c in ("weights", "kv_cache")}
            predicted = {c: b for c, b in predicted.items() if c in ("weights", "kv_cache")}
        if not measured:
            return
        context = DEFAULT_CONTEXT if placement.context is None else placement.context
        try:  # one entry per load, under the placement's devices ("cuda:0+cuda:1" for a split)
            store.record(Calibration(model_id=metadata.id, level=placement.level, context=context,
                                     device=placement.device, predicted=predicted, measured=measured))
        except CalibrationError as err:  # a full disk never fails a load
            self.logger.warning("could not keep the measurement of %s: %s", metadata.id, err)
        self._set_measured(tuple(store.entries()))
        self._life.version += 1  # plans made from now on see it

    def ledger_view(self, exclude: Iterable[str] = ()) -> LedgerView:
        """The planner's view of the ledger (``exclude``: models whose bytes count as free)."""
        return self._queries.ledger_view(exclude)

    def ledgers(self) -> tuple[DeviceLedger, ...]:
        """Every device's ledger now."""
        return self._queries.ledgers()

    def devices(self) -> list[str]:
        return self._queries.devices()

    def bookings(self, device: str) -> tuple[Booking, ...]:
        """What is booked on ``device``: each model's own bytes and the shared runtime context."""
        return self._queries.bookings(device)

    def reservations(self) -> tuple[Reservation, ...]:
        """Every booking: one per model and device, bytes by category."""
        return self._queries.reservations()

    def ledgers_and_bookings(self) -> tuple[tuple[DeviceLedger, ...], tuple[Reservation, ...]]:
        """Every device's ledger and every booking, taken together (for exporters)."""
        return self._queries.ledgers_and_bookings()

    def booking_history(self, device: str, since: float | None = None) -> tuple[BookingInterval, ...]:
        """What was booked on ``device`` and when (on :attr:`clock`), from ``since`` on: one interval
        per booking, open while it lasts; a booking whose bytes changed is a new interval (a step)."""
        return self._history.intervals(device, since)

    def _record_bookings(self, device: str) -> None:
        self._history.record(device, ((b.model_id or b.label, b.label, b.bytes) for b in self.bookings(device)),
                             self._clock())

    def update_settings(self, settings: ManagerSettings) -> None:
        """Use ``settings`` from now on (the dashboard's settings dialog): keep-alive and the load cap
        apply to the next loads, reserves and thresholds re-evaluate every device at once."""
        self.settings = settings
        self._admission._settings = settings
        self._queries._settings = settings
        self._policy = Policy(settings.type_priority, settings.quality_floor_ppl, calibrate=self._calibrate)
        self.memory_allocator.configure(settings.allocator)

    def safety_margin(self, device: str) -> int:
        """Bytes never booked on ``device``."""
        return self._queries.safety_margin(device)

    def pressure(self, device: str) -> PressureLevel:
        return self._queries.pressure(device)

    def available_bytes(self, device: str) -> int:
        return self._queries.available_bytes(device)

    def allowed_actions(self, model_id: str) -> frozenset[str]:
        """What a user may do to the model now (unload, offload, restore, move, pin, unpin)."""
        return self._queries.allowed_actions(self._id(model_id))

    def loaded_models(self) -> tuple[LoadedModel, ...]:
        """Every model the manager holds (loading, loaded, busy, offloaded or failed)."""
        with self._life.lock:
            return tuple(self._life.snapshot(r) for r in self._life.records.values())

    def cancel_load(self, model_id: str) -> None:
        """Stop loading ``model_id`` where the runtime can (llama.cpp); the load then fails and books nothing.
        Raises ``InvalidTransitionError`` when it is not loading, ``LoaderError`` when the runtime cannot."""
        mid = self._id(model_id)
        with self._life.lock:
            record = self._life.records.get(mid)
            if record is None or record.state != ModelState.LOADING:
                state = record.state.value if record is not None else "not loaded"
                raise InvalidTransitionError(f"{mid} is {state}; only a load in progress can be cancelled")
        cancel = getattr(self.loader, "cancel", None)
        if not callable(cancel):
            raise LoaderError(f"this runtime cannot stop a load in progress; {mid} will finish loading")
        if cancel(mid) is False:
            raise InvalidTransitionError(f"{mid} is not being loaded by the runtime now (not started yet, or "
                                         "finished); nothing was cancelled")

    def handle(self, model_id: str) -> Any:
        """What the loader returned for ``model_id`` (the llama.cpp runtime: a handle whose ``.llama``
        is the ``llama_cpp.Llama`` to run); None when it is not loaded."""
        with self._life.lock:
            record = self._life.records.get(self._id(model_id))
            return record.handle if record is not None else None

    def state_of(self, model_id: str) -> ModelState:
        with self._life.lock:
            record = self._life.find(self._id(model_id))
            return record.state if record else ModelState.UNLOADED

    # --- lifecycle -------------------------------------------------------------------------------
    def _load_op(self, model_id: str, level: Any, device: str | None, context: int | None, pin: bool,
                 keep_alive_s: float | None, make_room: bool | None, allow_cpu: bool | None,
                 placement: Placement | Decision | None) -> Any:
        req = self.request(model_id, level, device, context=context, make_room=make_room, allow_cpu=allow_cpu)
        return self._admission.load_op(req, level_given=level is not None, pin=pin, keep_alive_s=keep_alive_s,
                                       placement=placement)

    def _sync(self, *names: str) -> None:
        self._guard.check(self.loader, *names)

    def load(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None, *,
             context: int | None = None, pin: bool = False, keep_alive_s: float | None = None,
             make_room: bool | None = None, allow_cpu: bool | None = None,
             placement: Placement | Decision | None = None) -> LoadedModel:
        """Decide, make room (when allowed), book and load a model; ``placement`` loads one planned
        earlier (re-validated, booked atomically). Raises :class:`PlacementRefused` with options."""
        self._sync("load", "unload", "offload", "restore")
        return Lifecycle.run(self._load_op(model_id, level, device, context, pin, keep_alive_s, make_room,
                                           allow_cpu, placement))

    async def aload(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None,
                    *, context: int | None = None, pin: bool = False, keep_alive_s: float | None = None,
                    make_room: bool | None = None, allow_cpu: bool | None = None,
                    placement: Placement | Decision | None = None) -> LoadedModel:
        """:meth:`load` for event loops: a blocking loader runs in an executor."""
        return await Lifecycle.arun(self._load_op(model_id, level, device, context, pin, keep_alive_s, make_room,
                                                  allow_cpu, placement))

    def _id(self, model_id: str) -> str:
        if model_id in self._life.records:
            return model_id
        meta = self.model_registry.get_model(model_id)
        return meta.id if meta is not None else model_id

    def unload(self, model_id: str, *, reason: str = "unloaded on request") -> None:
        """Unload a model and release its memory. Unknown or unloaded models are a no-op; a pinned
        one is refused (:class:`PinnedModelError`)."""
        self._sync("unload")
        Lifecycle.run(self._life.unload(self._id(model_id), reason))

    async def aunload(self, model_id: str, *, reason: str = "unloaded on request") -> None:
        await Lifecycle.arun(self._life.unload(self._id(model_id), reason))

    def offload(self, model_id: str, *, reason: str = "offloaded on request") -> LoadedModel:
        """Move a loaded model's weights to system RAM (keeping it ready to restore)."""
        self._sync("offload")
        return Lifecycle.run(self._life.relocation.offload(self._id(model_id), reason))

    async def aoffload(self, model_id: str, *, reason: str = "offloaded on request") -> LoadedModel:
        return await Lifecycle.arun(self._life.relocation.offload(self._id(model_id), reason))

    def _restore_room(self, model_id: str, allowed: bool | None) -> Callable[[Placement], Any]:
        return self._admission.restore_room(self.request(model_id),
                                            self.settings.auto_swap if allowed is None else allowed)

    def restore(self, model_id: str, *, make_room: bool | None = None) -> LoadedModel:
        """Bring an offloaded model back to its GPU(s); ``make_room`` (default: the settings'
        auto_swap) lets the policy offload or unload idle models first."""
        self._sync("restore", "offload", "unload")
        mid = self._id(model_id)
        return Lifecycle.run(self._life.relocation.restore(mid, self._restore_room(mid, make_room)))

    async def arestore(self, model_id: str, *, make_room: bool | None = None) -> LoadedModel:
        mid = self._id(model_id)
        return await Lifecycle.arun(self._life.relocation.restore(mid, self._restore_room(mid, make_room)))

    def move(self, model_id: str, device: str, *, reason: str = "moved on request") -> LoadedModel:
        """Move a model loaded whole on one GPU to another GPU."""
        self._sync("offload", "restore", "unload", "load")
        return Lifecycle.run(self._life.relocation.move(self._id(model_id), device, reason))

    async def amove(self, model_id: str, device: str, *, reason: str = "moved on request") -> LoadedModel:
        return await Lifecycle.arun(self._life.relocation.move(self._id(model_id), device, reason))

    def pin(self, model_id: str, pinned: bool = True) -> None:
        """A pinned model is never evicted, expired, moved or re-quantized; only unpinning frees it."""
        self._life.set_pinned(self._id(model_id), pinned)

    def unpin(self, model_id: str) -> None:
        self.pin(model_id, False)

    def touch(self, model_id: str) -> None:
        """Mark a model as used now (resets its keep-alive)."""
        self._life.touch(self._id(model_id))

    def begin_use(self, model_id: str) -> None:
        """The model is working (BUSY): it cannot be evicted until :meth:`end_use`."""
        self._life.begin_use(self._id(model_id))

    def end_use(self, model_id: str) -> None:
        self._life.end_use(self._id(model_id))

    def free_memory(self, model_ids: Iterable[str], *, offload: bool = False) -> list[tuple[str, str]]:
        """Unload (or offload) several models a user named; pinned, busy or unloaded ones are left
        as they are and reported."""
        done = []
        for mid in model_ids:
            try:
                if offload:
                    self.offload(mid)
                    done.append((self._id(mid), "offloaded to RAM on request"))
                else:
                    self.unload(mid)
                    done.append((self._id(mid), "unloaded on request"))
            except (PinnedModelError, InvalidTransitionError, UnknownModelError, AllocationError) as err:
                done.append((self._id(mid), f"left as it is: {err}"))
        return done

    # --- keep-alive, pressure, timer ------------------------------------------------------------
    def tick(self, profile: HardwareProfile | None = None) -> None:
        """Expire idle models and watch pressure. Call it periodically (see :meth:`start`)."""
        self._upkeep.tick(profile)

    def preload(self) -> list[str]:
        """Load the settings' preload list (warm-up); returns what failed, each with its reason."""
        return self._upkeep.preload()

    def start(self, interval_s: float = 1.0) -> None:
        """Load the preload list, then run :meth:`tick` on a timer thread."""
        self.preload()
        self._upkeep.start(interval_s)

    def stop(self) -> None:
        self._upkeep.stop()

    # --- several models -------------------------------------------------------------------------
    def swap(self, old_id: str, new_id: str, *, level: QuantizationLevel | str | None = None,
             device: str | None = None, context: int | None = None) -> LoadedModel:
        """Replace ``old`` by ``new``; if ``new`` fails to load, ``old`` is loaded back as it was.
        A pinned ``old`` is refused."""
        return self._upkeep.swap(self._id(old_id), new_id, level=level, device=device, context=context)

    def plan_ensemble(self, models: Sequence[str | tuple[str, int]], *, device: str | None = None) -> EnsemblePlan:
        """Choose every model's level and GPU together so all fit at the best total quality.

        ``models`` are ids or (id, context) pairs; they are packed across all GPUs (or onto
        ``device``), counting what they already hold as free. Each item carries a Placement that
        ``load(placement=...)`` books.
        """
        items = [(m, None) if isinstance(m, str) else (m[0], m[1]) for m in models]
        metas = [(self._resolve(mid), ctx) for mid, ctx in items]
        view = self.ledger_view(exclude=[m.id for m, _ in metas])
        rooms = [r for r in view.devices if (r.device == device if device else r.is_gpu and r.total_bytes > 0)]
        if not rooms:
            rooms = [r for r in view.devices if r.device == "cpu"]
        return plan_ensemble(metas, rooms, self.settings.type_priority, self._policy)
