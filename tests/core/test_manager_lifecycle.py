"""The manager's lifecycle under failing, slow and async loaders, several threads, and subscribers.

A hypothesis state machine drives a 2-GPU rig through loads, unloads, offloads, restores, moves,
pins, use and keep-alive while the loader fails, sleeps or turns async; after every step the
ledger is sound. Then the explicit cases: async from a running loop, each loader failure and what
it leaves, eight threads at once, loaders outside the lock, and events after it.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.lifecycle import TRANSITIONAL
from app.core.manager.loaders import AsyncLoaderInSyncCall
from app.core.memory_allocator import AllocationError
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import (
    InsufficientMemoryError,
    InvalidTransitionError,
    LoaderError,
    ManagerSettings,
    ModelResourceManager,
    ModelState,
    PinnedModelError,
    PlacementRefused,
    UnknownModelError,
)
from app.core.quantization_strategy import PlacementError
from app.demo import ManualClock

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_1B = "meta-llama/Llama-3.2-1B-Instruct"
WHISPER_SMALL = "openai/whisper-small"
KOKORO = "hexgrad/Kokoro-82M"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
MODELS = [LLAMA_8B, LLAMA_1B, WHISPER_SMALL, KOKORO, SD15, SDXL]

#: Every error a manager call may raise for a reason the caller is told about.
DOCUMENTED = (PlacementRefused, InsufficientMemoryError, PlacementError, AllocationError, InvalidTransitionError,
              PinnedModelError, LoaderError, UnknownModelError)
REGISTRY = ModelRegistry(user_store=None)


class LoaderFault(Exception):
    """The fake loader's own failure (what a runtime raises: CUDA out of memory, a missing file …)."""


class Faults:
    """What the fake loaders do now: which methods fail, how often, how slowly."""

    def __init__(self, seed: int = 0) -> None:
        self.failing: set[str] = set()
        self.fail_rate = 0.0
        self.delay_s = 0.0
        self.no_offload = False
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def check(self, name: str, model_id: str) -> None:
        if name == "offload" and self.no_offload:
            raise NotImplementedError("this runtime cannot offload")
        with self.lock:
            unlucky = self.fail_rate > 0 and self.rng.random() < self.fail_rate
        if name in self.failing or unlucky:
            raise LoaderFault(f"{name} failed for {model_id}")


