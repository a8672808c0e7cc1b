"""MemoryAllocator: reconciling bookings with measurements, pressure, thread-safety, and its invariants."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from app.core.hardware.snapshot import GpuDevice, GpuProcess, HardwareProfile, HostMemory
from app.core.memory_allocator import AllocationError, AllocatorSettings, MemoryAllocator, PressureLevel
from app.core.quantization_strategy import QuantizationConfig, QuantizationLevel

GiB = 1 << 30
MiB = 1 << 20
ME = os.getpid()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def profile(used_gib=2.0, total_gib=24.0, procs=(), ram_avail_gib=32.0, lost=False, rss=500 * MiB) -> HardwareProfile:
    gpu = GpuDevice(index=0, name="GPU", kind="nvidia", total_bytes=int(total_gib * GiB),
                    used_bytes=int(used_gib * GiB), free_bytes=int((total_gib - used_gib) * GiB),
                    processes=tuple(procs), lost=lost)
    host = HostMemory(total_bytes=64 * GiB, available_bytes=int(ram_avail_gib * GiB), used_bytes=0,
                      process_rss_bytes=rss)
    return HardwareProfile(0.0, (gpu,), host)


def make(**kw) -> tuple[MemoryAllocator, Clock]:
    clock = Clock()
    alloc = MemoryAllocator(profile(**kw), settings=AllocatorSettings(gpu_reserve_bytes=GiB, cpu_reserve_bytes=2 * GiB),
                            clock=clock)
    return alloc, clock


def test_available_counts_other_programs_and_the_reserve():
    alloc, _ = make(used_gib=5.0)  # 5 GiB used by someone else
    assert alloc.available_bytes("cuda:0") == 24 * GiB - 5 * GiB - GiB


def test_a_booking_not_yet_measured_is_subtracted():
    alloc, _ = make(used_gib=2.0)
    alloc.reserve("a", "cuda:0", {"weights": 6 * GiB})
    ledger = alloc.ledger("cuda:0")
    assert ledger.unreflected_bytes == 6 * GiB
    assert ledger.available_bytes == 22 * GiB - 6 * GiB - GiB


def test_a_loaded_model_is_not_counted_twice_when_our_process_holds_it():
    alloc, _ = make(used_gib=2.0)
    alloc.reserve("a", "cuda:0", {"weights": 6 * GiB})
    # The model is now really on the card, held by this process: the driver reports it.
    alloc.update(profile(used_gib=8.2, procs=[GpuProcess(ME, "python", int(6.2 * GiB))]))
    ledger = alloc.ledger("cuda:0")
    assert ledger.measured_ours_bytes == int(6.2 * GiB)
    assert ledger.unreflected_bytes == 0
    # free 15.8 + ours 6.2 - max(6, 6.2) - reserve 1 = 14.8 GiB; not 15.8 - 6 - 1 = 8.8.
    assert ledger.available_bytes == pytest.approx(14.8 * GiB, abs=MiB)


@pytest.mark.parametrize("ours_known", [True, False])
def test_memory_released_since_the_last_measurement_is_bookable_at_once(ours_known):
    """An unload or offload frees a model now; the last measurement still shows it until the next one."""
    alloc, clock = make(used_gib=2.0)
    alloc.reserve("a", "cuda:0", {"weights": 6 * GiB, "overhead": GiB // 2})
    alloc.reserve("b", "cuda:0", {"weights": 2 * GiB, "overhead": GiB // 2})
    alloc.set_state("a", "loaded")
    alloc.set_state("b", "loaded")
    clock.t += 1
    held = int(8.5 * GiB) if ours_known else None
    alloc.update(profile(used_gib=10.5, procs=[GpuProcess(ME, "python", held)]))
    before = alloc.available_bytes("cuda:0")
    assert before == pytest.approx((24 - 10.5 - 1) * GiB, abs=MiB)
    alloc.release("a")
    # a's 6 GiB are free now, not at the next sample; b still needs the shared context.
    assert alloc.available_bytes("cuda:0") == pytest.approx(before + 6 * GiB, abs=MiB)
    alloc.release("b")  # the last one: its 2 GiB and the context it alone still needed
    assert alloc.available_bytes("cuda:0") == pytest.approx(before + 8.5 * GiB, abs=MiB)
    # The next measurement agrees, and nothing is counted twice.
    alloc.update(profile(used_gib=2.0))
    assert alloc.available_bytes("cuda:0") == pytest.approx((24 - 2 - 1) * GiB, abs=MiB)


def test_when_the_driver_cannot_say_finished_loads_are_taken_as_measured():
    alloc, clock = make(used_gib=2.0)
    alloc.reserve("a", "cuda:0", {"weights": 6 * GiB})
    alloc.set_state("a", "loaded")
    clock.t += 1
    # Our process is listed but without a byte count (WDDM, MIG): the next measurement shows the load.
    alloc.update(profile(used_gib=8.0, procs=[GpuProcess(ME, "python", None)]))
    ledger = alloc.ledger("cuda:0")
    assert ledger.measured_ours_bytes is None and ledger.unreflected_bytes == 0
    assert ledger.available_bytes == 16 * GiB - GiB


def test_reserve_refuses_with_needed_and_available():
    alloc, _ = make(used_gib=20.0)
    with pytest.raises(AllocationError) as err:
        alloc.reserve("big", "cuda:0", {"weights": 8 * GiB})
    assert err.value.needed_bytes == 8 * GiB and err.value.available_bytes == 3 * GiB
    assert "unload or offload" in str(err.value)
    assert alloc.reservations() == ()


def test_rebooking_replaces_and_release_frees():
    alloc, _ = make()
    alloc.reserve("a", "cuda:0", {"weights": 10 * GiB})
    alloc.reserve("a", "cuda:0", {"weights": 12 * GiB})  # replaces: 12 fits although 10 + 12 would not
    assert alloc.ledger("cuda:0").reserved_bytes == 12 * GiB
    assert [r.total_bytes for r in alloc.release("a")] == [12 * GiB]
    assert alloc.release("a") == ()
    assert alloc.ledger("cuda:0").reserved_bytes == 0


def test_bad_bookings_are_rejected():
    alloc, _ = make()
    with pytest.raises(ValueError, match="unknown memory categories"):
        alloc.reserve("a", "cuda:0", {"weigths": GiB})
    with pytest.raises(ValueError, match="negative"):
        alloc.reserve("a", "cuda:0", {"weights": -1})


def test_pressure_levels_and_events():
    alloc, _ = make(used_gib=2.0)
    seen = []
    alloc.pressure_changed.connect(lambda d, lv: seen.append((d, lv)))
    changed = []
    alloc.allocation_changed.connect(changed.append)
    alloc.reserve("a", "cuda:0", {"weights": 18 * GiB})  # 20 of 24 GiB committed: 83%
    assert alloc.pressure("cuda:0") == PressureLevel.ELEVATED
    alloc.update(profile(used_gib=21.5))  # someone else grabs memory too
    assert alloc.pressure("cuda:0") == PressureLevel.CRITICAL
    assert alloc.is_under_memory_pressure()
    assert [lv for d, lv in seen if d == "cuda:0"] == [PressureLevel.ELEVATED, PressureLevel.CRITICAL]
    assert changed == ["cuda:0"]


def test_lost_gpu_has_no_room():
    alloc, _ = make()
    alloc.update(profile(lost=True))
    ledger = alloc.ledger("cuda:0")
    assert ledger.lost and ledger.available_bytes == 0
    with pytest.raises(AllocationError):
        alloc.reserve("a", "cuda:0", {"weights": 1})


def test_cpu_ledger_uses_available_ram():
    alloc, _ = make(ram_avail_gib=10.0)
    assert alloc.available_bytes("cpu") == 8 * GiB
    alloc.reserve("c", "cpu", {"weights": 3 * GiB})
    assert alloc.available_bytes("cpu") == 5 * GiB


def test_seed_api():
    alloc, _ = make(used_gib=2.0)
    config = QuantizationConfig(level=QuantizationLevel.INT4, description="4-bit", estimated_memory_gb=4.0)
    assert alloc.can_allocate("m", config)
    allocation = alloc.allocate("m", config)
    assert allocation is not None and allocation.vram_allocated_gb == pytest.approx(4.0)
    assert allocation.device == "cuda:0"
    assert alloc.get_total_allocated_vram() == pytest.approx(4.0) and alloc.get_total_allocated_ram() == 0
    huge = QuantizationConfig(level=QuantizationLevel.FLOAT16, description="16-bit", estimated_memory_gb=40.0)
    assert alloc.allocate("huge", huge) is None
    alloc.deallocate("m")
    assert alloc.get_total_allocated_vram() == 0 and not alloc.is_under_memory_pressure()


def test_eight_threads_never_overcommit():
    alloc, _ = make(used_gib=0.0, total_gib=17.0)  # 16 GiB bookable
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(300):
                mid = f"m{n}-{i % 5}"
                try:
                    alloc.reserve(mid, "cuda:0", {"weights": (1 + (i % 3)) * GiB})
                except AllocationError:
                    pass
                assert alloc.ledger("cuda:0").reserved_bytes <= 16 * GiB
                if i % 2:
                    alloc.release(mid)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert alloc.ledger("cuda:0").reserved_bytes <= 16 * GiB


class LedgerMachine(RuleBasedStateMachine):
    """Whatever is booked, released or measured, no device is ever over-committed and the ledger
    holds exactly what was booked and not released."""

    models = Bundle("models")

    def __init__(self) -> None:
        super().__init__()
        self.alloc = MemoryAllocator(profile(used_gib=1.0), settings=AllocatorSettings(gpu_reserve_bytes=GiB,
                                                                                      cpu_reserve_bytes=GiB))
        self.booked: dict[tuple[str, str], int] = {}
        self.external = 1.0

    @rule(target=models, name=st.sampled_from([f"m{i}" for i in range(6)]))
    def model(self, name):
        return name

    @rule(mid=models, device=st.sampled_from(["cuda:0", "cpu"]), gib=st.integers(1, 12))
    def reserve(self, mid, device, gib):
        before = max(0, self.alloc.ledger(device).balance_bytes + self.booked.get((mid, device), 0))
        try:
            self.alloc.reserve(mid, device, {"weights": gib * GiB})
        except AllocationError:
            assert gib * GiB > before
            return
        self.booked[(mid, device)] = gib * GiB

    @rule(mid=models)
    def release(self, mid):
        self.alloc.release(mid)
        for key in [k for k in self.booked if k[0] == mid]:
            del self.booked[key]

    @rule(used=st.floats(0.0, 8.0))
    def measure(self, used):
        self.external = used
        self.alloc.update(profile(used_gib=used))

    @invariant()
    def ledger_matches_bookings(self):
        for device in ("cuda:0", "cpu"):
            ledger = self.alloc.ledger(device)
            assert ledger.reserved_bytes == sum(b for (m, d), b in self.booked.items() if d == device)
            assert ledger.available_bytes >= 0

    @invariant()
    def never_overcommitted_at_booking_time(self):
        # Bookings can exceed room only if someone else grew after we booked; never by our own doing.
        gpu = sum(b for (m, d), b in self.booked.items() if d == "cuda:0")
        assert gpu <= 24 * GiB - GiB


TestLedger = LedgerMachine.TestCase
TestLedger.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
