"""BookingHistory: bookings as intervals over time, bounded, and the manager's query for it."""

from __future__ import annotations

import pytest

from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.booking_history import BookingHistory, BookingInterval
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import ManagerSettings, ModelResourceManager, SimulatedLoader

GiB = 1 << 30
LLAMA_1B = "meta-llama/Llama-3.2-1B-Instruct"
LLAMA_3B = "meta-llama/Llama-3.2-3B-Instruct"


def test_a_booking_opens_an_interval_and_its_end_closes_it():
    h = BookingHistory()
    h.record("cuda:0", [("a", "A", 5 * GiB)], now=10.0)
    h.record("cuda:0", [("a", "A", 5 * GiB), ("b", "B", GiB)], now=20.0)
    h.record("cuda:0", [("b", "B", GiB)], now=30.0)
    assert h.intervals("cuda:0") == (BookingInterval("cuda:0", "a", "A", 5 * GiB, 10.0, 30.0),
                                     BookingInterval("cuda:0", "b", "B", GiB, 20.0, None))
    assert h.intervals("cuda:1") == ()


def test_a_changed_booking_is_a_step_and_an_unchanged_one_is_not():
    h = BookingHistory()
    h.record("cuda:0", [("a", "A", 5 * GiB)], now=10.0)
    version = h.version
    h.record("cuda:0", [("a", "A", 5 * GiB)], now=15.0)
    assert h.version == version
    h.record("cuda:0", [("a", "A (measured)", 4 * GiB)], now=20.0)
    first, second = h.intervals("cuda:0")
    assert (first.end, first.bytes) == (20.0, 5 * GiB)
    assert (second.start, second.end, second.bytes, second.label) == (20.0, None, 4 * GiB, "A (measured)")


def test_since_filters_and_memory_is_bounded_by_age_and_count():
    h = BookingHistory(max_age_s=100.0, max_intervals=3)
    for i in range(10):
        h.record("cpu", [(f"m{i}", f"M{i}", GiB)], now=float(10 * i))
    h.record("cpu", [], now=95.0)
    assert [i.key for i in h.intervals("cpu")] == ["m7", "m8", "m9"]  # the three newest closed ones
    assert [i.key for i in h.intervals("cpu", since=85.0)] == ["m8", "m9"]
    h.record("cpu", [], now=500.0)
    assert h.intervals("cpu") == ()  # older than the age limit
    with pytest.raises(ValueError):
        BookingHistory(max_age_s=0)


@pytest.fixture
def manager():
    clock = _Clock()
    profiler = HardwareProfiler(simulate="rtx4090")
    m = ModelResourceManager(profiler=profiler, registry=ModelRegistry(user_store=None),
                             loader=SimulatedLoader.for_profiler(profiler), clock=clock,
                             settings=ManagerSettings(keep_alive_s=60))
    m.test_clock = clock  # type: ignore[attr-defined]
    yield m
    m.stop()


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_manager_keeps_the_past_when_a_model_expires(manager):
    clock = manager.test_clock
    manager.load(LLAMA_1B, "int4", "cuda:0")
    clock.t += 30
    manager.load(LLAMA_3B, "int4", "cuda:0")
    clock.t += 100  # both idle past their keep-alive
    manager.tick()
    assert not manager.loaded_models()
    history = manager.booking_history("cuda:0")
    models = [i for i in history if i.key in (LLAMA_1B, LLAMA_3B)]
    assert [(i.key, i.start, i.end) for i in models] == [(LLAMA_1B, 1000.0, 1130.0), (LLAMA_3B, 1030.0, 1130.0)]
    assert all(i.bytes > 0 for i in history)
    assert manager.booking_history("cuda:0", since=1200.0) == ()


def test_update_settings_changes_keep_alive_and_reserves_at_runtime(manager):
    before = manager.available_bytes("cuda:0")
    allocator = manager.settings.allocator
    import dataclasses

    manager.update_settings(dataclasses.replace(manager.settings, keep_alive_s=-1, allocator=dataclasses.replace(
        allocator, gpu_reserve_bytes=allocator.gpu_reserve_bytes + 2 * GiB)))
    assert manager.available_bytes("cuda:0") == before - 2 * GiB
    assert manager.safety_margin("cuda:0") == allocator.gpu_reserve_bytes + 2 * GiB
    loaded = manager.load(LLAMA_1B, "int4", "cuda:0")
    assert loaded.keep_alive_s == -1 and loaded.expires_at is None


def test_stack_puts_the_oldest_booking_at_the_bottom_and_keeps_steps():
    from app.core.manager.booking_history import stack

    intervals = [BookingInterval("cuda:0", "a", "A", 4 * GiB, 0.0, 50.0),
                 BookingInterval("cuda:0", "b", "B", 2 * GiB, 20.0, None),
                 BookingInterval("cuda:0", "a", "A", 3 * GiB, 50.0, 80.0)]
    s = stack(intervals, 10.0, 100.0)
    assert s.keys == ("a", "b") and s.labels == ("A", "B")
    assert list(s.edges) == [10.0, 20.0, 50.0, 80.0, 100.0]
    assert (s.own[0] / GiB).tolist() == [4, 4, 3, 0] and (s.own[1] / GiB).tolist() == [0, 2, 2, 2]
    assert (s.tops[1] / GiB).tolist() == [4, 6, 5, 2]  # b sits on a while a is booked
    assert s.at(30.0) == {"a": 4 * GiB, "b": 2 * GiB} and s.at(90.0) == {"b": 2 * GiB} and s.at(5.0) == {}
    empty = stack([BookingInterval("cuda:0", "a", "A", GiB, 0.0, 5.0)], 10.0, 100.0)
    assert empty.keys == () and empty.at(50.0) == {}
