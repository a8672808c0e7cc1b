"""The placement policy, walked end to end on simulated rigs.

An explicit device is honoured or refused, never replaced. Without one: a GPU with room (best fit)
→ make room by offloading/unloading idle, unpinned models → move a model to another GPU → split
across GPUs → a lower level → partial offload → the CPU only where ``allow_cpu`` allows (by default
only on a machine without a usable GPU). ``make_room=False`` never touches other models; pinned
means pinned; the plan is what load books; one runtime context per card.
"""

from __future__ import annotations

import json

import pytest

from app.core.estimation import GPU_RUNTIME_OVERHEAD
from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.placement import Action
from app.core.memory_allocator import AllocationError
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import (
    Decision,
    InsufficientMemoryError,
    InvalidTransitionError,
    ManagerSettings,
    ModelResourceManager,
    ModelState,
    PinnedModelError,
    PlacementRefused,
    Refusal,
)
from app.core.quantization_strategy import PlacementError, QuantizationLevel
from app.core.runtime_profile import RuntimeProfile
from app.demo import ManualClock

GiB = 1 << 30

MINISTRAL = "mistralai/Ministral-8B-v0.1"  # the seed's alias of Ministral 8B Instruct 2410
SD15 = "runwayml/stable-diffusion-v1-5"  # an alias of SD 1.5
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_1B = "meta-llama/Llama-3.2-1B-Instruct"
WHISPER_SMALL = "openai/whisper-small"
KOKORO = "hexgrad/Kokoro-82M"


class RecordingLoader:
    """Records every call (with the device a load or restore went to); can refuse to offload."""

    def __init__(self, *, can_offload: bool = True) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.can_offload = can_offload

    def load(self, metadata, placement):
        self.calls.append(("load", metadata.id, placement.device))
        return {"model": metadata.id, "device": placement.device}

    def unload(self, model_id, handle):
        self.calls.append(("unload", model_id, ""))

    def offload(self, model_id, handle):
        if not self.can_offload:
            raise NotImplementedError("this runtime cannot offload")
        self.calls.append(("offload", model_id, "cpu"))

    def restore(self, model_id, handle, device):
        self.calls.append(("restore", model_id, device))


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry(user_store=None)


def canonical(registry, model_id: str) -> str:
    return registry.get_model(model_id).id


def rig_file(tmp_path, gpus_gib, name="rig", processes=()):
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps({"gpus": [
        {"name": f"Test {g} GiB", "memory_gib": g, "compute_capability": [8, 9], "processes": list(processes)}
        for g in gpus_gib]}))
    return str(spec)


def manager_on(registry, simulate: str, *, loader=None, **settings_kw):
    clock = ManualClock(1000.0)
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=simulate, clock=clock), registry=registry,
                                   loader=loader or RecordingLoader(), settings=ManagerSettings(**settings_kw),
                                   clock=clock)
    # The story's host decodes SDXL in tiles, as a 12 GB card needs: SDXL's VAE decodes in fp32 and, whole,
    # peaks near 10 GiB at 1024² (test_sdxl_without_vae_tiling_needs_most_of_a_3060 below).
    manager.runtime_profile = RuntimeProfile(vae_tiling=True)
    return manager, clock


def test_sdxl_without_vae_tiling_needs_most_of_a_3060(registry):
    manager, _ = manager_on(registry, "rtx3060")
    manager.runtime_profile = None
    answer = manager.plan(SDXL, "fp16", make_room=False)
    phases = {p.name: p for p in (answer.placement.estimate if isinstance(answer, Decision)
                                  else answer.estimate).phases}
    assert max(phases.values(), key=lambda p: p.peak_bytes).name == "decode"
    whole = answer.placement.estimate if isinstance(answer, Decision) else answer.estimate
    tiled = manager.plan(SDXL, "fp16", make_room=False, runtime=RuntimeProfile(vae_tiling=True))
    assert isinstance(tiled, Decision)
    est = tiled.placement.estimate
    assert est.total_bytes < whole.total_bytes - 2**30  # the fp32 decode of a 1024² image: about 3 GiB less
    assert max(est.phases, key=lambda p: p.peak_bytes).name == "denoise"


