"""Pressure with hysteresis: a level rises at its threshold and falls only 3 % of the device below it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.core.hardware.snapshot import GpuDevice, HardwareProfile, HostMemory
from app.core.memory_allocator import AllocatorSettings, MemoryAllocator, PressureLevel

GiB = 1 << 30
S = AllocatorSettings()
OK, ELEVATED, HIGH, CRITICAL = PressureLevel.OK, PressureLevel.ELEVATED, PressureLevel.HIGH, PressureLevel.CRITICAL


def test_rises_at_the_threshold_and_falls_only_below_it_minus_the_margin():
    assert S.hysteresis == 0.03
    assert S.level(0.80, OK) == ELEVATED
    assert S.level(0.79, ELEVATED) == ELEVATED  # just under: held
    assert S.level(0.771, ELEVATED) == ELEVATED
    assert S.level(0.769, ELEVATED) == OK
    assert S.level(0.88, HIGH) == HIGH and S.level(0.86, HIGH) == ELEVATED and S.level(0.5, CRITICAL) == OK
    assert S.level(0.95, CRITICAL) == CRITICAL and S.level(0.93, CRITICAL) == HIGH
    assert S.level(0.79) == OK  # nothing to hold without a previous level


@given(st.floats(0.0, 1.0), st.sampled_from(list(PressureLevel)))
def test_never_below_the_plain_level_and_never_above_the_previous_unless_rising(fraction, previous):
    level = S.level(fraction, previous)
    plain = S.level(fraction)
    assert level.rank >= plain.rank
    assert level.rank <= max(plain.rank, previous.rank)
    assert level.rank >= S.level(fraction + S.hysteresis).rank or level == plain


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=60), st.floats(0.0, 0.029))
def test_wobble_smaller_than_the_margin_changes_level_at_most_once(base, wobble):
    """A device whose use wobbles by less than the margin around any point flips at most once."""
    centre = base[0]
    previous = S.level(centre)
    changes = 0
    for i, _ in enumerate(base[1:]):
        fraction = min(1.0, max(0.0, centre + (wobble if i % 2 else 0.0)))
        level = S.level(fraction, previous)
        changes += level != previous
        previous = level
    assert changes <= 1


def _profile(used_gib: float) -> HardwareProfile:
    gpu = GpuDevice(index=0, name="GPU", kind="nvidia", total_bytes=100 * GiB, used_bytes=int(used_gib * GiB),
                    free_bytes=int((100 - used_gib) * GiB))
    return HardwareProfile(0.0, (gpu,), HostMemory(total_bytes=64 * GiB, available_bytes=32 * GiB, used_bytes=0))


def test_allocator_announces_one_change_for_a_flapping_device():
    settings = AllocatorSettings(gpu_reserve_bytes=0)
    alloc = MemoryAllocator(_profile(10), settings=settings, clock=lambda: 0.0)
    seen: list[PressureLevel] = []
    alloc.pressure_changed.connect(lambda _d, level: seen.append(level))
    for used in [80.5, 79.0, 80.2, 78.5, 81.0, 79.5] * 5:
        alloc.update(_profile(used))
    assert seen == [ELEVATED]
    assert alloc.ledger("cuda:0").pressure == ELEVATED
    alloc.update(_profile(76.0))
    assert seen == [ELEVATED, OK] and alloc.pressure("cuda:0") == OK


def test_without_hysteresis_the_same_device_flaps():
    """The test above can fail: with no margin, each crossing is announced."""
    alloc = MemoryAllocator(_profile(10), settings=AllocatorSettings(gpu_reserve_bytes=0, hysteresis=0.0),
                            clock=lambda: 0.0)
    seen: list[PressureLevel] = []
    alloc.pressure_changed.connect(lambda _d, level: seen.append(level))
    for used in [80.5, 79.0] * 3:
        alloc.update(_profile(used))
    assert seen == [ELEVATED, OK] * 3


def test_configure_re_evaluates_pressure_at_runtime():
    alloc = MemoryAllocator(_profile(70), settings=AllocatorSettings(gpu_reserve_bytes=0), clock=lambda: 0.0)
    seen: list[tuple[str, PressureLevel]] = []
    alloc.pressure_changed.connect(lambda d, level: seen.append((d, level)))
    alloc.configure(AllocatorSettings(gpu_reserve_bytes=15 * GiB, elevated=0.6))
    assert seen == [("cuda:0", ELEVATED)]
    assert alloc.ledger("cuda:0").safety_reserve_bytes == 15 * GiB and alloc.available_bytes("cuda:0") == 15 * GiB
