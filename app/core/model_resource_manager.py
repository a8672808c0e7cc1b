"""ModelResourceManager: the coordinator of models, memory and policy.

It plans where and at which level a model loads, books the memory, calls the host's loader, and
keeps to a policy: evict (offload to CPU, else unload) the least valuable models when a load does
not fit, never pinned ones; expire idle models after their keep-alive; cap how many are loaded;
plan several models together; swap one model for another with rollback; propose lower levels under
sustained pressure and higher ones when memory frees. Every decision is announced as an event with
its reason. The seed's API (``select_best_model``, ``prepare_model_loading``, ``cleanup_model``,
``check_memory_pressure``, ``model_registry``) runs as written.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Awaitable, Callable, Iterable, NamedTuple, Protocol, Sequence, runtime_checkable

from app.core.estimation import MemoryEstimate
from app.core.events import Signal
from app.core.hardware.snapshot import HardwareProfile
from app.core.hardware_profiler import HardwareProfiler
from app.core.memory_allocator import (
    AllocationError,
    AllocatorSettings,
    MemoryAllocation,
    MemoryAllocator,
    PressureLevel,
)
from app.core.model_registry import ModelMetadata, ModelProvider, ModelRegistry, ModelType
from app.core.quantization_strategy import (
    PlacementError,
    QuantizationConfig,
    QuantizationLevel,
    QuantizationPlan,
    QuantizationStrategy,
    candidate_levels,
    estimate_model,
    quality_of,
)
from app.core.units import format_gib, gib

__all__ = [
    "EnsembleItem",
    "EnsemblePlan",
    "InsufficientMemoryError",
    "InvalidTransitionError",
    "LoadPreparation",
    "LoadedModel",
    "ManagerSettings",
    "ModelLoader",
    "ModelResourceManager",
    "ModelState",
    "QuantizationProposal",
    "ReservationLoader",
    "UnknownModelError",
]

_log = logging.getLogger(__name__)


class ModelState(str, Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    BUSY = "busy"
    OFFLOADED = "offloaded"
    UNLOADING = "unloading"
    FAILED = "failed"


_TRANSITIONS: dict[ModelState, frozenset[ModelState]] = {
    ModelState.UNLOADED: frozenset({ModelState.LOADING}),
    ModelState.LOADING: frozenset({ModelState.LOADED, ModelState.FAILED}),
    ModelState.LOADED: frozenset({ModelState.BUSY, ModelState.OFFLOADED, ModelState.UNLOADING}),
    ModelState.BUSY: frozenset({ModelState.LOADED}),
    ModelState.OFFLOADED: frozenset({ModelState.LOADED, ModelState.UNLOADING}),
    ModelState.UNLOADING: frozenset({ModelState.UNLOADED, ModelState.FAILED}),
    ModelState.FAILED: frozenset({ModelState.LOADING, ModelState.UNLOADED}),
}


class InvalidTransitionError(RuntimeError):
    """A lifecycle change the state machine does not allow (say, offloading a model that is loading)."""


class UnknownModelError(KeyError):
    """A model id the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its argument; this is a sentence
        return str(self.args[0])


class InsufficientMemoryError(AllocationError):
    """A load that does not fit even after the eviction policy did what it may."""

    def __init__(self, model_id: str, device: str, needed_bytes: int, available_bytes: int, why: str) -> None:
        super().__init__(model_id, device, needed_bytes, available_bytes)
        self.why = why
        self.args = (f"{self.args[0]} ({why})",)


@runtime_checkable
class ModelLoader(Protocol):
    """What a host plugs in to really load models. Each method may be sync or async.

    ``load`` returns a handle the manager passes back to the others. ``offload`` moves the weights
    to system RAM, ``restore`` brings them back to the device. A loader that cannot offload may
    raise ``NotImplementedError``: the manager then unloads instead.
    """

    def load(self, metadata: ModelMetadata, plan: QuantizationPlan) -> Any: ...

    def unload(self, model_id: str, handle: Any) -> Any: ...

    def offload(self, model_id: str, handle: Any) -> Any: ...

    def restore(self, model_id: str, handle: Any, device: str) -> Any: ...


class ReservationLoader:
    """Books memory only: for a host that loads models itself after asking the manager."""

    def load(self, metadata: ModelMetadata, plan: QuantizationPlan) -> Any:
        return None

    def unload(self, model_id: str, handle: Any) -> None:
        return None

    def offload(self, model_id: str, handle: Any) -> None:
        return None

    def restore(self, model_id: str, handle: Any, device: str) -> None:
        return None


_DEFAULT_PRIORITY = {
    ModelType.LLM: 50,
    ModelType.TEXT_TO_IMAGE: 40,
    ModelType.TEXT_TO_VIDEO: 40,
    ModelType.SPEECH_TO_TEXT: 30,
    ModelType.TEXT_TO_SPEECH: 30,
    ModelType.EMBEDDING: 20,
}