def load_the_pair(manager, clock) -> None:
    """The story's pair: a 4-bit Ministral 8B, then SD 1.5, a few seconds apart."""
    manager.load(MINISTRAL, "Q4_K_M")
    clock.now += 5
    manager.load(SD15)
    clock.now += 5


def held(manager) -> dict[str, tuple]:
    """What every held model is, as a comparable value."""
    return {m.model_id: (m.state, m.device, m.quantization, m.reserved_bytes, m.pinned)
            for m in manager.loaded_models()}


def all_bookings(manager) -> set:
    return set(manager.memory_allocator.reservations())


def assert_no_overcommit(manager) -> None:
    for ledger in manager.ledgers():
        if ledger.device != "cpu":
            assert ledger.reserved_bytes <= ledger.total_bytes - ledger.safety_reserve_bytes, ledger


def assert_books_exactly(manager, model_id: str, placement) -> None:
    """The allocator holds this model's placement share by share, and nothing else for it."""
    res = {r.device: r for r in manager.memory_allocator.reservations(model_id=model_id)}
    assert set(res) == set(placement.devices)
    for share in placement.shares:
        r = res[share.device]
        assert r.category("weights") == share.weights_bytes
        assert r.category("kv_cache") == share.kv_cache_bytes
        assert r.category("compute") == share.compute_bytes
        assert r.runtime_bytes == share.runtime_bytes
        assert r.total_bytes == share.own_bytes
        mine = [b for b in manager.bookings(share.device) if b.model_id == model_id]
        assert len(mine) == 1 and mine[0].bytes == share.own_bytes


# --- 1. one RTX 3060: Ministral 8B + SD 1.5, then SDXL --------------------------------------------------
@pytest.mark.parametrize("sdxl_level", [None, "fp16"])
def test_rtx3060_sdxl_makes_room_from_named_models_or_is_refused_never_the_cpu(registry, sdxl_level):
    manager, clock = manager_on(registry, "rtx3060")
    evicted: list[tuple[str, str]] = []
    manager.evicted.connect(lambda mid, why: evicted.append((mid, why)))

    ministral = manager.load(MINISTRAL, "Q4_K_M")
    clock.now += 5
    sd15 = manager.load(SD15)
    assert ministral.model_id == canonical(registry, MINISTRAL) and sd15.model_id == canonical(registry, SD15)
    assert ministral.device == "cuda:0" and sd15.device == "cuda:0"  # co-resident
    assert ministral.quantization == "Q4_K_M" and ministral.placement.kind == "gpu" == sd15.placement.kind
    assert manager.state_of(MINISTRAL) == ModelState.LOADED and manager.state_of(SD15) == ModelState.LOADED
    assert evicted == []
    clock.now += 5

    sdxl_id = canonical(registry, SDXL)
    bookable = manager.available_bytes("cuda:0")
    try:
        sdxl = manager.load(SDXL, sdxl_level)
    except PlacementRefused as err:  # refused, with numbers, and nothing booked for it
        assert err.needed_bytes > err.available_bytes >= 0
        assert "GiB" in str(err) and err.refusal.device == "cuda:0"
        assert manager.memory_allocator.reservations(model_id=sdxl_id) == ()
        assert manager.state_of(SDXL) == ModelState.UNLOADED
        return
    assert sdxl.state == ModelState.LOADED
    assert sdxl.device == "cuda:0" and sdxl.placement.kind == "gpu"  # never the CPU, never partial
    assert {r.device for r in manager.memory_allocator.reservations(model_id=sdxl_id)} == {"cuda:0"}
    if sdxl_level is not None:
        assert sdxl.quantization == sdxl_level
    # It did not fit as things were, so named models made room, each said why.
    assert sdxl.reserved_bytes > bookable
    assert evicted, "SDXL needed room on cuda:0 but nothing was offloaded or unloaded"
    for mid, why in evicted:
        assert mid in (ministral.model_id, sd15.model_id)
        assert "make room" in why and "Stable Diffusion XL" in why, why
        state = manager.state_of(mid)
        assert state in (ModelState.OFFLOADED, ModelState.UNLOADED)
        on_gpu = [r for r in manager.memory_allocator.reservations(model_id=mid) if r.device != "cpu"]
        assert on_gpu == []
        if state == ModelState.OFFLOADED:
            assert next(m for m in manager.loaded_models() if m.model_id == mid).device == "cpu"
    for mid in {ministral.model_id, sd15.model_id} - {m for m, _ in evicted}:
        assert manager.state_of(mid) == ModelState.LOADED  # only the named ones were touched
    assert_no_overcommit(manager)


# --- 2. two RTX 3060s: all three on GPUs, nothing evicted ------------------------------------------------
def test_two_rtx3060_hold_all_three_without_evicting(registry):
    manager, clock = manager_on(registry, "rtx3060,rtx3060")
    evicted: list[tuple[str, str]] = []
    manager.evicted.connect(lambda mid, why: evicted.append((mid, why)))
    load_the_pair(manager, clock)
    manager.load(SDXL)
    assert evicted == []
    models = manager.loaded_models()
    assert len(models) == 3
    for m in models:
        assert m.state == ModelState.LOADED
        assert m.device.startswith("cuda:") and "cpu" not in m.device, m
        assert m.placement.kind in ("gpu", "split")
    assert {d for m in models for d in m.placement.devices} == {"cuda:0", "cuda:1"}
    assert_no_overcommit(manager)


# --- 3. explicit device, make_room=False ------------------------------------------------------------------
def test_explicit_device_without_make_room_is_refused_naming_it_and_touches_nothing(registry):
    manager, clock = manager_on(registry, "rtx3060")
    load_the_pair(manager, clock)
    before, booked = held(manager), all_bookings(manager)
    events: list[tuple] = []
    manager.evicted.connect(lambda *a: events.append(("evicted", *a)))
    manager.model_state_changed.connect(lambda *a: events.append(("state", *a)))

    with pytest.raises(PlacementRefused) as info:
        manager.load(SDXL, "fp16", device="cuda:0", make_room=False)
    err = info.value
    assert isinstance(err, InsufficientMemoryError) and isinstance(err, PlacementError)
    assert isinstance(err, AllocationError)
    assert "cuda:0" in str(err) and err.device == "cuda:0" and err.refusal.device == "cuda:0"
    assert err.needed_bytes > err.available_bytes and "GiB" in str(err)
    # Making room would work, so the refusal says so.
    assert err.refusal.options and any(o.startswith("with make_room") for o in err.refusal.options)
    assert "Options:" in str(err)
    # Nothing else was touched.
    assert events == []
    assert held(manager) == before and all_bookings(manager) == booked
    assert manager.state_of(SDXL) == ModelState.UNLOADED


def test_make_room_false_never_touches_other_models(registry):
    manager, clock = manager_on(registry, "rtx3060")
    load_the_pair(manager, clock)
    before, booked = held(manager), all_bookings(manager)
    evicted: list = []
    manager.evicted.connect(lambda *a: evicted.append(a))
    answer = manager.plan(SDXL, make_room=False)
    assert isinstance(answer, Refusal) and "make_room is off" in answer.reason
    with pytest.raises(PlacementRefused):
        manager.load(SDXL, make_room=False)
    assert evicted == [] and held(manager) == before and all_bookings(manager) == booked


def test_an_explicit_device_that_does_not_exist_is_refused_naming_it(registry):
    manager, _ = manager_on(registry, "rtx3060")
    with pytest.raises(PlacementRefused, match="cuda:3") as info:
        manager.load(LLAMA_1B, device="cuda:3")
    assert info.value.refusal.device == "cuda:3"
    assert manager.loaded_models() == () and manager.memory_allocator.reservations() == ()


def test_an_explicit_device_is_not_replaced_by_where_the_model_already_is(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12, 12)))
    first = manager.load(LLAMA_1B, device="cuda:0")
    assert first.device == "cuda:0"
    try:
        again = manager.load(LLAMA_1B, device="cuda:1")
    except (PlacementError, InvalidTransitionError):
        assert manager.loaded_models()[0].device == "cuda:0"  # refused, nothing changed
    else:
        assert again.device == "cuda:1", f"asked for cuda:1, got the model on {again.device}"