class FakeLoader:
    """A sync loader: records calls, sleeps ``delay_s``, fails as ``faults`` say."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.calls: list[tuple[str, str]] = []

    def _do(self, name: str, model_id: str) -> None:
        self.calls.append((name, model_id))
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        self.faults.check(name, model_id)

    def load(self, metadata, placement):
        self._do("load", metadata.id)
        return ("handle", metadata.id, placement.device)

    def unload(self, model_id, handle):
        self._do("unload", model_id)

    def offload(self, model_id, handle):
        self._do("offload", model_id)

    def restore(self, model_id, handle, device):
        self._do("restore", model_id)


class AsyncFakeLoader(FakeLoader):
    """The same loader with coroutine methods."""

    async def _ado(self, name: str, model_id: str) -> None:
        self.calls.append((name, model_id))
        await asyncio.sleep(self.faults.delay_s)
        self.faults.check(name, model_id)

    async def load(self, metadata, placement):
        await self._ado("load", metadata.id)
        return ("handle", metadata.id, placement.device)

    async def unload(self, model_id, handle):
        await self._ado("unload", model_id)

    async def offload(self, model_id, handle):
        await self._ado("offload", model_id)

    async def restore(self, model_id, handle, device):
        await self._ado("restore", model_id)


def rig_file(directory: Path, gpus_gib=(8, 8)) -> str:
    spec = directory / "rig.json"
    spec.write_text(json.dumps({"gpus": [{"name": f"Test {g} GiB", "memory_gib": g, "compute_capability": [8, 9],
                                          "processes": []} for g in gpus_gib]}))
    return str(spec)


def make(directory: Path, loader, gpus_gib=(8, 8), **settings_kw):
    clock = ManualClock(1000.0)
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=rig_file(directory, gpus_gib), clock=clock),
                                   registry=REGISTRY, loader=loader, settings=ManagerSettings(**settings_kw),
                                   clock=clock)
    return manager, clock


def canonical(model_id: str) -> str:
    return REGISTRY.get_model(model_id).id


def check_ledger(manager) -> None:
    """The invariants that hold whenever no call is in progress."""
    models = {m.model_id: m for m in manager.loaded_models()}
    for ledger in manager.ledgers():
        if ledger.device != "cpu":  # no over-commit
            assert ledger.reserved_bytes <= ledger.total_bytes - ledger.safety_reserve_bytes, ledger
    booked: dict[str, set[str]] = {}
    for r in manager.memory_allocator.reservations():
        booked.setdefault(r.model_id, set()).add(r.device)
    assert set(booked) <= set(models), f"bookings for models the manager does not hold: {set(booked) - set(models)}"
    for mid, m in models.items():
        assert m.state not in TRANSITIONAL, f"{mid} left {m.state.value}"
        assert m.state in set(ModelState) - {ModelState.UNLOADED}
        devices = booked.get(mid, set())
        if m.state in (ModelState.LOADED, ModelState.BUSY):
            assert m.placement is not None and devices == set(m.placement.devices) and m.device == m.placement.device, (
                mid, m.state, m.device, m.placement.device if m.placement else None, devices, m.reason)
        elif m.state == ModelState.OFFLOADED:
            assert devices == {"cpu"} and m.device == "cpu", (mid, devices)
        elif m.state == ModelState.FAILED and devices:
            # Only an unload (or a move whose unload) failed keeps its booking, and says so.
            assert "stay booked" in (m.reason or "") or "booking stays" in (m.reason or ""), (mid, m.reason)


# --- 1. the state machine ---------------------------------------------------------------------------------
class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.faults = Faults()
        self.sync_loader = FakeLoader(self.faults)
        self.async_loader = AsyncFakeLoader(self.faults)
        self.use_async = False
        self.manager, self.clock = make(self.dir, self.sync_loader, keep_alive_s=120)
        #: Pinned model -> the state it must keep until the test itself changes it.
        self.pinned: dict[str, ModelState] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # helpers
    def _run(self, name: str, *args, **kwargs):
        if self.use_async:
            return asyncio.run(getattr(self.manager, "a" + name)(*args, **kwargs))
        return getattr(self.manager, name)(*args, **kwargs)

    def _model(self, mid: str):
        return next((m for m in self.manager.loaded_models() if m.model_id == canonical(mid)), None)

    def _refresh_pin(self, mid: str) -> None:
        """The test itself changed a model: take its pin and state as they are now."""
        m = self._model(mid)
        if m is not None and m.pinned:
            self.pinned[m.model_id] = m.state
        else:
            self.pinned.pop(canonical(mid), None)

    # rules
    @rule(mid=st.sampled_from(MODELS), level=st.sampled_from([None, "Q4_K_M", "fp16", "Q8_0"]),
          device=st.sampled_from([None, "cuda:0", "cuda:1"]), make_room=st.booleans(), pin=st.booleans())
    def load(self, mid, level, device, make_room, pin):
        before = self._model(mid)
        try:
            loaded = self._run("load", mid, level, device, make_room=make_room, pin=pin)
        except (*DOCUMENTED, LoaderFault):
            pass
        else:
            assert loaded.state in (ModelState.LOADED, ModelState.BUSY)
            if device is not None:  # an explicit device is honoured or refused, never replaced
                assert loaded.device == device, \
                    f"asked for {device}, got {loaded.device} (it was {before.device if before else 'not held'})"
            if level is not None:
                assert loaded.quantization == level
        self._refresh_pin(mid)

    @rule(mid=st.sampled_from(MODELS))
    def unload(self, mid):
        was = self._model(mid)
        try:
            self._run("unload", mid)
        except PinnedModelError:
            assert was is not None and was.pinned
            return
        except (InvalidTransitionError, LoaderError):
            pass
        else:
            assert self.manager.memory_allocator.reservations(model_id=canonical(mid)) == ()
            assert self.manager.state_of(mid) == ModelState.UNLOADED
            if was is not None and was.pinned:  # only a failed load that holds nothing may go while pinned
                assert was.state == ModelState.FAILED and was.reserved_bytes == 0, was
        self._refresh_pin(mid)

    @rule(mid=st.sampled_from(MODELS))
    def offload(self, mid):
        was = self._model(mid)
        try:
            self._run("offload", mid)
        except PinnedModelError:
            assert was is not None and was.pinned
            return
        except (InvalidTransitionError, UnknownModelError, LoaderError, AllocationError, NotImplementedError):
            pass
        self._refresh_pin(mid)

    @rule(mid=st.sampled_from(MODELS))
    def restore(self, mid):
        try:
            self._run("restore", mid)
        except (InvalidTransitionError, UnknownModelError, LoaderError, PlacementError, AllocationError):
            pass
        self._refresh_pin(mid)

    @rule(mid=st.sampled_from(MODELS), device=st.sampled_from(["cuda:0", "cuda:1"]))
    def move(self, mid, device):
        was = self._model(mid)
        try:
            self._run("move", mid, device)
        except PinnedModelError:
            assert was is not None and was.pinned
            return
        except (InvalidTransitionError, UnknownModelError, LoaderError, AllocationError):
            pass
        self._refresh_pin(mid)

    @rule(mid=st.sampled_from(MODELS), pinned=st.booleans())
    def pin(self, mid, pinned):
        try:
            self.manager.pin(mid, pinned)
        except UnknownModelError:
            pass
        self._refresh_pin(mid)

    @rule(mid=st.sampled_from(MODELS), begin=st.booleans())
    def use(self, mid, begin):
        try:
            if begin:
                self.manager.begin_use(mid)
            else:
                self.manager.end_use(mid)
        except (InvalidTransitionError, UnknownModelError):
            pass
        self._refresh_pin(mid)

    @rule(seconds=st.integers(0, 200))
    def tick(self, seconds):
        self.clock.now += seconds
        self.manager.tick()

    @rule(failing=st.sets(st.sampled_from(["load", "unload", "offload", "restore"]), max_size=2),
          slow=st.booleans(), use_async=st.booleans(), no_offload=st.booleans())
    def set_faults(self, failing, slow, use_async, no_offload):
        self.faults.failing = set(failing)
        self.faults.delay_s = 0.001 if slow else 0.0
        self.faults.no_offload = no_offload
        self.use_async = use_async
        self.manager.loader = self.async_loader if use_async else self.sync_loader

    # invariants
    @invariant()
    def ledger_is_sound(self):
        check_ledger(self.manager)

    @invariant()
    def pinned_models_keep_their_state(self):
        for mid, state in self.pinned.items():
            now = self.manager.state_of(mid)
            assert now == state, f"pinned {mid} went from {state.value} to {now.value} by someone else"


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(max_examples=40, stateful_step_count=20, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow], report_multiple_bugs=False,
                                         phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


# --- 2. explicit cases --------------------------------------------------------------------------------------
@pytest.fixture
def async_manager(tmp_path):
    loader = AsyncFakeLoader()
    manager, _ = make(tmp_path, loader)
    asyncio.run(manager.aload(LLAMA_1B, device="cuda:0"))
    return manager, loader


def test_async_unload_from_a_running_loop_unloads_and_releases(async_manager):
    manager, loader = async_manager
    assert manager.state_of(LLAMA_1B) == ModelState.LOADED
    asyncio.run(manager.aunload(LLAMA_1B))
    assert ("unload", canonical(LLAMA_1B)) in loader.calls
    assert manager.state_of(LLAMA_1B) == ModelState.UNLOADED
    assert manager.loaded_models() == () and manager.memory_allocator.reservations() == ()


@pytest.mark.parametrize("call", ["unload", "offload", "move", "load"])
def test_a_sync_call_inside_a_running_loop_with_an_async_loader_changes_nothing(async_manager, call):
    manager, loader = async_manager
    before = manager.loaded_models()
    booked = manager.memory_allocator.reservations()
    calls = list(loader.calls)
    events: list = []
    manager.model_state_changed.connect(lambda *a: events.append(a))

    async def inside_a_loop():
        with pytest.raises(AsyncLoaderInSyncCall):
            if call == "unload":
                manager.unload(LLAMA_1B)
            elif call == "offload":
                manager.offload(LLAMA_1B)
            elif call == "move":
                manager.move(LLAMA_1B, "cuda:1")
            else:
                manager.load(WHISPER_SMALL)

    asyncio.run(inside_a_loop())
    assert manager.state_of(LLAMA_1B) == ModelState.LOADED
    assert manager.loaded_models() == before and manager.memory_allocator.reservations() == booked
    assert loader.calls == calls and events == []


@pytest.mark.parametrize("use_async", [False, True])
def test_a_failing_unload_leaves_failed_and_booked_until_unloaded_again(tmp_path, use_async):
    loader = AsyncFakeLoader() if use_async else FakeLoader()
    manager, _ = make(tmp_path, loader)

    def run(name, *args):
        return asyncio.run(getattr(manager, "a" + name)(*args)) if use_async else getattr(manager, name)(*args)

    loaded = run("load", LLAMA_1B)
    booked = manager.memory_allocator.reservations(model_id=loaded.model_id)
    loader.faults.failing = {"unload"}
    with pytest.raises(LoaderError):
        run("unload", LLAMA_1B)
    failed = manager.loaded_models()[0]
    assert failed.state == ModelState.FAILED and "stay booked" in failed.reason
    assert manager.memory_allocator.reservations(model_id=loaded.model_id) == booked
    assert "unload" in manager.allowed_actions(LLAMA_1B)
    with pytest.raises(InvalidTransitionError):  # it still holds memory: no loading over it
        run("load", LLAMA_1B)
    loader.faults.failing = set()
    run("unload", LLAMA_1B)
    assert manager.state_of(LLAMA_1B) == ModelState.UNLOADED
    assert manager.loaded_models() == () and manager.memory_allocator.reservations() == ()


def test_moving_a_model_to_the_gpu_it_is_on_keeps_its_booking(tmp_path):
    manager, _ = make(tmp_path, FakeLoader())
    loaded = manager.load(LLAMA_1B, device="cuda:0")
    booked = manager.memory_allocator.reservations(model_id=loaded.model_id)
    try:
        moved = manager.move(LLAMA_1B, "cuda:0")
    except InvalidTransitionError:
        pass  # refused: it is there already
    else:
        assert moved.device == "cuda:0" and moved.state == ModelState.LOADED
    assert {r.device for r in manager.memory_allocator.reservations(model_id=loaded.model_id)} == {"cuda:0"}
    assert sum(r.total_bytes for r in manager.memory_allocator.reservations(model_id=loaded.model_id)) == \
        sum(r.total_bytes for r in booked)
    check_ledger(manager)


@pytest.mark.parametrize("use_async", [False, True])
def test_a_failing_load_leaves_failed_with_no_booking(tmp_path, use_async):
    loader = AsyncFakeLoader() if use_async else FakeLoader()
    loader.faults.failing = {"load"}
    manager, _ = make(tmp_path, loader)
    with pytest.raises(LoaderFault):
        if use_async:
            asyncio.run(manager.aload(LLAMA_8B))
        else:
            manager.load(LLAMA_8B)
    (failed,) = manager.loaded_models()
    assert failed.state == ModelState.FAILED and "load failed" in failed.reason
    assert manager.memory_allocator.reservations() == () and failed.reserved_bytes == 0
    for ledger in manager.ledgers():
        assert ledger.reserved_bytes == 0 and ledger.runtime_bytes == 0
    loader.faults.failing = set()
    assert manager.load(LLAMA_8B).state == ModelState.LOADED


@pytest.mark.parametrize("fault", ["raises", "not implemented"])
def test_a_failing_offload_stays_loaded_on_its_gpu(tmp_path, fault):
    loader = FakeLoader()
    manager, _ = make(tmp_path, loader)
    loaded = manager.load(LLAMA_1B, device="cuda:1")
    gpu = manager.memory_allocator.reservations(model_id=loaded.model_id)
    if fault == "raises":
        loader.faults.failing = {"offload"}
        with pytest.raises(LoaderError):
            manager.offload(LLAMA_1B)
    else:
        loader.faults.no_offload = True
        with pytest.raises(NotImplementedError):
            manager.offload(LLAMA_1B)
    (now,) = manager.loaded_models()
    assert now.state == ModelState.LOADED and now.device == "cuda:1"
    assert manager.memory_allocator.reservations(model_id=loaded.model_id) == gpu
    assert manager.memory_allocator.reservations("cpu") == ()
    check_ledger(manager)


def test_a_failing_restore_stays_offloaded_in_ram(tmp_path):
    loader = FakeLoader()
    manager, _ = make(tmp_path, loader)
    loaded = manager.load(LLAMA_1B)
    manager.offload(LLAMA_1B)
    loader.faults.failing = {"restore"}
    with pytest.raises(LoaderError):
        manager.restore(LLAMA_1B)
    (now,) = manager.loaded_models()
    assert now.state == ModelState.OFFLOADED and now.device == "cpu"
    assert {r.device for r in manager.memory_allocator.reservations(model_id=loaded.model_id)} == {"cpu"}
    loader.faults.failing = set()
    assert manager.restore(LLAMA_1B).device == loaded.device
    check_ledger(manager)


# --- 3. eight threads ---------------------------------------------------------------------------------------
OPS_PER_THREAD = 60


@pytest.mark.parametrize("can_offload", [True, False])
def test_eight_threads_with_a_flaky_slow_loader_keep_the_ledger_sound(tmp_path, can_offload, seed=7):
    faults = Faults(seed)
    faults.fail_rate = 0.15
    faults.delay_s = 0.001
    faults.no_offload = not can_offload
    manager, clock = make(tmp_path, FakeLoader(faults), keep_alive_s=30)
    unexpected: list[BaseException] = []
    done: list[str] = []
    manager.model_state_changed.connect(lambda mid, old, new: done.append(new.value))

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(OPS_PER_THREAD):
            mid = rnd.choice(MODELS)
            op = rnd.choice(["load", "load", "unload", "offload", "restore", "move", "pin", "unpin", "use", "tick"])
            try:
                if op == "load":
                    manager.load(mid, rnd.choice([None, "Q4_K_M", "fp16", "Q8_0"]),
                                 rnd.choice([None, "cuda:0", "cuda:1"]), make_room=rnd.random() < 0.7)
                elif op == "unload":
                    manager.unload(mid)
                elif op == "offload":
                    manager.offload(mid)
                elif op == "restore":
                    manager.restore(mid)
                elif op == "move":  # to the other GPU (moving to the same one has its own test)
                    now = next((m.device for m in manager.loaded_models() if m.model_id == canonical(mid)), "cuda:1")
                    manager.move(mid, "cuda:0" if now == "cuda:1" else "cuda:1")
                elif op == "pin":
                    manager.pin(mid)
                elif op == "unpin":
                    manager.unpin(mid)
                elif op == "use":
                    manager.begin_use(mid)
                    time.sleep(0.001)
                    manager.end_use(mid)
                else:
                    clock.now += rnd.randint(0, 40)
                    manager.tick()
            except (*DOCUMENTED, LoaderFault, NotImplementedError):
                pass
            except BaseException as err:  # noqa: BLE001 - reported below
                unexpected.append(err)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a worker is stuck (deadlock?)"
    assert unexpected == []
    check_ledger(manager)
    assert {m.state for m in manager.loaded_models()} <= set(ModelState) - TRANSITIONAL - {ModelState.UNLOADED}
    # It did work: models loaded, failed, went away.
    assert {"loaded", "failed", "unloaded"} <= set(done)


# --- 4. loaders run outside the lock --------------------------------------------------------------------------
class BlockingLoader(FakeLoader):
    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def load(self, metadata, placement):
        self.entered.set()
        assert self.release.wait(10), "the test never released the loader"
        return super().load(metadata, placement)


def test_a_blocked_loader_does_not_block_queries(tmp_path):
    loader = BlockingLoader()
    manager, _ = make(tmp_path, loader)
    loading = threading.Thread(target=manager.load, args=(LLAMA_8B,), daemon=True)
    loading.start()
    try:
        assert loader.entered.wait(5), "the loader was never called"
        seen: dict[str, object] = {}

        def query() -> None:
            seen["models"] = manager.loaded_models()
            seen["plan"] = manager.plan(WHISPER_SMALL)
            seen["state"] = manager.state_of(LLAMA_8B)
            seen["bookings"] = manager.bookings("cuda:0")

        asker = threading.Thread(target=query, daemon=True)
        started = time.monotonic()
        asker.start()
        asker.join(1.0)
        assert not asker.is_alive(), "loaded_models()/plan() waited for the loader: it runs under the lock"
        assert time.monotonic() - started < 1.0
        assert seen["state"] == ModelState.LOADING
        assert [m.state for m in seen["models"]] == [ModelState.LOADING]  # booked while it loads
        assert any(b.model_id == canonical(LLAMA_8B) for b in seen["bookings"])
        assert seen["plan"].model_id == canonical(WHISPER_SMALL)
    finally:
        loader.release.set()
        loading.join(10)
    assert not loading.is_alive()
    assert manager.state_of(LLAMA_8B) == ModelState.LOADED


# --- 5. events are emitted after the lock is released ------------------------------------------------------------
def _watch_from_another_thread(manager, results: list, timeout_s: float = 1.0):
    """A subscriber that asks the manager from another thread and waits for the answer (with a timeout;
    after one answer never came, the next ones wait only briefly, so a failure stays quick)."""

    def slot(*args) -> None:
        answer: dict[str, object] = {}

        def ask() -> None:
            answer["models"] = {m.model_id: m.state for m in manager.loaded_models()}
            answer["booked"] = {r.model_id for r in manager.memory_allocator.reservations()}

        helper = threading.Thread(target=ask, daemon=True)
        helper.start()
        helper.join(timeout_s if all(ok for _, ok, _ in results) else 0.05)
        results.append((args, not helper.is_alive(), dict(answer)))

    return slot


def _drive(manager, fn, timeout_s: float = 30.0) -> None:
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), "the manager call never returned (deadlock)"


def test_state_events_come_after_the_lock_and_show_whole_states(tmp_path):
    manager, clock = make(tmp_path, FakeLoader(), gpus_gib=(12,))
    results: list = []
    manager.model_state_changed.connect(_watch_from_another_thread(manager, results))
    _drive(manager, lambda: manager.load(SDXL, "fp16"))
    clock.now += 5
    _drive(manager, lambda: manager.offload(SDXL))
    _drive(manager, lambda: manager.restore(SDXL))
    _drive(manager, lambda: manager.unload(SDXL))
    sdxl = canonical(SDXL)
    assert [args[2] for args, _, _ in results] == [
        ModelState.LOADING, ModelState.LOADED, ModelState.OFFLOADING, ModelState.OFFLOADED,
        ModelState.RESTORING, ModelState.LOADED, ModelState.UNLOADING, ModelState.UNLOADED]
    for (mid, _old, new), answered, answer in results:
        assert mid == sdxl
        assert answered, f"a subscriber of {new.value} could not read the manager: emitted under the lock"
        if new == ModelState.UNLOADED:
            assert sdxl not in answer["models"] and sdxl not in answer["booked"]
        else:
            assert answer["models"][sdxl] == new  # what the event says is what the manager shows


@pytest.mark.parametrize("signal", ["allocation_changed", "evicted", "plan_ready"])
def test_other_signals_come_after_the_lock_too(tmp_path, signal):
    manager, clock = make(tmp_path, FakeLoader(), gpus_gib=(12,))
    manager.load(LLAMA_8B, "Q8_0")
    clock.now += 5
    results: list = []
    getattr(manager, signal).connect(_watch_from_another_thread(manager, results))
    _drive(manager, lambda: manager.load(SDXL, "fp16"))  # makes room: evicts, books, plans
    _drive(manager, lambda: manager.unload(SDXL))
    assert results, f"{signal} never fired"
    stuck = [args for args, answered, _ in results if not answered]
    assert stuck == [], f"{signal} was emitted while the manager's lock was held: {stuck}"
    for _, answered, answer in results:  # and what a subscriber reads is whole: no booking without its model
        if answered:
            assert answer["booked"] <= set(answer["models"]), answer
