"""ModelResourceManager: the seed's API, lifecycle, and every policy rule, on simulated GPUs."""

from __future__ import annotations

import asyncio
import json
import random
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from app.core.estimation import GPU_RUNTIME_OVERHEAD
from app.core.hardware_profiler import HardwareProfiler
from app.core.memory_allocator import AllocationError, AllocatorSettings
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import (
    InsufficientMemoryError,
    InvalidTransitionError,
    ManagerSettings,
    ModelResourceManager,
    ModelState,
    PinnedModelError,
    PlacementRefused,
    UnknownModelError,
)
from app.core.quantization_strategy import PlacementError, QuantizationLevel

GiB = 1 << 30

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_3B = "meta-llama/Llama-3.2-3B-Instruct"
LLAMA_1B = "meta-llama/Llama-3.2-1B-Instruct"
WHISPER = "openai/whisper-large-v3"
WHISPER_SMALL = "openai/whisper-small"
KOKORO = "hexgrad/Kokoro-82M"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class RecordingLoader:
    """A host loader that records what it was asked and fails where a test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_load: set[str] = set()
        self.no_offload = False

    def load(self, metadata, plan):
        self.calls.append(("load", metadata.id))
        if metadata.id in self.fail_load:
            raise RuntimeError(f"CUDA out of memory loading {metadata.id}")
        return {"model": metadata.id, "level": plan.quantization}

    def unload(self, model_id, handle):
        self.calls.append(("unload", model_id))

    def offload(self, model_id, handle):
        if self.no_offload:
            raise NotImplementedError
        self.calls.append(("offload", model_id))

    def restore(self, model_id, handle, device):
        self.calls.append(("restore", model_id))


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry(user_store=None)


def rig(tmp_path, gpus_gib=(12,), ram_gib=None):
    spec = tmp_path / "rig.json"
    spec.write_text(json.dumps({"gpus": [{"name": f"Test {g} GiB", "memory_gib": g, "compute_capability": [8, 9],
                                          "processes": []} for g in gpus_gib]}))
    return str(spec)


def make(tmp_path, registry, gpus_gib=(12,), clock=None, loader=None, **settings_kw):
    clock = clock or Clock()
    settings_kw.setdefault("allocator", AllocatorSettings(gpu_reserve_bytes=512 << 20, cpu_reserve_bytes=2 * GiB))
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=rig(tmp_path, gpus_gib), clock=clock),
                                   registry=registry, loader=loader or RecordingLoader(),
                                   settings=ManagerSettings(**settings_kw), clock=clock)
    return manager, clock


def test_seed_usage_runs_as_written(tmp_path):
    ModelResourceManager.configure_shared(
        profiler=HardwareProfiler(simulate="rtx4090", clock=lambda: 0.0),
        registry=ModelRegistry(user_store=tmp_path / "models.json"))
    try:
        # --- the seed's example, verbatim but for the package name ---
        from app.core import ModelResourceManager as SeedManager
        from app.core.model_registry import ModelMetadata, ModelProvider, ModelType
        from app.core.quantization_strategy import QuantizationLevel

        manager = SeedManager()                      # the shared instance
        model = manager.select_best_model(provider=ModelProvider.MISTRAL, model_type=ModelType.LLM)
        metadata, quantization, allocation = manager.prepare_model_loading(model_id="mistralai/Ministral-8B-v0.1")
        model_id = metadata.id
        assert manager.check_memory_pressure() in (True, False)
        metadata, quantization, allocation = manager.prepare_model_loading(
            model_id="mistralai/Magistral-23B-v0.1", preferred_quantization=QuantizationLevel.INT4)
        manager.cleanup_model(model_id)
        if manager.check_memory_pressure():
            pass
        manager.model_registry.register_model(ModelMetadata(
            name="Llama 3.3 70B", provider=ModelProvider.LLAMA, model_type=ModelType.LLM,
            size_gb=70.0, min_vram_gb=24.0, min_ram_gb=32.0, recommended_vram_gb=40.0,
            recommended_ram_gb=64.0, supports_quantization=True, huggingface_id="meta-llama/Llama-3.3-70B"))
        # --- what it gave ---
        assert manager is SeedManager()
        assert model is not None and model.provider == ModelProvider.MISTRAL
        assert metadata.id == "mistralai/Magistral-Small-2506" and quantization.level == QuantizationLevel.INT4
        assert allocation.device == "cuda:0" and allocation.vram_allocated_gb == pytest.approx(
            quantization.estimated_memory_gb, rel=0.05)
        assert manager.model_registry.get_model("meta-llama/Llama-3.3-70B").name == "Llama 3.3 70B"
    finally:
        ModelResourceManager.reset_shared()


def test_isolated_managers_are_independent(tmp_path, registry):
    a, _ = make(tmp_path, registry)
    b, _ = make(tmp_path, registry)
    a.load(LLAMA_1B)
    assert a is not b and b.loaded_models() == ()


def test_load_books_memory_and_emits_events(tmp_path, registry):
    manager, _ = make(tmp_path, registry)
    states, allocs, plans = [], [], []
    manager.model_state_changed.connect(lambda m, o, n: states.append((m, o, n)))
    manager.allocation_changed.connect(allocs.append)
    manager.plan_ready.connect(plans.append)
    loaded = manager.load(LLAMA_8B)
    assert loaded.state == ModelState.LOADED and loaded.device == "cuda:0"
    assert states == [(LLAMA_8B, ModelState.UNLOADED, ModelState.LOADING), (LLAMA_8B, ModelState.LOADING, ModelState.LOADED)]
    assert "cuda:0" in allocs and plans and plans[-1].model_id == LLAMA_8B
    ledger = manager.memory_allocator.ledger("cuda:0")
    # The model's own bytes, plus the runtime context the device books once for every model.
    assert ledger.reserved_bytes == loaded.reserved_bytes + ledger.runtime_bytes
    assert loaded.reserved_bytes > 4 * GiB and ledger.runtime_bytes == GPU_RUNTIME_OVERHEAD
    manager.unload(LLAMA_8B)
    assert manager.memory_allocator.reservations() == () and manager.loaded_models() == ()


def test_loading_twice_is_idempotent(tmp_path, registry):
    loader = RecordingLoader()
    manager, _ = make(tmp_path, registry, loader=loader)
    first = manager.load(LLAMA_1B)
    again = manager.load(LLAMA_1B)
    assert again.reserved_bytes == first.reserved_bytes
    assert loader.calls.count(("load", LLAMA_1B)) == 1


def test_runtime_overhead_is_booked_once_per_device(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(24,))
    manager.load(LLAMA_1B)
    manager.load(WHISPER_SMALL)
    ledger = manager.memory_allocator.ledger("cuda:0")
    own = sum(r.total_bytes for r in manager.memory_allocator.reservations("cuda:0"))
    assert ledger.runtime_bytes == GPU_RUNTIME_OVERHEAD
    assert ledger.reserved_bytes == own + GPU_RUNTIME_OVERHEAD  # one context for two models
    # Unloading either keeps exactly one context for the model left behind.
    for first, second in ((LLAMA_1B, WHISPER_SMALL), (WHISPER_SMALL, LLAMA_1B)):
        manager.unload(first)
        left = manager.memory_allocator.ledger("cuda:0")
        assert left.runtime_bytes == GPU_RUNTIME_OVERHEAD
        assert left.reserved_bytes == manager.loaded_models()[0].reserved_bytes + GPU_RUNTIME_OVERHEAD
        manager.unload(second)
        assert manager.memory_allocator.ledger("cuda:0").reserved_bytes == 0
        manager.load(LLAMA_1B)
        manager.load(WHISPER_SMALL)


def test_a_load_that_does_not_fit_evicts_the_right_model_and_says_why(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(16,))
    manager.load(KOKORO, "fp16")       # TTS: lowest priority of the three
    clock.t += 10
    manager.load(WHISPER, "fp16")      # STT
    clock.t += 10
    manager.load(LLAMA_8B, "Q4_K_M")   # LLM, fits beside them
    evicted = []
    manager.evicted.connect(lambda m, why: evicted.append((m, why)))
    manager.load(SDXL, "fp16")         # ~7 GiB more: something must go
    assert evicted, "SDXL should have needed room"
    first, why = evicted[0]
    assert first in (KOKORO, WHISPER)  # the lower-priority models go before the LLM
    assert "make room for" in why and "GiB" in why and "priority" in why
    assert manager.state_of(LLAMA_8B) == ModelState.LOADED
    ledger = manager.memory_allocator.ledger("cuda:0")
    held = sum(r.total_bytes for r in manager.memory_allocator.reservations("cuda:0")) + ledger.runtime_bytes
    assert ledger.reserved_bytes == held <= 16 * GiB - (512 << 20)


def test_eviction_takes_only_what_is_needed(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(12,))
    for mid in (LLAMA_1B, WHISPER_SMALL, KOKORO):
        manager.load(mid)
        clock.t += 1
    before = {m.model_id for m in manager.loaded_models() if m.device == "cuda:0"}
    manager.load(LLAMA_8B, "Q6_K")
    still = {m.model_id for m in manager.loaded_models() if m.device == "cuda:0"}
    assert len(before - still) <= 2 and LLAMA_8B in still


def test_offload_to_cpu_when_ram_allows_else_unload(tmp_path, registry):
    loader = RecordingLoader()
    manager, clock = make(tmp_path, registry, gpus_gib=(8,), loader=loader)
    manager.load(LLAMA_3B, "Q8_0")
    clock.t += 5
    manager.load(LLAMA_8B, "Q4_K_M")
    assert manager.state_of(LLAMA_3B) == ModelState.OFFLOADED and ("offload", LLAMA_3B) in loader.calls
    offloaded = next(m for m in manager.loaded_models() if m.model_id == LLAMA_3B)
    assert offloaded.device == "cpu" and manager.memory_allocator.reservations("cpu", LLAMA_3B)
    # A loader that cannot offload: the model is unloaded instead.
    loader2 = RecordingLoader()
    loader2.no_offload = True
    manager2, clock2 = make(tmp_path, registry, gpus_gib=(8,), loader=loader2)
    manager2.load(LLAMA_3B, "Q8_0")
    clock2.t += 5
    manager2.load(LLAMA_8B, "Q4_K_M")
    assert manager2.state_of(LLAMA_3B) == ModelState.UNLOADED and ("unload", LLAMA_3B) in loader2.calls


def test_restore_brings_an_offloaded_model_back(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(12,))
    manager.load(LLAMA_3B)
    manager.offload(LLAMA_3B)
    assert manager.memory_allocator.reservations("cuda:0") == ()
    restored = manager.restore(LLAMA_3B)
    assert restored.state == ModelState.LOADED and restored.device == "cuda:0"
    assert manager.memory_allocator.reservations("cpu", LLAMA_3B) == ()


def test_pinned_models_are_never_evicted(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(8,))
    manager.load(LLAMA_3B, "Q8_0", pin=True)
    clock.t += 100
    with pytest.raises((InsufficientMemoryError, PlacementError)):
        manager.load(LLAMA_8B, "Q4_K_M", allow_cpu=False)  # GPU only: no layers in RAM
    assert manager.state_of(LLAMA_3B) == ModelState.LOADED
    partly = manager.load(LLAMA_8B, "Q4_K_M")  # by default the layers that do not fit go to RAM
    assert partly.device == "cuda:0+cpu" and manager.state_of(LLAMA_3B) == ModelState.LOADED
    manager.unload(LLAMA_8B)
    manager.unpin(LLAMA_3B)
    manager.load(LLAMA_8B, "Q4_K_M")
    assert manager.state_of(LLAMA_3B) != ModelState.LOADED


def test_least_recently_used_goes_first_among_equals(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(8,))
    manager.load(LLAMA_1B, "Q8_0")
    clock.t += 1
    manager.load(LLAMA_3B, "Q4_K_M")
    clock.t += 1
    manager.touch(LLAMA_1B)  # now the 3B is the least recently used
    clock.t += 1
    evicted = []
    manager.evicted.connect(lambda m, why: evicted.append(m))
    manager.load(LLAMA_8B, "Q5_K_M")
    assert evicted[0] == LLAMA_3B


def test_failed_load_rolls_back_and_says_why(tmp_path, registry):
    loader = RecordingLoader()
    loader.fail_load.add(LLAMA_8B)
    manager, _ = make(tmp_path, registry, loader=loader)
    with pytest.raises(RuntimeError, match="out of memory"):
        manager.load(LLAMA_8B)
    assert manager.memory_allocator.reservations() == ()
    failed = next(m for m in manager.loaded_models() if m.model_id == LLAMA_8B)
    assert failed.state == ModelState.FAILED and "out of memory" in failed.reason
    loader.fail_load.clear()
    assert manager.load(LLAMA_8B).state == ModelState.LOADED  # FAILED -> LOADING is allowed


def test_swap_rolls_back_to_the_old_model_when_the_new_one_fails(tmp_path, registry):
    loader = RecordingLoader()
    manager, _ = make(tmp_path, registry, loader=loader)
    manager.load(LLAMA_3B, "Q4_K_M")
    loader.fail_load.add(SDXL)
    with pytest.raises(RuntimeError):
        manager.swap(LLAMA_3B, SDXL)
    old = next(m for m in manager.loaded_models() if m.model_id == LLAMA_3B)
    assert old.state == ModelState.LOADED and old.quantization == "Q4_K_M"
    loader.fail_load.clear()
    new = manager.swap(LLAMA_3B, SD15)
    assert new.model_id == SD15 and manager.state_of(LLAMA_3B) == ModelState.UNLOADED


def test_keep_alive(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(24,), keep_alive_s=300)
    manager.load(LLAMA_1B)                       # default 5 min
    manager.load(WHISPER_SMALL, keep_alive_s=0)  # unload as soon as idle
    manager.load(KOKORO, keep_alive_s=-1)        # never expires
    manager.load(LLAMA_3B, pin=True)             # pinned: never expires
    expired = []
    manager.evicted.connect(lambda m, why: expired.append((m, why)))
    manager.tick()
    assert [m for m, _ in expired] == [WHISPER_SMALL] and "keep-alive" in expired[0][1]
    clock.t += 299
    manager.tick()
    assert manager.state_of(LLAMA_1B) == ModelState.LOADED
    clock.t += 2
    manager.tick()
    assert manager.state_of(LLAMA_1B) == ModelState.UNLOADED
    clock.t += 10_000
    manager.tick()
    assert manager.state_of(KOKORO) == ModelState.LOADED and manager.state_of(LLAMA_3B) == ModelState.LOADED


def test_busy_models_cannot_be_evicted_or_unloaded(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(24,), keep_alive_s=0)
    manager.load(LLAMA_1B)
    manager.begin_use(LLAMA_1B)
    manager.tick()
    assert manager.state_of(LLAMA_1B) == ModelState.BUSY
    with pytest.raises(InvalidTransitionError, match="busy"):
        manager.unload(LLAMA_1B)
    manager.end_use(LLAMA_1B)
    with pytest.raises(InvalidTransitionError):
        manager.end_use(LLAMA_1B)
    manager.tick()
    assert manager.state_of(LLAMA_1B) == ModelState.UNLOADED


def test_invalid_transitions_are_rejected(tmp_path, registry):
    manager, _ = make(tmp_path, registry)
    with pytest.raises(UnknownModelError):
        manager.offload(LLAMA_1B)
    manager.load(LLAMA_1B)
    with pytest.raises(InvalidTransitionError, match="not offloaded"):
        manager.restore(LLAMA_1B)
    manager.offload(LLAMA_1B)
    with pytest.raises(InvalidTransitionError):
        manager.offload(LLAMA_1B)
    with pytest.raises(InvalidTransitionError, match="restore"):
        manager.load(LLAMA_1B)


def test_unknown_model_suggests_names(tmp_path, registry):
    manager, _ = make(tmp_path, registry)
    with pytest.raises(UnknownModelError, match="did you mean"):
        manager.load("llama-3.1-8b-instrukt")


def test_cap_on_loaded_models(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(48,), max_loaded_models=2)
    manager.load(LLAMA_1B)
    clock.t += 1
    manager.load(KOKORO)
    clock.t += 1
    evicted = []
    manager.evicted.connect(lambda m, why: evicted.append((m, why)))
    manager.load(WHISPER_SMALL)
    assert [m for m, _ in evicted] == [KOKORO] and "cap of 2" in evicted[0][1]


def test_preload_at_start(tmp_path, registry):
    manager, _ = make(tmp_path, registry, preload=(LLAMA_1B, (WHISPER_SMALL, "int8")))
    try:
        manager.start(interval_s=0.05)
        loaded = {m.model_id: m for m in manager.loaded_models()}
        assert set(loaded) == {LLAMA_1B, WHISPER_SMALL}
        assert loaded[WHISPER_SMALL].quantization == "int8" and loaded[LLAMA_1B].keep_alive_s == -1
    finally:
        manager.stop()


def test_ensemble_on_one_12_gib_card(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(12,))
    plan = manager.plan_ensemble([(LLAMA_8B, 8192), WHISPER_SMALL, KOKORO])
    assert plan.feasible and len(plan.items) == 3
    assert plan.total_bytes <= plan.available_bytes["cuda:0"]
    # Best total quality: no single model could move up a level and still fit.
    for item in plan.items:
        from app.core.quantization_strategy import candidate_levels, estimate_model

        meta = registry.get_model(item.model_id)
        levels = candidate_levels(meta)
        better = levels[: levels.index(item.quantization)]
        for lv in better:
            grow = estimate_model(meta, lv, context=8192 if item.model_id == LLAMA_8B else None).total_bytes - \
                estimate_model(meta, item.quantization, context=8192 if item.model_id == LLAMA_8B else None).total_bytes
            assert plan.total_bytes + grow > plan.available_bytes["cuda:0"]
    tight = manager.plan_ensemble([LLAMA_8B, WHISPER, SDXL], device="cuda:0")
    small, _ = make(tmp_path, registry, gpus_gib=(4,))
    infeasible = small.plan_ensemble([LLAMA_8B, WHISPER, SDXL])
    assert not infeasible.feasible and "smallest levels" in infeasible.reason and "GiB" in infeasible.reason
    assert tight.items or not tight.feasible


def test_prepare_with_a_preferred_level_that_cannot_fit(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(8,))
    with pytest.raises(PlacementError) as err:
        manager.prepare_model_loading(LLAMA_8B, preferred_quantization=QuantizationLevel.FLOAT16, device="cuda:0")
    assert err.value.needed_bytes > err.value.available_bytes
    assert manager.memory_allocator.reservations() == ()


def test_partial_offload_books_both_devices(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(12,))
    with pytest.raises(PlacementRefused, match="cuda:0"):  # an explicit device: layers in RAM only if allowed
        manager.load("meta-llama/Llama-3.3-70B-Instruct", device="cuda:0")
    loaded = manager.load("meta-llama/Llama-3.3-70B-Instruct", device="cuda:0", allow_cpu=True)
    if loaded.device == "cpu":
        pytest.skip("this machine has too little RAM for a 70B split")
    assert loaded.device == "cuda:0+cpu" and 0 < loaded.gpu_layers < 80
    devices = {r.device for r in manager.memory_allocator.reservations(model_id=loaded.model_id)}
    assert devices == {"cuda:0", "cpu"}


def test_dynamic_quantization_proposes_down_then_up(tmp_path, registry):
    manager, clock = make(tmp_path, registry, gpus_gib=(12,), requantize_after_ticks=3)
    manager.load(LLAMA_8B, "Q6_K")
    proposals = []
    manager.quantization_proposed.connect(proposals.append)
    # Another program grabs most of the card.
    from pathlib import Path

    spec = json.loads(Path(rig(tmp_path, (12,))).read_text())
    spec["gpus"][0]["processes"] = [{"name": "game", "used_gib": 4.5}]
    busy = tmp_path / "busy.json"
    busy.write_text(json.dumps(spec))
    crowded = HardwareProfiler(simulate=str(busy), clock=clock).get_profile()
    for _ in range(3):
        manager.tick(crowded)
    assert proposals and proposals[0].model_id == LLAMA_8B and proposals[0].frees_bytes > 0
    assert proposals[0].current == "Q6_K" and proposals[0].proposed != "Q6_K"
    manager.swap(LLAMA_8B, LLAMA_8B, level=proposals[0].proposed)
    proposals.clear()
    calm = HardwareProfiler(simulate=rig(tmp_path, (12,)), clock=clock).get_profile()
    for _ in range(3):
        manager.tick(calm)
    assert proposals and proposals[0].reason.startswith("memory is free")


def test_async_loader_through_aload(tmp_path, registry):
    class AsyncLoader(RecordingLoader):
        async def load(self, metadata, plan):
            await asyncio.sleep(0)
            return "handle"

    manager, _ = make(tmp_path, registry, loader=AsyncLoader())
    loaded = asyncio.run(manager.aload(LLAMA_1B))
    assert loaded.state == ModelState.LOADED
    assert manager.load(KOKORO).state == ModelState.LOADED  # sync path runs the coroutine itself


def test_eight_threads_of_random_calls_keep_the_ledger_consistent(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(16,))
    ids = [LLAMA_1B, LLAMA_3B, WHISPER_SMALL, KOKORO, SD15]
    errors = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(60):
            mid = rnd.choice(ids)
            op = rnd.choice(["load", "unload", "offload", "restore", "pin", "unpin", "tick"])
            try:
                if op == "load":
                    manager.load(mid)
                elif op == "unload":
                    manager.unload(mid)
                elif op == "offload":
                    manager.offload(mid)
                elif op == "restore":
                    manager.restore(mid)
                elif op == "pin":
                    manager.pin(mid)
                elif op == "unpin":
                    manager.unpin(mid)
                else:
                    manager.tick()
            except (InvalidTransitionError, UnknownModelError, AllocationError, PlacementError, PinnedModelError):
                pass
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    held = {m.model_id for m in manager.loaded_models()}
    booked = {r.model_id for r in manager.memory_allocator.reservations()}
    assert booked <= held  # no reservation outlives its model
    gpu = manager.memory_allocator.ledger("cuda:0")
    assert gpu.reserved_bytes <= 16 * GiB - (512 << 20)


class ManagerMachine(RuleBasedStateMachine):
    """No device over-committed, no reservation left after unload, pinned models never evicted."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile
        from pathlib import Path

        self.tmp = Path(tempfile.mkdtemp())
        self.manager, self.clock = make(self.tmp, ModelRegistry(user_store=None), gpus_gib=(10,))
        self.pinned: set[str] = set()

    @rule(mid=st.sampled_from([LLAMA_1B, LLAMA_3B, WHISPER_SMALL, KOKORO, SD15]),
          level=st.sampled_from([None, "Q8_0", "Q4_K_M", "fp16"]), pin=st.booleans())
    def load(self, mid, level, pin):
        try:
            self.manager.load(mid, level, pin=pin)
            if pin:
                self.pinned.add(mid)
        except (InvalidTransitionError, AllocationError, PlacementError):
            pass

    @rule(mid=st.sampled_from([LLAMA_1B, LLAMA_3B, WHISPER_SMALL, KOKORO, SD15]))
    def unload(self, mid):
        try:
            self.manager.unload(mid)
        except (InvalidTransitionError, PinnedModelError):
            assert mid in self.pinned or self.manager.state_of(mid) != ModelState.LOADED
            return
        self.pinned.discard(mid)
        assert self.manager.memory_allocator.reservations(model_id=mid) == ()

    @rule(seconds=st.integers(0, 400))
    def wait(self, seconds):
        self.clock.t += seconds
        self.manager.tick()

    @invariant()
    def pinned_stay_loaded(self):
        for mid in self.pinned:
            assert self.manager.state_of(mid) == ModelState.LOADED

    @invariant()
    def ledger_is_sound(self):
        gpu = self.manager.memory_allocator.ledger("cuda:0")
        assert gpu.reserved_bytes <= 10 * GiB - (512 << 20)
        held = {m.model_id for m in self.manager.loaded_models()
                if m.state in (ModelState.LOADED, ModelState.BUSY, ModelState.OFFLOADED)}
        assert {r.model_id for r in self.manager.memory_allocator.reservations()} == held


TestManagerMachine = ManagerMachine.TestCase
TestManagerMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def test_split_across_two_gpus_books_both_and_releases_both(tmp_path, registry):
    manager, _ = make(tmp_path, registry, gpus_gib=(5, 5))  # an 8B at a good level needs both
    loaded = manager.load(LLAMA_8B)
    assert loaded.quantization in ("Q8_0", "Q6_K", "Q5_K_M")
    assert set(loaded.device.split("+")) == {"cuda:0", "cuda:1"}
    booked = {r.device: r for r in manager.memory_allocator.reservations(model_id=loaded.model_id)}
    assert set(booked) == {"cuda:0", "cuda:1"}
    assert all(manager.memory_allocator.ledger(d).runtime_bytes > 0 for d in booked)  # each GPU pays its runtime
    assert loaded.reserved_bytes == sum(r.total_bytes for r in booked.values())
    manager.offload(loaded.model_id)
    assert {r.device for r in manager.memory_allocator.reservations(model_id=loaded.model_id)} == {"cpu"}
    restored = manager.restore(loaded.model_id)
    assert set(restored.device.split("+")) == {"cuda:0", "cuda:1"}
    manager.unload(loaded.model_id)
    assert manager.memory_allocator.reservations() == ()