# --- 4. plan == what load books ---------------------------------------------------------------------------
@pytest.mark.parametrize(("gpus", "model", "level"), [
    ((12,), LLAMA_8B, None),
    ((12,), SDXL, "fp16"),
    ((12, 12), WHISPER_SMALL, None),
    ((12, 12), LLAMA_8B, "Q4_K_M"),
    ((6, 6), LLAMA_8B, None),  # split across both
])
def test_plan_is_what_load_books(registry, tmp_path, gpus, model, level):
    manager, _ = manager_on(registry, rig_file(tmp_path, gpus))
    decision = manager.plan(model, level)
    assert isinstance(decision, Decision) and decision.actions == ()
    loaded = manager.load(model, level)
    assert loaded.placement == decision.placement
    assert loaded.quantization == decision.level and loaded.device == decision.device
    if level is not None:
        assert decision.level == level
    assert_books_exactly(manager, loaded.model_id, decision.placement)
    assert loaded.reserved_bytes == decision.placement.own_bytes


def test_plan_with_room_to_make_is_what_load_does(registry):
    manager, clock = manager_on(registry, "rtx3060")
    load_the_pair(manager, clock)
    decision = manager.plan(SDXL, "fp16")
    assert isinstance(decision, Decision) and decision.actions
    evicted: list[str] = []
    manager.evicted.connect(lambda mid, why: evicted.append(mid))
    loaded = manager.load(SDXL, "fp16")
    assert loaded.placement == decision.placement
    assert evicted == [a.model_id for a in decision.actions]
    for action in decision.actions:
        expected = ModelState.OFFLOADED if action.kind == "offload" else ModelState.UNLOADED
        assert manager.state_of(action.model_id) == expected
    assert_books_exactly(manager, loaded.model_id, decision.placement)


# --- 5. load(placement=...) --------------------------------------------------------------------------------
def test_load_with_a_placement_books_exactly_that_placement(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12, 12)))
    decision = manager.plan(LLAMA_8B, "Q4_K_M", device="cuda:1")  # not where the planner would put it alone
    assert isinstance(decision, Decision) and decision.device == "cuda:1"
    loaded = manager.load(LLAMA_8B, placement=decision)
    assert loaded.placement == decision.placement and loaded.device == "cuda:1"
    assert_books_exactly(manager, loaded.model_id, decision.placement)
    # A bare Placement works too.
    other = manager.plan(WHISPER_SMALL, "fp16", device="cuda:1")
    assert isinstance(other, Decision)
    assert manager.load(WHISPER_SMALL, placement=other.placement).placement == other.placement
    assert_books_exactly(manager, canonical(registry, WHISPER_SMALL), other.placement)
    # One runtime context on cuda:1 for both, none on cuda:0.
    assert manager.memory_allocator.runtime_bytes("cuda:1") == GPU_RUNTIME_OVERHEAD
    assert manager.memory_allocator.runtime_bytes("cuda:0") == 0
    with pytest.raises(ValueError):
        manager.load(SDXL, placement=decision)  # someone else's placement


def test_a_stale_placement_is_refused_and_books_nothing_when_another_program_grew(registry, tmp_path):
    manager, clock = manager_on(registry, rig_file(tmp_path, (12,)))
    decision = manager.plan(SDXL, "fp16")
    assert isinstance(decision, Decision) and decision.actions == ()
    crowded = HardwareProfiler(simulate=rig_file(tmp_path, (12,), "crowded", [{"name": "game", "used_gib": 8}]),
                               clock=clock).get_profile()
    manager.observe(crowded)
    with pytest.raises(PlacementRefused) as info:
        manager.load(SDXL, placement=decision)
    assert info.value.refusal.device == "cuda:0" and "no longer fits" in str(info.value)
    assert manager.memory_allocator.reservations() == ()
    assert manager.state_of(SDXL) == ModelState.UNLOADED and manager.loaded_models() == ()


def test_a_stale_placement_is_refused_when_another_model_took_the_room(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12,)))
    decision = manager.plan(SDXL, "fp16")
    assert isinstance(decision, Decision)
    manager.load(LLAMA_8B, "Q8_0", make_room=False)
    before, booked = held(manager), all_bookings(manager)
    with pytest.raises(PlacementRefused):
        manager.load(SDXL, placement=decision)
    assert manager.memory_allocator.reservations(model_id=canonical(registry, SDXL)) == ()
    assert held(manager) == before and all_bookings(manager) == booked