@dataclass(frozen=True)
class ManagerSettings:
    """Policy knobs. ``keep_alive_s``: 0 unloads as soon as a model is idle, -1 never expires."""

    keep_alive_s: float = 300.0
    max_loaded_models: int | None = None
    auto_swap: bool = True
    #: Higher stays loaded longer; evicted lowest first.
    type_priority: dict[ModelType, int] = field(default_factory=lambda: dict(_DEFAULT_PRIORITY))
    #: Models loaded by ``start()``: ids, or (id, level) pairs.
    preload: tuple[str | tuple[str, str], ...] = ()
    #: Consecutive pressure readings before a lower level is proposed (and back up).
    requantize_after_ticks: int = 5
    #: Apply proposals (reload at the new level) instead of only announcing them.
    auto_requantize: bool = False
    allocator: AllocatorSettings = field(default_factory=AllocatorSettings)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model the manager holds, as views and scripts see it."""

    model_id: str
    name: str
    model_type: ModelType
    state: ModelState
    device: str
    quantization: str
    reserved_bytes: int
    gpu_layers: int | None
    pinned: bool
    keep_alive_s: float
    #: Monotonic time when it expires if still idle; None when it never does.
    expires_at: float | None
    last_used: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "name": self.name, "model_type": self.model_type.value,
                "state": self.state.value, "device": self.device, "quantization": self.quantization,
                "reserved_bytes": self.reserved_bytes, "gpu_layers": self.gpu_layers, "pinned": self.pinned,
                "keep_alive_s": self.keep_alive_s, "reason": self.reason}


class LoadPreparation(NamedTuple):
    """``prepare_model_loading``'s answer; unpacks as the seed's (metadata, quantization, allocation)."""

    metadata: ModelMetadata
    quantization: QuantizationConfig
    allocation: MemoryAllocation

    @property
    def can_load(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class EnsembleItem:
    model_id: str
    quantization: str
    device: str
    estimate: MemoryEstimate
    quality_ppl: float


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    """Levels chosen together so every model fits at the best total quality, or why not."""

    feasible: bool
    items: tuple[EnsembleItem, ...]
    total_bytes: int
    available_bytes: dict[str, int]
    reason: str


@dataclass(frozen=True, slots=True)
class QuantizationProposal:
    """A suggestion to reload a model at another level (down under pressure, up when memory frees)."""

    model_id: str
    current: str
    proposed: str
    frees_bytes: int
    reason: str


@dataclass
class _Record:
    metadata: ModelMetadata
    state: ModelState = ModelState.UNLOADED
    device: str = ""
    plan: QuantizationPlan | None = None
    quantization: str = ""
    preferred: str | None = None
    handle: Any = None
    pinned: bool = False
    keep_alive_s: float = 300.0
    last_used: float = 0.0
    loaded_at: float = 0.0
    busy: int = 0
    reason: str | None = None
    context: int | None = None
    #: Where an offloaded model came from, to restore it there.
    home_device: str = ""


class ModelResourceManager:
    """Central coordinator for model resources.

    ``ModelResourceManager()`` with no arguments is the shared instance (as in the seed); any
    argument makes an isolated manager (tests, or a host with its own loader)::

        manager = ModelResourceManager(loader=MyLoader(), profiler=HardwareProfiler(simulate="rtx3060"))

    Signals (plain Python, fired on the calling thread, never under the lock):
        model_state_changed(model_id, old, new)
        allocation_changed(device)
        pressure_changed(device, level)
        evicted(model_id, reason)
        plan_ready(plan)
        quantization_proposed(proposal)
    """

    _shared: "ModelResourceManager | None" = None
    _shared_lock = threading.Lock()

    def __new__(cls, *args: Any, **kwargs: Any) -> "ModelResourceManager":
        if args or kwargs:
            return super().__new__(cls)
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = super().__new__(cls)
            return cls._shared

    def __init__(
        self,
        *,
        profiler: HardwareProfiler | None = None,
        registry: ModelRegistry | None = None,
        strategy: QuantizationStrategy | None = None,
        allocator: MemoryAllocator | None = None,
        loader: ModelLoader | None = None,
        settings: ManagerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if getattr(self, "_initialized", False):
            return
        self.logger = _log
        self.settings = settings or ManagerSettings()
        self.hardware_profiler = profiler or HardwareProfiler()
        self.model_registry = registry or ModelRegistry()
        self.quantization_strategy = strategy or QuantizationStrategy()
        self.loader: ModelLoader = loader or ReservationLoader()
        self._clock = clock
        self._lock = threading.RLock()
        self._records: dict[str, _Record] = {}
        self._pressure_streak: dict[str, int] = {}
        self._calm_streak: dict[str, int] = {}
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()
        self.model_state_changed: Signal[Callable[[str, ModelState, ModelState], None]] = Signal("model_state_changed")
        self.evicted: Signal[Callable[[str, str], None]] = Signal("evicted")
        self.plan_ready: Signal[Callable[[QuantizationPlan], None]] = Signal("plan_ready")
        self.quantization_proposed: Signal[Callable[[QuantizationProposal], None]] = Signal("quantization_proposed")
        profile = self.hardware_profiler.get_profile()
        self.memory_allocator = allocator or MemoryAllocator(profile, settings=self.settings.allocator, clock=clock)
        if allocator is not None:
            allocator.update(profile)
        self.allocation_changed = self.memory_allocator.allocation_changed
        self.pressure_changed = self.memory_allocator.pressure_changed
        self._initialized = True
        self.logger.info("hardware: %d GPU(s), %s RAM available", len(profile.gpus),
                         format_gib(profile.host.available_bytes))

    @classmethod
    def configure_shared(cls, **kwargs: Any) -> "ModelResourceManager":
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

    # --- the seed's API ------------------------------------------------------------------------
    @property
    def registry(self) -> ModelRegistry:
        return self.model_registry

    def select_best_model(self, provider: ModelProvider | str | None = None,
                          model_type: ModelType | str | None = None) -> ModelMetadata | None:
        """The largest model of this provider and type that fits the hardware now."""
        return self.model_registry.select_best_model(provider, model_type, self._measure(),
                                                     self.quantization_strategy)

    def prepare_model_loading(
        self,
        model_id: str,
        model_type: str = "llm",
        preferred_quantization: QuantizationLevel | str | None = None,
        *,
        context: int | None = None,
        device: str | None = None,
    ) -> LoadPreparation:
        """Plan and book a model the host will load itself: ``(metadata, quantization, allocation)``.

        Makes room by the eviction policy when needed. Raises :class:`UnknownModelError` for an id
        the registry does not know and :class:`InsufficientMemoryError` (or ``PlacementError`` for
        a preferred level that cannot fit) when it cannot be placed.
        """
        loaded = self.load(model_id, preferred_quantization, device, context=context)
        record = self._records[loaded.model_id]
        plan = record.plan
        assert plan is not None
        spec_level = QuantizationLevel.parse(plan.quantization)
        config = QuantizationConfig(level=spec_level, description=plan.reason,
                                    estimated_memory_gb=gib(plan.estimate.total_bytes),
                                    requires_calibration=plan.quantization in ("int2", "gptq-int4", "awq-int4"),
                                    estimate=plan.estimate, plan=plan)
        allocation = self.memory_allocator.allocation_of(loaded.model_id)
        assert allocation is not None
        return LoadPreparation(record.metadata, config, allocation)

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

    def planning_strategy(self) -> QuantizationStrategy:
        """A strategy that judges fit against this manager's ledger (for views that plan)."""
        return _LedgerStrategy(self)

    def free_for_planning(self, exclude: Iterable[str] = ()) -> dict[str, int]:
        """Bookable bytes per device, counting what the ``exclude`` models hold as free."""
        return self._free_for_planning(exclude)

    def _free_for_planning(self, exclude: Iterable[str] = ()) -> dict[str, int]:
        """Available bytes per device from the ledger, plus what the excluded models hold."""
        free = {l.device: l.available_bytes for l in self.memory_allocator.snapshot()}
        for mid in exclude:
            for r in self.memory_allocator.reservations(model_id=mid):
                free[r.device] = free.get(r.device, 0) + r.total_bytes
        return free

    def _overhead_booked(self, device: str, exclude: str | None = None) -> bool:
        return any(r.category("overhead") > 0 for r in self.memory_allocator.reservations(device)
                   if r.model_id != exclude)

    def plan(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None, *,
             context: int | None = None, evictable: bool = False) -> QuantizationPlan:
        """How a model would load now, against the ledger (what is booked and what is measured).

        With ``evictable``, memory held by models the policy may evict counts as free.
        """
        metadata = self._resolve(model_id)
        profile = self.memory_allocator.hardware or self._measure()
        exclude = [metadata.id]
        if evictable:
            exclude += [r.metadata.id for r in self._eviction_order(exclude_id=metadata.id, device=None)]
        free = self._free_for_planning(exclude)
        plan = self.quantization_strategy.plan(metadata, profile, preferred=level, device=device, context=context,
                                               free_overrides=free, headroom=False)
        self.plan_ready.emit(plan)
        return plan

    # --- lifecycle -----------------------------------------------------------------------------
    def _set_state(self, record: _Record, new: ModelState, reason: str | None = None) -> tuple[str, ModelState, ModelState]:
        old = record.state
        if new not in _TRANSITIONS[old]:
            raise InvalidTransitionError(
                f"{record.metadata.id} cannot go from {old.value} to {new.value}")
        record.state = new
        if reason is not None or new != ModelState.FAILED:
            record.reason = reason
        return (record.metadata.id, old, new)

    def _emit(self, transitions: Iterable[tuple[str, ModelState, ModelState]] = (),
              evictions: Iterable[tuple[str, str]] = ()) -> None:
        for mid, old, new in transitions:
            self.model_state_changed.emit(mid, old, new)
        for mid, reason in evictions:
            self.logger.info("evicted %s: %s", mid, reason)
            self.evicted.emit(mid, reason)

    def load(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None, *,
             context: int | None = None, pin: bool = False, keep_alive_s: float | None = None) -> LoadedModel:
        """Plan, make room, book and load a model (the loader may be sync or async).

        Call :meth:`aload` from a running event loop when the loader is async.
        """
        transitions, evictions, record, plan = self._begin_load(model_id, level, device, context, pin, keep_alive_s)
        self._emit(transitions, evictions)
        if plan is None:
            with self._lock:
                return self._snapshot(record)
        try:
            handle = _run_sync(self.loader.load(record.metadata, plan))
        except BaseException as err:  # noqa: BLE001 - any loader failure rolls back
            self._fail_load(record, err)
            raise
        return self._finish_load(record, handle)

    async def aload(self, model_id: str, level: QuantizationLevel | str | None = None, device: str | None = None, *,
                    context: int | None = None, pin: bool = False, keep_alive_s: float | None = None) -> LoadedModel:
        """:meth:`load` for event loops: planning is quick; a blocking loader runs in an executor."""
        transitions, evictions, record, plan = self._begin_load(model_id, level, device, context, pin, keep_alive_s)
        self._emit(transitions, evictions)
        if plan is None:
            with self._lock:
                return self._snapshot(record)
        try:
            if inspect.iscoroutinefunction(self.loader.load):
                handle = await self.loader.load(record.metadata, plan)
            else:
                loop = asyncio.get_running_loop()
                handle = await loop.run_in_executor(None, self.loader.load, record.metadata, plan)
                if inspect.isawaitable(handle):
                    handle = await handle
        except BaseException as err:  # noqa: BLE001
            self._fail_load(record, err)
            raise
        return self._finish_load(record, handle)

    def _begin_load(self, model_id: str, level: Any, device: str | None, context: int | None, pin: bool,
                    keep_alive_s: float | None) -> tuple[list, list, _Record, QuantizationPlan | None]:
        """Plan, evict and book under the lock; the plan is None when the model is already loaded."""
        metadata = self._resolve(model_id)
        transitions: list = []
        evictions: list = []
        with self._lock:
            record = self._records.get(metadata.id)
            if record is not None and record.state in (ModelState.LOADED, ModelState.BUSY, ModelState.LOADING):
                if level is None or QuantizationLevel.parse(level) == QuantizationLevel.parse(record.quantization):
                    record.last_used = self._clock()
                    record.pinned = record.pinned or pin
                    if keep_alive_s is not None:
                        record.keep_alive_s = keep_alive_s
                    return transitions, evictions, record, None
                raise InvalidTransitionError(f"{metadata.id} is already {record.state.value} at {record.quantization}; "
                                             "unload it first or use swap()")
            if record is not None and record.state == ModelState.OFFLOADED:
                raise InvalidTransitionError(f"{metadata.id} is offloaded to the CPU; restore() it instead")
            profile = self.memory_allocator.hardware or self._measure()
            # Cap on loaded models: evict the least valuable first.
            cap = self.settings.max_loaded_models
            if cap is not None and self._loaded_count() >= cap:
                victims = self._eviction_order(exclude_id=metadata.id, device=None)
                if not victims:
                    raise InsufficientMemoryError(metadata.id, device or "any", 0, 0,
                                                  f"{cap} models are loaded (the cap) and all are pinned or busy")
                evictions += self._evict_locked(victims[:1], f"the cap of {cap} loaded models was reached "
                                                f"and {metadata.name} was asked for", transitions, to_cpu=False)
            free_now = self._free_for_planning([metadata.id])
            try:
                plan: QuantizationPlan | None = self.quantization_strategy.plan(
                    metadata, profile, preferred=level, device=device, context=context, free_overrides=free_now,
                    headroom=False)
            except PlacementError as err:
                if not (self.settings.auto_swap and err.needed_bytes):
                    raise
                plan = None  # a preferred level that does not fit now: see whether eviction makes room
            if (plan is None or plan.placement not in ("gpu", "cpu")) and self.settings.auto_swap:
                plan, more = self._make_room_for(metadata, level, device, context, profile, transitions)
                evictions += more
            assert plan is not None
            if plan.placement == "none":
                raise InsufficientMemoryError(metadata.id, plan.device, plan.needed_bytes, plan.available_bytes,
                                              plan.reason)
            record = record or _Record(metadata=metadata)
            record.metadata = metadata
            self._records[metadata.id] = record
            self._book_locked(record, plan)
            transitions.append(self._set_state(record, ModelState.LOADING))
            record.plan = plan
            record.quantization = plan.quantization
            record.preferred = record.preferred or (str(QuantizationLevel.parse(level).value) if level else None)
            record.pinned = record.pinned or pin
            record.keep_alive_s = self.settings.keep_alive_s if keep_alive_s is None else keep_alive_s
            record.context = context
            record.reason = plan.reason
        self.plan_ready.emit(plan)
        return transitions, evictions, record, plan

    def _bookings(self, metadata: ModelMetadata, plan: QuantizationPlan) -> dict[str, dict[str, int]]:
        """What a plan books on each device: weights and cache by layer share; each GPU pays its own
        compute buffer, and the runtime overhead only where no other model already paid it."""
        mid = metadata.id
        est = plan.estimate

        def gpu_overhead(device: str) -> int:
            return 0 if self._overhead_booked(device, mid) else est.overhead_bytes

        if plan.placement in ("split", "partial") and plan.gpu_layers is not None:
            layers = metadata.estimation_architecture.layers  # type: ignore[union-attr]
            shares = list(plan.layer_split) or [(plan.device.split("+")[0], plan.gpu_layers)]
            out: dict[str, dict[str, int]] = {}
            for device, n in shares:
                out[device] = {"weights": est.weights_bytes * n // layers, "kv_cache": est.kv_cache_bytes * n // layers,
                               "compute": est.compute_bytes, "overhead": gpu_overhead(device)}
            on_gpus = sum(n for _, n in shares)
            if on_gpus < layers:  # the rest of the layers in RAM
                out["cpu"] = {"weights": est.weights_bytes - sum(p["weights"] for p in out.values()),
                              "kv_cache": est.kv_cache_bytes - sum(p["kv_cache"] for p in out.values())}
            return out
        if plan.device == "cpu":
            return {"cpu": dict(zip(("weights", "kv_cache", "compute", "overhead"),
                                    (est.weights_bytes, est.kv_cache_bytes, est.compute_bytes, est.overhead_bytes)))}
        return {plan.device: {"weights": est.weights_bytes, "kv_cache": est.kv_cache_bytes,
                              "compute": est.compute_bytes, "overhead": gpu_overhead(plan.device)}}

    def _book_locked(self, record: _Record, plan: QuantizationPlan) -> None:
        """Book every device of a plan, or none (a refusal on one device releases the others)."""
        mid = record.metadata.id
        try:
            for device, parts in self._bookings(record.metadata, plan).items():
                self.memory_allocator.reserve(mid, device, parts)
        except AllocationError:
            self.memory_allocator.release(mid)
            raise
        record.device = plan.device

    def _finish_load(self, record: _Record, handle: Any) -> LoadedModel:
        with self._lock:
            if record.state != ModelState.LOADING:  # an already-loaded model asked again
                return self._snapshot(record)
            record.handle = handle
            now = self._clock()
            record.loaded_at = record.last_used = now
            t = self._set_state(record, ModelState.LOADED, record.reason)
            self.memory_allocator.set_state(record.metadata.id, "loaded")
            snap = self._snapshot(record)
        self._emit([t])
        return snap

    def _fail_load(self, record: _Record, err: BaseException) -> None:
        with self._lock:
            self.memory_allocator.release(record.metadata.id)
            reason = f"load failed: {err!r}"
            t = self._set_state(record, ModelState.FAILED, reason)
            record.handle = None
        self.logger.error("%s: %s", record.metadata.id, reason)
        self._emit([t])

    def unload(self, model_id: str, *, reason: str = "unloaded on request") -> None:
        """Unload a model and release its memory. Unknown or unloaded models are a no-op."""
        with self._lock:
            record = self._find(model_id)
            if record is None or record.state in (ModelState.UNLOADED,):
                return
            if record.state == ModelState.FAILED:
                t = [self._set_state(record, ModelState.UNLOADED, None)]
                self.memory_allocator.release(record.metadata.id)
                self._records.pop(record.metadata.id, None)
                self._emit(t)
                return
            if record.state == ModelState.BUSY:
                raise InvalidTransitionError(f"{record.metadata.id} is busy; wait until it is idle (end_use)")
            transitions: list = []
            self._unload_locked(record, transitions, reason)
        self._emit(transitions)

    def _unload_locked(self, record: _Record, transitions: list, reason: str) -> None:
        transitions.append(self._set_state(record, ModelState.UNLOADING))
        try:
            _run_sync(self.loader.unload(record.metadata.id, record.handle))
        except BaseException as err:  # noqa: BLE001
            transitions.append(self._set_state(record, ModelState.FAILED, f"unload failed: {err!r}"))
            self.logger.error("unloading %s failed: %r", record.metadata.id, err)
            return
        self.memory_allocator.release(record.metadata.id)
        transitions.append(self._set_state(record, ModelState.UNLOADED, reason))
        record.handle = None
        self._records.pop(record.metadata.id, None)

    def offload(self, model_id: str, *, reason: str = "offloaded on request") -> LoadedModel:
        """Move a loaded model's weights to system RAM (keeping it ready to restore)."""
        with self._lock:
            record = self._require(model_id)
            transitions: list = []
            self._offload_locked(record, transitions, reason)
            snap = self._snapshot(record)
        self._emit(transitions)
        return snap

    def _offload_locked(self, record: _Record, transitions: list, reason: str) -> None:
        if record.state != ModelState.LOADED:
            raise InvalidTransitionError(f"{record.metadata.id} is {record.state.value}; only a loaded model can be offloaded")
        if record.device == "cpu":
            raise InvalidTransitionError(f"{record.metadata.id} already runs on the CPU")
        mid = record.metadata.id
        weights = sum(r.category("weights") for r in self.memory_allocator.reservations(model_id=mid))
        cpu_avail = self.memory_allocator.available_bytes("cpu")
        cpu_now = sum(r.total_bytes for r in self.memory_allocator.reservations("cpu", mid))
        if weights - cpu_now > cpu_avail:
            raise InsufficientMemoryError(mid, "cpu", weights, cpu_avail, "not enough RAM to offload to")
        _run_sync(self.loader.offload(mid, record.handle))
        self.memory_allocator.release(mid)
        self.memory_allocator.reserve(mid, "cpu", {"weights": weights}, state="offloaded", force=True)
        record.home_device = record.device.split("+")[0]
        record.device = "cpu"
        transitions.append(self._set_state(record, ModelState.OFFLOADED, reason))

    def restore(self, model_id: str) -> LoadedModel:
        """Bring an offloaded model back to its GPU(s), making room by the policy if needed."""
        transitions: list = []
        evictions: list = []
        error: AllocationError | None = None
        with self._lock:
            record = self._require(model_id)
            if record.state != ModelState.OFFLOADED or record.plan is None:
                raise InvalidTransitionError(f"{record.metadata.id} is {record.state.value}, not offloaded")
            mid = record.metadata.id
            device = record.home_device or record.plan.device.split("+")[0]
            self.memory_allocator.release(mid, "cpu")
            try:
                for target, parts in self._bookings(record.metadata, record.plan).items():
                    needed, free = sum(parts.values()), self.memory_allocator.available_bytes(target)
                    if needed > free and self.settings.auto_swap:
                        victims = self._choose_victims(target, needed - free, mid)
                        evictions += self._evict_locked(victims, f"to restore {record.metadata.name} to {target}",
                                                        transitions)
                self._book_locked(record, record.plan)
            except AllocationError as err:  # still no room: it stays offloaded
                weights = record.plan.estimate.weights_bytes
                self.memory_allocator.reserve(mid, "cpu", {"weights": weights}, state="offloaded", force=True)
                record.device = "cpu"
                error = err
            else:
                _run_sync(self.loader.restore(mid, record.handle, device))
                self.memory_allocator.set_state(mid, "loaded")
                record.last_used = self._clock()
                transitions.append(self._set_state(record, ModelState.LOADED, f"restored to {record.device}"))
            snap = self._snapshot(record)
        self._emit(transitions, evictions)
        if error is not None:
            raise error
        return snap

    def pin(self, model_id: str, pinned: bool = True) -> None:
        """A pinned model is never evicted nor expired."""
        with self._lock:
            self._require(model_id).pinned = pinned

    def unpin(self, model_id: str) -> None:
        self.pin(model_id, False)

    def touch(self, model_id: str) -> None:
        """Mark a model as used now (resets its keep-alive)."""
        with self._lock:
            self._require(model_id).last_used = self._clock()

    def begin_use(self, model_id: str) -> None:
        """The model is working (BUSY): it cannot be evicted until :meth:`end_use`."""
        with self._lock:
            record = self._require(model_id)
            t = []
            if record.busy == 0:
                t.append(self._set_state(record, ModelState.BUSY))
            record.busy += 1
            record.last_used = self._clock()
        self._emit(t)

    def end_use(self, model_id: str) -> None:
        with self._lock:
            record = self._require(model_id)
            if record.busy == 0:
                raise InvalidTransitionError(f"{record.metadata.id} is not busy")
            record.busy -= 1
            record.last_used = self._clock()
            t = [self._set_state(record, ModelState.LOADED)] if record.busy == 0 else []
        self._emit(t)

    def _find(self, model_id: str) -> _Record | None:
        record = self._records.get(model_id)
        if record is None:
            metadata = self.model_registry.get_model(model_id)
            record = self._records.get(metadata.id) if metadata else None
        return record

    def _require(self, model_id: str) -> _Record:
        record = self._find(model_id)
        if record is None:
            raise UnknownModelError(f"{model_id!r} is not loaded")
        return record

    # --- what is loaded -------------------------------------------------------------------------
    def _snapshot(self, r: _Record) -> LoadedModel:
        reserved = sum(x.total_bytes for x in self.memory_allocator.reservations(model_id=r.metadata.id))
        never = r.pinned or r.keep_alive_s < 0
        expires = None if never else r.last_used + r.keep_alive_s
        layers = r.plan.gpu_layers if r.plan else None
        return LoadedModel(r.metadata.id, r.metadata.name, r.metadata.model_type, r.state, r.device, r.quantization,
                           reserved, layers, r.pinned, r.keep_alive_s, expires, r.last_used, r.reason)

    def loaded_models(self) -> tuple[LoadedModel, ...]:
        """Every model the manager holds (loading, loaded, busy, offloaded or failed)."""
        with self._lock:
            return tuple(self._snapshot(r) for r in self._records.values())

    def state_of(self, model_id: str) -> ModelState:
        with self._lock:
            record = self._find(model_id)
            return record.state if record else ModelState.UNLOADED

    def _loaded_count(self) -> int:
        return sum(1 for r in self._records.values()
                   if r.state in (ModelState.LOADED, ModelState.BUSY, ModelState.LOADING))

    # --- eviction -------------------------------------------------------------------------------
    def _priority(self, r: _Record) -> int:
        return self.settings.type_priority.get(r.metadata.model_type, 0)

    def _eviction_order(self, exclude_id: str | None, device: str | None) -> list[_Record]:
        """Evictable models, least valuable first: lowest priority, least recently used, largest."""
        candidates = [
            r for r in self._records.values()
            if r.state == ModelState.LOADED and not r.pinned and r.metadata.id != exclude_id
            and (device is None or device in r.device.split("+"))
        ]
        size = {r.metadata.id: sum(x.total_bytes for x in self.memory_allocator.reservations(model_id=r.metadata.id))
                for r in candidates}
        return sorted(candidates, key=lambda r: (self._priority(r), r.last_used, -size[r.metadata.id]))

    def _choose_victims(self, device: str, shortfall: int, exclude_id: str | None) -> list[_Record]:
        """The fewest models, in policy order, whose bookings on ``device`` cover ``shortfall``."""
        order = self._eviction_order(exclude_id, device)
        freed = {r.metadata.id: sum(x.total_bytes for x in self.memory_allocator.reservations(device, r.metadata.id))
                 for r in order}
        chosen: list[_Record] = []
        total = 0
        for r in order:
            if total >= shortfall:
                break
            chosen.append(r)
            total += freed[r.metadata.id]
        if total < shortfall:
            return []
        # Only as much as needed: drop models (most valuable first) the others already cover.
        for r in reversed(list(chosen)):
            if total - freed[r.metadata.id] >= shortfall:
                chosen.remove(r)
                total -= freed[r.metadata.id]
        return chosen

    def _evict_locked(self, victims: Sequence[_Record], why: str, transitions: list,
                      to_cpu: bool = True) -> list[tuple[str, str]]:
        out = []
        for r in victims:
            idle = self._clock() - r.last_used
            detail = (f"{why}; chosen as {r.metadata.model_type.value} (priority {self._priority(r)}), "
                      f"idle {idle:.0f} s, holding {format_gib(self._held(r), 2)}")
            if to_cpu and r.device != "cpu":
                try:
                    self._offload_locked(r, transitions, f"offloaded to the CPU: {why}")
                    out.append((r.metadata.id, f"offloaded to the CPU {detail}"))
                    continue
                except (InsufficientMemoryError, NotImplementedError, InvalidTransitionError):
                    pass
            self._unload_locked(r, transitions, f"evicted: {why}")
            out.append((r.metadata.id, f"unloaded {detail}"))
        return out

    def _held(self, r: _Record) -> int:
        return sum(x.total_bytes for x in self.memory_allocator.reservations(model_id=r.metadata.id))

    def _make_room_for(self, metadata: ModelMetadata, level: Any, device: str | None, context: int | None,
                       profile: HardwareProfile, transitions: list) -> tuple[QuantizationPlan, list]:
        """Plan as if every evictable model were gone, then evict only what that plan needs."""
        def plan_with(free: dict[str, int]) -> QuantizationPlan:
            return self.quantization_strategy.plan(metadata, profile, preferred=level, device=device,
                                                   context=context, free_overrides=free, headroom=False)

        victims_all = self._eviction_order(exclude_id=metadata.id, device=None)
        actual = self._free_for_planning([metadata.id])
        if not victims_all:
            return plan_with(actual), []
        # Plan as if every evictable model were gone (raises PlacementError if even that is not enough).
        plan = plan_with(self._free_for_planning([metadata.id, *(r.metadata.id for r in victims_all)]))
        if plan.placement not in ("gpu", "cpu"):
            return plan_with(actual), []  # eviction would not make it fit whole: leave the others be
        evictions: list = []
        for target, parts in self._bookings(metadata, plan).items():
            needed = sum(parts.values())
            available = self.memory_allocator.available_bytes(target)
            if needed <= available:
                continue
            victims = self._choose_victims(target, needed - available, metadata.id)
            why = (f"to make room for {metadata.name} at {plan.quantization} on {target} "
                   f"(needed {format_gib(needed, 2)}, {format_gib(available, 2)} was free)")
            evictions += self._evict_locked(victims, why, transitions)
        return plan, evictions

    def free_memory(self, model_ids: Iterable[str], *, offload: bool = False) -> list[tuple[str, str]]:
        """Unload (or offload) several models at once, as a user asked."""
        transitions: list = []
        evictions: list = []
        with self._lock:
            for mid in model_ids:
                r = self._find(mid)
                if r is None or r.state != ModelState.LOADED:
                    continue
                if offload:
                    self._offload_locked(r, transitions, "offloaded on request")
                    evictions.append((r.metadata.id, "offloaded to the CPU on request"))
                else:
                    self._unload_locked(r, transitions, "unloaded on request")
                    evictions.append((r.metadata.id, "unloaded on request"))
        self._emit(transitions, evictions)
        return evictions

    # --- keep-alive, pressure, timer ------------------------------------------------------------
    def tick(self, profile: HardwareProfile | None = None) -> None:
        """Expire idle models and watch pressure. Call it periodically (see :meth:`start`)."""
        if profile is not None:
            self.memory_allocator.update(profile)
        now = self._clock()
        transitions: list = []
        evictions: list = []
        with self._lock:
            for r in list(self._records.values()):
                if r.state != ModelState.LOADED or r.pinned or r.keep_alive_s < 0:
                    continue
                if now - r.last_used >= r.keep_alive_s:
                    self._unload_locked(r, transitions, f"keep-alive of {r.keep_alive_s:g} s expired")
                    evictions.append((r.metadata.id, f"idle longer than its keep-alive ({r.keep_alive_s:g} s)"))
        self._emit(transitions, evictions)
        for proposal in self._requantize_proposals():
            self.quantization_proposed.emit(proposal)
            if self.settings.auto_requantize:
                self._apply_proposal(proposal)

    def preload(self) -> list[str]:
        """Load the settings' preload list (warm-up); returns what failed, each with its reason."""
        failed = []
        for item in self.settings.preload:
            mid, level = (item, None) if isinstance(item, str) else item
            try:
                self.load(mid, level, keep_alive_s=-1)
            except (UnknownModelError, AllocationError, PlacementError) as err:
                self.logger.error("preloading %s failed: %s", mid, err)
                failed.append(f"{mid}: {err}")
        return failed

    def start(self, interval_s: float = 1.0) -> None:
        """Load the preload list, then run :meth:`tick` on a timer thread."""
        self.preload()
        if self._timer is not None and self._timer.is_alive():
            return
        self._timer_stop.clear()

        def run() -> None:
            while not self._timer_stop.wait(interval_s):
                try:
                    self.tick(self.hardware_profiler.get_profile())
                except Exception:  # noqa: BLE001 - the timer outlives any one failure
                    self.logger.exception("manager tick failed")

        self._timer = threading.Thread(target=run, name="modeldeck-manager", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        self._timer_stop.set()
        if self._timer is not None:
            self._timer.join(5.0)
        self._timer = None

    # --- dynamic quantization -------------------------------------------------------------------
    def _requantize_proposals(self) -> list[QuantizationProposal]:
        n = self.settings.requantize_after_ticks
        out: list[QuantizationProposal] = []
        ledgers = {l.device: l for l in self.memory_allocator.snapshot()}
        with self._lock:
            for device, ledger in ledgers.items():
                if ledger.total_bytes <= 0:
                    continue
                high = ledger.pressure.rank >= PressureLevel.HIGH.rank
                calm = ledger.pressure == PressureLevel.OK
                self._pressure_streak[device] = self._pressure_streak.get(device, 0) + 1 if high else 0
                self._calm_streak[device] = self._calm_streak.get(device, 0) + 1 if calm else 0
                on_device = [r for r in self._records.values() if r.state == ModelState.LOADED and r.device == device]
                if self._pressure_streak[device] == n:
                    for r in sorted(on_device, key=self._priority):
                        p = self._step(r, down=True)
                        if p:
                            out.append(p)
                            break
                if self._calm_streak[device] == n:
                    for r in sorted(on_device, key=self._priority, reverse=True):
                        p = self._step(r, down=False, room=ledger.available_bytes)
                        if p:
                            out.append(p)
                            break
        return out

    def _step(self, r: _Record, *, down: bool, room: int = 0) -> QuantizationProposal | None:
        levels = list(candidate_levels(r.metadata))
        if r.quantization not in levels:
            return None
        i = levels.index(r.quantization)
        current = estimate_model(r.metadata, r.quantization, context=r.context).total_bytes
        others = levels[i + 1:] if down else list(reversed(levels[:i]))
        for lv in others:
            size = estimate_model(r.metadata, lv, context=r.context).total_bytes
            if down and size < current:
                return QuantizationProposal(r.metadata.id, r.quantization, lv, current - size,
                                            f"{r.device} under sustained pressure: {lv} frees {format_gib(current - size, 2)}")
            if not down and size - current <= room:
                if r.preferred and quality_of(lv)[0] < quality_of(r.preferred)[0]:
                    continue  # never above what the user asked for
                return QuantizationProposal(r.metadata.id, r.quantization, lv, current - size,
                                            f"memory is free on {r.device} again: back up to {lv}")
        return None

    def _apply_proposal(self, p: QuantizationProposal) -> None:
        record = self._find(p.model_id)
        if record is None or record.state != ModelState.LOADED:
            return
        try:
            self.swap(p.model_id, p.model_id, level=p.proposed)
        except Exception as err:  # noqa: BLE001 - a failed re-quantization leaves the old model loaded
            self.logger.warning("re-quantizing %s failed: %s", p.model_id, err)

    # --- several models -------------------------------------------------------------------------
    def swap(self, old_id: str, new_id: str, *, level: QuantizationLevel | str | None = None,
             device: str | None = None, context: int | None = None) -> LoadedModel:
        """Replace ``old`` by ``new``; if ``new`` fails to load, ``old`` is loaded back as it was."""
        with self._lock:
            old = self._require(old_id)
            keep = (old.metadata.id, old.quantization, old.home_device or old.device.split("+")[0], old.context,
                    old.pinned, old.keep_alive_s)
            preferred = old.preferred
            if old.state == ModelState.BUSY:
                raise InvalidTransitionError(f"{old.metadata.id} is busy; swap it when idle")
            transitions: list = []
            self._unload_locked(old, transitions, f"swapped out for {new_id}")
        self._emit(transitions, [(keep[0], f"swapped out for {new_id}")])
        try:
            loaded = self.load(new_id, level, device, context=context)
            if loaded.model_id == keep[0]:  # re-quantized in place: remember what the user first asked for
                with self._lock:
                    self._records[loaded.model_id].preferred = preferred
            return loaded
        except BaseException:
            mid, q, dev, ctx, pinned, ka = keep
            try:
                self.load(mid, q, dev if dev != "cpu" else None, context=ctx, pin=pinned, keep_alive_s=ka)
                self.logger.warning("swap to %s failed; %s was loaded back", new_id, mid)
            except Exception as err:  # noqa: BLE001
                self.logger.error("swap to %s failed and %s could not be loaded back: %s", new_id, mid, err)
            raise

    def plan_ensemble(self, models: Sequence[str | tuple[str, int]], *, device: str | None = None) -> EnsemblePlan:
        """Choose every model's level together so all fit at the best total quality.

        ``models`` are ids or (id, context) pairs. Models are placed on one device: ``device``, or
        the GPU with the most room (or the CPU where there is none). Quality is the summed
        perplexity increase, weighted by model-type priority; the search keeps only the Pareto
        front of (bytes, loss) pairs, so it is exact and quick.
        """
        items = [(m, None) if isinstance(m, str) else (m[0], m[1]) for m in models]
        metas = [(self._resolve(mid), ctx) for mid, ctx in items]
        profile = self.memory_allocator.hardware or self._measure()
        free = self._free_for_planning([m.id for m, _ in metas])
        gpus = [g.device_id for g in profile.gpus if not g.lost and g.mig_parent is None]
        target = device or (max(gpus, key=lambda d: free.get(d, 0)) if gpus else "cpu")
        budget = free.get(target, 0)
        kind = "cpu" if target == "cpu" else "gpu"
        overhead_paid = self._overhead_booked(target)
        fronts: list[list[tuple[int, float, tuple[tuple[str, MemoryEstimate], ...]]]] = []
        for n, (meta, ctx) in enumerate(metas):
            weight = 1 + self.settings.type_priority.get(meta.model_type, 0) / 50
            options = []
            for lv in candidate_levels(meta):
                est = estimate_model(meta, lv, context=ctx, device_kind=kind)
                if overhead_paid or n > 0:
                    est = est.without_overhead()
                options.append((est.total_bytes, quality_of(lv)[0] * weight, ((lv, est),)))
            fronts.append(_pareto(options))
        combined = [(0, 0.0, ())]
        for front in fronts:
            merged = [(b1 + b2, l1 + l2, c1 + c2) for (b1, l1, c1), (b2, l2, c2) in itertools.product(combined, front)
                      if b1 + b2 <= budget]
            combined = _pareto(merged)
            if not combined:
                break
        minimum = sum(min(o[0] for o in f) for f in fronts)
        if not combined:
            smallest = ", ".join(f"{meta.name} {min(f, key=lambda o: o[0])[2][0][0]} "
                                 f"{format_gib(min(o[0] for o in f), 2)}" for (meta, _), f in zip(metas, fronts))
            return EnsemblePlan(False, (), minimum, {target: budget},
                                f"does not fit on {target}: even at the smallest levels ({smallest}) they need "
                                f"{format_gib(minimum, 2)} and {target} has {format_gib(budget, 2)} available")
        best = min(combined, key=lambda x: (x[1], x[0]))
        chosen = tuple(EnsembleItem(meta.id, lv, target, est, quality_of(lv)[0])
                       for (meta, _), (lv, est) in zip(metas, best[2]))
        return EnsemblePlan(True, chosen, best[0], {target: budget},
                            f"all {len(chosen)} fit on {target}: {format_gib(best[0], 2)} of {format_gib(budget, 2)} "
                            f"({', '.join(f'{i.model_id} {i.quantization}' for i in chosen)})")


class _LedgerStrategy(QuantizationStrategy):
    """Plans against the manager's ledger: bookings count, the allocator's reserve is the headroom."""

    def __init__(self, manager: ModelResourceManager) -> None:
        super().__init__(gpu_headroom_bytes=0, ram_headroom_bytes=0)
        self._manager = manager

    def usable_bytes(self, hardware: HardwareProfile, model_id: str | None = None) -> dict[str, int]:
        return self._manager.free_for_planning([model_id] if model_id else [])

    def plan(self, metadata: ModelMetadata, hardware: HardwareProfile, **kw: Any) -> QuantizationPlan:
        kw.setdefault("free_overrides", self.usable_bytes(hardware, metadata.id))
        kw["headroom"] = False
        return super().plan(metadata, hardware, **kw)


def _pareto(options: list) -> list:
    """Keep the (bytes, loss, …) options no other option beats on both."""
    out = []
    best_loss = float("inf")
    for opt in sorted(options, key=lambda o: (o[0], o[1])):
        if opt[1] < best_loss:
            out.append(opt)
            best_loss = opt[1]
    return out


def _run_sync(result: Any) -> Any:
    """Run an awaitable a sync caller got from a loader; plain values pass through."""
    if not inspect.isawaitable(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(result))
    raise RuntimeError("an async loader was called from a running event loop; use aload()")


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable

