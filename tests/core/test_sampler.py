"""Sampler: records, announces, survives faults, starts and stops cleanly."""

from __future__ import annotations

import threading

import pytest

from app.core import HardwareProfiler, Sampler
from app.core.events import Signal
from app.core.hardware.simulated import SimulatedBackend
from app.core.sampler import device_key

GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(spec="2xrtx4090", capacity=100):
    clock = Clock()
    sim = SimulatedBackend.from_spec(spec, clock=clock)
    profiler = HardwareProfiler(backends=[sim], clock=clock)
    return Sampler(profiler, capacity=capacity, clock=clock, interval_s=0.1), sim, clock


def test_tick_records_each_device_and_the_host():
    sampler, _, clock = make()
    for i in range(5):
        clock.t = float(i)
        sampler.tick()
    keys = sampler.gpu_keys()
    assert len(keys) == 2
    times, used = sampler.window(keys[0], "used_bytes")
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(0 < u <= 24 * GiB for u in used)
    _, ram = sampler.window(None, "ram_available_bytes")
    assert len(ram) == 5 and ram[-1] > 0
    assert sampler.latest is not None and sampler.latest.timestamp == 4.0


def test_history_is_bounded_by_capacity():
    sampler, _, clock = make(capacity=10)
    for i in range(25):
        clock.t = float(i)
        sampler.tick()
    times, _ = sampler.window(sampler.gpu_keys()[0], "power_w")
    assert times.tolist() == [float(i) for i in range(15, 25)]


def test_lost_gpu_records_gaps_and_comes_back():
    sampler, sim, clock = make()
    sampler.tick()
    sim.set_lost(0)
    clock.t = 1.0
    sampler.tick()
    sim.set_lost(0, False)
    clock.t = 2.0
    sampler.tick()
    key = device_key(sampler.latest.gpus[0])
    _, used = sampler.window(key, "used_bytes")
    assert used[0] > 0 and used[1] != used[1] and used[2] > 0  # NaN while lost


def test_sampler_survives_a_profiler_that_raises_and_a_subscriber_that_raises():
    sampler, _, _ = make()
    calls = []
    sampler.sampled.connect(lambda p: (_ for _ in ()).throw(RuntimeError("bad view")))
    sampler.sampled.connect(calls.append)
    original = sampler._profiler.get_profile
    sampler._profiler.get_profile = lambda: (_ for _ in ()).throw(OSError("driver fault"))
    assert sampler.tick() is None
    sampler._profiler.get_profile = original
    assert sampler.tick() is not None
    assert len(calls) == 1


def test_thread_samples_and_stops():
    sampler, _, _ = make()
    got = threading.Event()
    count = []

    def on_sample(profile):
        count.append(profile)
        if len(count) >= 3:
            got.set()

    sampler.sampled.connect(on_sample)
    with sampler:
        assert sampler.running
        assert got.wait(5.0)
    assert not sampler.running
    n = len(count)
    got.wait(0.3)
    assert len(count) == n  # nothing after stop


@pytest.mark.parametrize("bad", [0.0, 0.05, -1.0, float("nan")])
def test_interval_must_be_at_least_100_ms(bad):
    sampler, _, _ = make()
    with pytest.raises(ValueError, match="at least 0.1"):
        sampler.interval_s = bad
    sampler.interval_s = 0.25
    assert sampler.interval_s == 0.25


def test_signal_connect_disconnect_and_isolation():
    sig = Signal("test")
    seen = []
    sig.connect(seen.append)
    sig.connect(seen.append)  # connecting twice is once
    sig.emit(1)
    sig.disconnect(seen.append)
    sig.emit(2)
    assert seen == [1] and len(sig) == 0