# --- 7. the CPU only where allowed ------------------------------------------------------------------------
def test_a_refusal_on_a_gpu_machine_does_not_fall_back_to_the_cpu(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (4,)))
    answer = manager.plan(SDXL)
    assert isinstance(answer, Refusal)
    assert any("CPU" in o for o in answer.options)  # the CPU is named as an option, not taken
    with pytest.raises(PlacementRefused) as info:
        manager.load(SDXL)  # allow_cpu=None on a machine with a GPU
    assert info.value.refusal.device == "cuda:0"
    assert manager.memory_allocator.reservations() == () and manager.loaded_models() == ()

    on_cpu = manager.load(SDXL, allow_cpu=True)
    assert on_cpu.device == "cpu" and on_cpu.placement.kind == "cpu"
    assert "CPU" in on_cpu.placement.reason
    assert {r.device for r in manager.memory_allocator.reservations(model_id=on_cpu.model_id)} == {"cpu"}


def test_a_partial_offload_is_named_and_needs_allow_cpu_not_false(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (4,)))
    with pytest.raises(PlacementRefused):
        manager.load(LLAMA_8B, allow_cpu=False)
    assert manager.memory_allocator.reservations() == ()
    partly = manager.load(LLAMA_8B)
    assert partly.placement.kind == "partial" and partly.device == "cuda:0+cpu"
    assert "RAM" in partly.placement.reason and 0 < partly.gpu_layers < partly.placement.layers
    assert {r.device for r in manager.memory_allocator.reservations(model_id=partly.model_id)} == {"cuda:0", "cpu"}


def test_making_room_on_the_gpu_comes_before_the_cpu(registry):
    manager, clock = manager_on(registry, "rtx3060")
    load_the_pair(manager, clock)
    sdxl = manager.load(SDXL, allow_cpu=True)
    assert sdxl.device == "cuda:0" and sdxl.placement.kind == "gpu"


# --- 8. no GPU at all ----------------------------------------------------------------------------------
def test_a_machine_without_gpus_loads_on_the_cpu_by_default(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, ()))
    assert [d for d in manager.devices() if d != "cpu"] == []
    decision = manager.plan(LLAMA_1B)
    assert isinstance(decision, Decision) and decision.device == "cpu"
    loaded = manager.load(LLAMA_1B)
    assert loaded.state == ModelState.LOADED and loaded.device == "cpu" and loaded.placement.kind == "cpu"
    assert "GPU" in loaded.placement.reason
    assert loaded.placement == decision.placement
    assert {r.device for r in manager.memory_allocator.reservations(model_id=loaded.model_id)} == {"cpu"}


# --- 9. the move step ----------------------------------------------------------------------------------
def _move_rig(registry, tmp_path, loader):
    """cuda:0 holds SDXL (idle); Llama 8B at Q8_0 fits on cuda:0 only once SDXL is elsewhere; cuda:1 has room for
    SDXL."""
    manager, clock = manager_on(registry, rig_file(tmp_path, (12, 12)), loader=loader)
    manager.load(SDXL, "fp16", device="cuda:0")
    clock.now += 30
    return manager


def test_a_model_that_fits_only_if_an_idle_one_moves_plans_a_move(registry, tmp_path):
    manager = _move_rig(registry, tmp_path, RecordingLoader())
    decision = manager.plan(LLAMA_8B, "Q8_0", device="cuda:0")
    assert isinstance(decision, Decision)
    assert decision.device == "cuda:0"
    assert [(a.kind, a.model_id, a.source, a.target) for a in decision.actions] == [
        ("move", canonical(registry, SDXL), "cuda:0", "cuda:1")], decision.describe()


