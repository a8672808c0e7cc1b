"""The simulated runtime: with --simulate, a load shows in the simulated GPU's measured memory."""

from __future__ import annotations

import pytest

from app.core.hardware.simulated import HOLD_JITTER
from app.core.hardware_profiler import HardwareProfiler
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader
from app.core.runtime_profile import RuntimeProfile

MINISTRAL = "mistralai/Ministral-8B-Instruct-2410"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.fixture
def rig():
    t = [1000.0]
    profiler = HardwareProfiler(simulate="rtx3060,rtx3060", clock=lambda: t[0])
    loader = SimulatedLoader.for_profiler(profiler)
    assert loader is not None
    manager = ModelResourceManager(profiler=profiler, registry=ModelRegistry(user_store=None), loader=loader,
                                   clock=lambda: t[0])
    return manager, profiler, t


def _ledger(manager, device):
    return next(x for x in manager.ledgers() if x.device == device)


def test_a_real_profiler_gets_no_simulated_loader():
    from app.core.hardware.host import HostBackend

    assert SimulatedLoader.for_profiler(HardwareProfiler(backends=[], host=HostBackend())) is None


def test_load_raises_measured_usage_by_what_was_booked_and_unload_lowers_it(rig):
    manager, profiler, t = rig
    before = profiler.get_profile().gpus[0]
    manager.load(MINISTRAL, "Q4_K_M", "cuda:0")
    manager.load(SD15, "fp16", "cuda:0")
    t[0] += 1
    manager.observe(profiler.get_profile())
    ledger = _ledger(manager, "cuda:0")
    # What this process holds on the card, as measured, is what was booked: both models and one context.
    assert ledger.measured_ours_bytes == pytest.approx(ledger.reserved_bytes, rel=HOLD_JITTER)
    after = profiler.get_profile().gpus[0]
    assert after.used_bytes - before.used_bytes == pytest.approx(ledger.reserved_bytes, rel=0.15)
    assert _ledger(manager, "cuda:1").measured_ours_bytes == 0
    manager.unload(MINISTRAL)
    manager.observe(profiler.get_profile())
    ledger = _ledger(manager, "cuda:0")
    assert ledger.measured_ours_bytes == pytest.approx(ledger.reserved_bytes, rel=HOLD_JITTER)
    manager.unload(SD15)
    manager.observe(profiler.get_profile())
    assert _ledger(manager, "cuda:0").measured_ours_bytes == 0


def test_offload_frees_the_gpu_and_restore_and_move_hold_it_again(rig):
    manager, profiler, t = rig
    manager.load(MINISTRAL, "Q4_K_M", "cuda:0")
    manager.offload(MINISTRAL)
    manager.observe(profiler.get_profile())
    assert _ledger(manager, "cuda:0").measured_ours_bytes == 0
    manager.restore(MINISTRAL)
    manager.move(MINISTRAL, "cuda:1")
    manager.observe(profiler.get_profile())
    assert _ledger(manager, "cuda:0").measured_ours_bytes == 0
    moved = _ledger(manager, "cuda:1")
    assert moved.reserved_bytes > 5 * (1 << 30)
    assert moved.measured_ours_bytes == pytest.approx(moved.reserved_bytes, rel=HOLD_JITTER)


def test_room_made_by_an_offload_is_bookable_before_the_next_measurement():
    """The yardstick walk with the simulated runtime and a sampler feeding the ledger: the offloaded
    model's memory still shows in the last measurement, yet the load that needed it goes through."""
    t = [1000.0]
    profiler = HardwareProfiler(simulate="rtx3060", clock=lambda: t[0])
    manager = ModelResourceManager(profiler=profiler, registry=ModelRegistry(user_store=None),
                                   loader=SimulatedLoader.for_profiler(profiler), clock=lambda: t[0])
    manager.runtime_profile = RuntimeProfile(vae_tiling=True)  # SDXL decoded in tiles, as on a 12 GB card
    evicted = []
    manager.evicted.connect(lambda mid, why: evicted.append(mid))
    for mid, level in ((MINISTRAL, "Q4_K_M"), (SD15, None)):
        manager.load(mid, level)
        t[0] += 1
        manager.observe(profiler.get_profile())  # what the sampler does every second
    sdxl = manager.load("stabilityai/stable-diffusion-xl-base-1.0")
    # SDXL in diffusers peaks at 1024² while its VAE decodes in fp32: both others have to go to RAM.
    assert sdxl.device == "cuda:0" and sorted(evicted) == sorted([MINISTRAL, SD15])
    assert manager.state_of(MINISTRAL).value == "offloaded" and manager.state_of(SD15).value == "offloaded"
    manager.observe(profiler.get_profile())
    ledger = _ledger(manager, "cuda:0")
    assert ledger.reserved_bytes <= ledger.total_bytes - ledger.safety_reserve_bytes
    assert ledger.measured_ours_bytes == pytest.approx(ledger.reserved_bytes, rel=HOLD_JITTER)
