"""The manager under faults: the cases a flaky loader and a changing ledger used to break, each pinned down.

Each test names the old failure it guards against (from probing an 8-thread churn with a loader that
sleeps and raises).
"""

from __future__ import annotations

import pytest

from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.placement import Refusal
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import (
    InvalidTransitionError,
    LoaderError,
    ManagerSettings,
    ModelResourceManager,
    ModelState,
    PlacementRefused,
)
from app.demo import ManualClock
from tests.core.test_manager_lifecycle import FakeLoader, Faults, LoaderFault, rig_file

GiB = 1 << 30
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_3B = "meta-llama/Llama-3.2-3B-Instruct"
LLAMA_1B = "meta-llama/Llama-3.2-1B-Instruct"
REGISTRY = ModelRegistry(user_store=None)


def make(tmp_path, gpus_gib=(8,), **settings):
    clock = ManualClock(1000.0)
    faults = Faults()
    loader = FakeLoader(faults)
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=rig_file(tmp_path, gpus_gib), clock=clock),
                                   registry=REGISTRY, loader=loader, settings=ManagerSettings(**settings),
                                   clock=clock)
    return manager, faults, loader, clock


def bookings(manager) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for device in manager.devices():
        for b in manager.bookings(device):
            if b.model_id is not None:
                out.setdefault(b.model_id, {})[device] = b.bytes
    return out


def test_a_failed_restore_leaves_the_model_offloaded_in_ram_and_booked_only_there(tmp_path):
    """Was: OFFLOADED but still booked on the GPU."""
    manager, faults, _, _ = make(tmp_path)
    manager.load(LLAMA_3B, "Q8_0")
    manager.offload(LLAMA_3B)
    faults.failing.add("restore")
    with pytest.raises(LoaderError, match="stays offloaded"):
        manager.restore(LLAMA_3B)
    assert manager.state_of(LLAMA_3B) == ModelState.OFFLOADED
    assert set(bookings(manager)[LLAMA_3B]) == {"cpu"}


def test_a_restore_that_cannot_fit_evicts_nobody_and_never_books_ram_beyond_what_is_free(tmp_path):
    """Was: it evicted other models, failed anyway, and force-booked RAM to -2.85 GiB."""
    manager, _, _, clock = make(tmp_path)
    manager.load(LLAMA_3B, "Q8_0")
    manager.offload(LLAMA_3B)
    clock.now += 5
    manager.load(LLAMA_8B, "Q4_K_M", pin=True)  # pinned: the policy may not move it for the restore
    before = bookings(manager)
    evicted = []
    manager.evicted.connect(lambda *a: evicted.append(a))
    with pytest.raises(PlacementRefused) as err:
        manager.restore(LLAMA_3B)
    assert "offloaded" in str(err.value) or "cuda:0" in str(err.value)
    assert evicted == [] and bookings(manager) == before
    assert manager.state_of(LLAMA_3B) == ModelState.OFFLOADED
    for ledger in manager.ledgers():
        assert ledger.balance_bytes >= 0 or ledger.device != "cpu"


def test_a_placement_that_no_longer_fits_books_nothing_and_leaves_no_record(tmp_path):
    """Was: a refused booking left a record that unload() could not remove."""
    manager, _, _, _ = make(tmp_path)
    plan = manager.plan(LLAMA_8B, "Q4_K_M", "cuda:0")
    manager.load(LLAMA_3B, "Q8_0", "cuda:0")  # memory changes after the plan was shown
    with pytest.raises(PlacementRefused, match="no longer fits"):
        manager.load(LLAMA_8B, placement=plan)
    assert manager.state_of(LLAMA_8B) == ModelState.UNLOADED
    assert LLAMA_8B not in bookings(manager)
    assert all(m.model_id != LLAMA_8B for m in manager.loaded_models())
    manager.unload(LLAMA_8B)  # a no-op, not an error


def test_a_victims_offload_error_aborts_the_load_and_everything_done_is_announced(tmp_path):
    """Was: the load aborted without announcing the transitions already made."""
    manager, faults, _, clock = make(tmp_path, gpus_gib=(8,))
    manager.load(LLAMA_3B, "Q8_0")
    clock.now += 5
    states: list[tuple] = []
    manager.model_state_changed.connect(lambda *a: states.append(a))
    faults.failing.add("offload")
    with pytest.raises(LoaderError, match="offload failed"):
        manager.load(LLAMA_8B, "Q5_K_M", "cuda:0")  # needs the 3B out of the way
    # The victim went OFFLOADING and back to LOADED, both announced; it keeps its GPU booking.
    assert [(s[1].value, s[2].value) for s in states if s[0] == LLAMA_3B] == [
        ("loaded", "offloading"), ("offloading", "loaded")]
    assert manager.state_of(LLAMA_3B) == ModelState.LOADED and "cuda:0" in bookings(manager)[LLAMA_3B]
    assert LLAMA_8B not in bookings(manager) and manager.state_of(LLAMA_8B) == ModelState.UNLOADED


def test_a_model_whose_unload_failed_is_never_booked_twice(tmp_path):
    """Was: reloaded elsewhere while its first booking stayed, so it was booked twice."""
    manager, faults, _, _ = make(tmp_path, gpus_gib=(8, 8))
    manager.load(LLAMA_1B, device="cuda:0")
    faults.failing.add("unload")
    with pytest.raises(LoaderError):
        manager.unload(LLAMA_1B)
    assert manager.state_of(LLAMA_1B) == ModelState.FAILED
    with pytest.raises(InvalidTransitionError, match="unload it first"):
        manager.load(LLAMA_1B, device="cuda:1")
    assert set(bookings(manager)[LLAMA_1B]) == {"cuda:0"}
    faults.failing.clear()
    manager.unload(LLAMA_1B)
    assert bookings(manager) == {} and manager.loaded_models() == ()


def test_everything_unloaded_leaves_no_record_and_no_booking(tmp_path):
    """Was: FAILED models kept bookings and unloaded records stayed behind after churn."""
    manager, faults, _, clock = make(tmp_path, gpus_gib=(8, 8))
    faults.fail_rate = 0.3
    for n in range(40):
        mid = (LLAMA_1B, LLAMA_3B, LLAMA_8B)[n % 3]
        try:
            if n % 2 == 0:
                manager.load(mid, "Q4_K_M")
            else:
                manager.unload(mid)
        except (LoaderError, LoaderFault, PlacementRefused, InvalidTransitionError):
            pass  # a failed load re-raises the loader's own error
        clock.now += 1
    faults.fail_rate = 0.0
    for m in manager.loaded_models():
        manager.unload(m.model_id)
    assert manager.loaded_models() == () and bookings(manager) == {}
    assert all(ledger.reserved_bytes == 0 for ledger in manager.ledgers())


def test_a_refusal_is_a_value_with_numbers_and_options(tmp_path):
    manager, _, _, _ = make(tmp_path)
    answer = manager.plan(LLAMA_8B, "F16", "cuda:0", make_room=False)
    assert isinstance(answer, Refusal) and answer.needed_bytes > answer.available_bytes > 0
    assert answer.options and "cuda:0" in answer.reason