@pytest.mark.parametrize("can_offload", [True, False])
def test_load_performs_a_move(registry, tmp_path, can_offload):
    loader = RecordingLoader(can_offload=can_offload)
    manager = _move_rig(registry, tmp_path, loader)
    sdxl = canonical(registry, SDXL)
    base = manager.plan(LLAMA_8B, "Q8_0", device="cuda:0")
    assert isinstance(base, Decision)
    held_bytes = manager.loaded_models()[0].reserved_bytes
    move = Action("move", sdxl, "Stable Diffusion XL Base 1.0", "cuda:0", "cuda:1", held_bytes,
                  "moved to make room for Llama 3.1 8B Instruct on cuda:0")
    # The planner's own move when it plans one; else that move, built by hand, so the lifecycle's
    # side is tested whatever the planner does (its side is the test above).
    decision = base if [a.kind for a in base.actions] == ["move"] else Decision(base.placement, (move,))
    evicted: list[tuple[str, str]] = []
    manager.evicted.connect(lambda mid, why: evicted.append((mid, why)))
    loader.calls.clear()
    loaded = manager.load(LLAMA_8B, placement=decision)
    assert loaded.device == "cuda:0" and loaded.state == ModelState.LOADED
    moved = next(m for m in manager.loaded_models() if m.model_id == sdxl)
    assert moved.state == ModelState.LOADED and moved.device == "cuda:1"
    assert {r.device for r in manager.memory_allocator.reservations(model_id=sdxl)} == {"cuda:1"}
    assert_books_exactly(manager, sdxl, moved.placement)
    assert_books_exactly(manager, loaded.model_id, decision.placement)
    if can_offload:
        expected = [("offload", sdxl, "cpu"), ("restore", sdxl, "cuda:1")]
    else:
        expected = [("unload", sdxl, ""), ("load", sdxl, "cuda:1")]
    assert loader.calls == [*expected, ("load", loaded.model_id, "cuda:0")]
    assert [m for m, _ in evicted] == [sdxl] and "moved" in evicted[0][1]
    assert manager.memory_allocator.runtime_bytes("cuda:0") == GPU_RUNTIME_OVERHEAD
    assert manager.memory_allocator.runtime_bytes("cuda:1") == GPU_RUNTIME_OVERHEAD
    assert_no_overcommit(manager)


# --- 10. ensembles across GPUs ------------------------------------------------------------------------------
def test_plan_ensemble_packs_across_both_gpus_and_load_accepts_each_placement(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12, 12)))
    plan = manager.plan_ensemble([LLAMA_8B, SDXL, WHISPER_SMALL])
    assert plan.feasible and len(plan.items) == 3
    assert plan.total_bytes > max(plan.available_bytes[d] for d in ("cuda:0", "cuda:1"))  # not on one card
    assert {it.device for it in plan.items} == {"cuda:0", "cuda:1"}
    evicted: list = []
    manager.evicted.connect(lambda *a: evicted.append(a))
    for item in plan.items:
        p = item.placement
        assert p is not None and p.device == item.device and p.level == item.quantization
        loaded = manager.load(item.model_id, placement=p)
        assert loaded.device == item.device and loaded.quantization == item.quantization
        assert_books_exactly(manager, loaded.model_id, p)
    assert evicted == []
    assert {m.state for m in manager.loaded_models()} == {ModelState.LOADED}
    for device in ("cuda:0", "cuda:1"):
        assert manager.memory_allocator.runtime_bytes(device) == GPU_RUNTIME_OVERHEAD
    assert_no_overcommit(manager)


# --- 11. levels ---------------------------------------------------------------------------------------------
def test_an_uncommon_gguf_level_loads_or_refuses_cleanly_and_unloads(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12,)))
    try:
        loaded = manager.load(LLAMA_8B, "Q5_1")
    except PlacementRefused:
        assert manager.memory_allocator.reservations() == ()
    else:
        assert loaded.state == ModelState.LOADED and loaded.quantization == "Q5_1"
    manager.unload(LLAMA_8B)
    assert manager.state_of(LLAMA_8B) == ModelState.UNLOADED
    assert manager.loaded_models() == () and manager.memory_allocator.reservations() == ()


@pytest.mark.parametrize("level", [QuantizationLevel.INT4, "int4", "4bit"])
def test_level_names_resolve_to_one_canonical_level(registry, tmp_path, level):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12,)))
    decision = manager.plan(LLAMA_8B, level)
    loaded = manager.load(LLAMA_8B, level)
    assert loaded.quantization == "int4" == loaded.placement.level
    assert isinstance(decision, Decision) and decision.level == "int4"
    assert manager.load(LLAMA_8B, "int4").model_id == loaded.model_id  # the same level: idempotent
    manager.unload(LLAMA_8B)
    assert manager.memory_allocator.reservations() == ()


# --- pinned means pinned ------------------------------------------------------------------------------------
def test_pinned_models_are_never_touched_by_policy_or_bulk_calls(registry, tmp_path):
    manager, clock = manager_on(registry, rig_file(tmp_path, (12, 12)), keep_alive_s=10)
    pinned = manager.load(SDXL, "fp16", device="cuda:0", pin=True)
    assert pinned.pinned
    before = held(manager)[pinned.model_id]
    with pytest.raises(PinnedModelError):
        manager.unload(SDXL)
    with pytest.raises(PinnedModelError):
        manager.offload(SDXL)
    with pytest.raises(PinnedModelError):
        manager.move(SDXL, "cuda:1")
    with pytest.raises(PinnedModelError):
        manager.swap(SDXL, SD15)
    report = dict(manager.free_memory([SDXL]))
    assert report[pinned.model_id].startswith("left as it is")
    report = dict(manager.free_memory([SDXL], offload=True))
    assert report[pinned.model_id].startswith("left as it is")
    clock.now += 10_000
    manager.tick()  # past its keep-alive
    # A load that would need its room goes elsewhere or is refused.
    evicted: list = []
    manager.evicted.connect(lambda *a: evicted.append(a))
    with pytest.raises(PlacementRefused):
        manager.load(LLAMA_8B, "Q8_0", device="cuda:0")
    assert evicted == []
    assert held(manager)[pinned.model_id] == before
    manager.unpin(SDXL)
    manager.unload(SDXL)
    assert manager.loaded_models() == () and manager.memory_allocator.reservations() == ()


@pytest.mark.parametrize("pin", [True, False])
def test_pinned_models_are_not_requantized(registry, tmp_path, pin):
    manager, clock = manager_on(registry, rig_file(tmp_path, (12,)), requantize_after_ticks=2,
                                auto_requantize=True)
    loaded = manager.load(LLAMA_8B, "Q8_0", pin=pin)
    crowded = HardwareProfiler(simulate=rig_file(tmp_path, (12,), "crowded", [{"name": "game", "used_gib": 3.5}]),
                               clock=clock).get_profile()
    proposals: list = []
    manager.quantization_proposed.connect(proposals.append)
    for _ in range(4):
        manager.tick(crowded)
    now = next(m for m in manager.loaded_models() if m.model_id == loaded.model_id)
    if pin:
        assert [p for p in proposals if p.model_id == loaded.model_id] == []
        assert now.quantization == "Q8_0" and now.state == ModelState.LOADED and now.pinned
    else:  # the control: the same pressure re-quantizes a model that is not pinned
        assert [p.model_id for p in proposals][:1] == [loaded.model_id]
        assert now.quantization != "Q8_0"


# --- one runtime context per card ------------------------------------------------------------------------------
def test_two_models_on_one_card_book_one_runtime_context(registry, tmp_path):
    manager, _ = manager_on(registry, rig_file(tmp_path, (12,)))
    for first, second in ((LLAMA_1B, WHISPER_SMALL), (WHISPER_SMALL, LLAMA_1B)):
        a = manager.load(first)
        b = manager.load(second)
        assert a.device == b.device == "cuda:0"
        ledger = manager.memory_allocator.ledger("cuda:0")
        assert ledger.runtime_bytes == GPU_RUNTIME_OVERHEAD
        assert ledger.reserved_bytes == a.reserved_bytes + b.reserved_bytes + GPU_RUNTIME_OVERHEAD
        contexts = [x for x in manager.bookings("cuda:0") if x.model_id is None]
        assert [x.bytes for x in contexts] == [GPU_RUNTIME_OVERHEAD]
        manager.unload(first)  # either one: exactly one context stays for the other
        ledger = manager.memory_allocator.ledger("cuda:0")
        assert ledger.runtime_bytes == GPU_RUNTIME_OVERHEAD
        assert ledger.reserved_bytes == b.reserved_bytes + GPU_RUNTIME_OVERHEAD
        manager.unload(second)
        assert manager.memory_allocator.ledger("cuda:0").reserved_bytes == 0
        assert [x for x in manager.bookings("cuda:0") if x.model_id is None] == []
