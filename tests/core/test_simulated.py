"""Simulated GPUs: spec parsing, published sizes, determinism under an injected clock, and the
simulated runtime (hold / release) that makes simulated loads show in measured memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from app.core.hardware.simulated import (
    CARDS,
    HOLD_JITTER,
    SimulatedBackend,
    SimulationSpecError,
    parse_spec,
    simulated_backend,
)
from app.core.hardware_profiler import HardwareProfiler

GiB = 1 << 30


def test_two_4090s_have_24_gib_each_and_processes():
    devices = SimulatedBackend.from_spec("2xrtx4090", clock=lambda: 100.0).read()
    assert [d.total_bytes for d in devices] == [24 * GiB, 24 * GiB]
    assert all(d.kind == "simulated" and d.processes for d in devices)
    assert devices[0].uuid != devices[1].uuid


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        ("a100-80gb,rtx3060", [80, 12]),
        ("RTX 4090", [24]),
        ("3x t4", [16, 16, 16]),
        ("h100, rtx-3090 ,l4", [80, 24, 24]),
        ("h200", [141]),
    ],
)
def test_specs(spec, sizes):
    assert [g.card.memory_bytes // GiB for g in parse_spec(spec)] == sizes


def test_at_least_fifteen_real_cards():
    assert len(CARDS) >= 15


@pytest.mark.parametrize("spec", ["rtx9999", "", "0xrtx4090", "100xrtx4090", ","])
def test_bad_specs_say_what_is_known(spec):
    with pytest.raises(SimulationSpecError) as err:
        parse_spec(spec)
    assert "rtx4090" in str(err.value) or "count" in str(err.value) or "card" in str(err.value)


def test_json_file(tmp_path):
    path = tmp_path / "rig.json"
    path.write_text(json.dumps({"gpus": [
        {"card": "rtx3060"},
        {"name": "Lab card", "memory_gib": 20, "processes": [{"name": "trainer", "used_gib": 5}]},
    ]}))
    (a, b) = SimulatedBackend.from_spec(str(path), clock=lambda: 5.0).read()
    assert a.name == "NVIDIA GeForce RTX 3060" and a.total_bytes == 12 * GiB
    assert b.name == "Lab card" and b.total_bytes == 20 * GiB
    assert [(p.name, p.used_bytes) for p in b.processes] == [("trainer", 5 * GiB)]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"gpus": [{"name": "x"}]}), json.dumps({"gpus": 3})])
def test_bad_json_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SimulationSpecError, match="bad.json"):
        parse_spec(str(path))


def test_missing_json_file():
    with pytest.raises(SimulationSpecError, match="cannot read"):
        parse_spec("/nonexistent/rig.json")


def test_deterministic_for_a_clock_value_and_varies_over_time():
    t = [50.0]
    backend = SimulatedBackend.from_spec("rtx4090,a100-80gb", clock=lambda: t[0])
    first = backend.read()
    assert backend.read() == first
    assert SimulatedBackend.from_spec("rtx4090,a100-80gb", clock=lambda: 50.0).read() == first
    seen = set()
    for step in range(30):
        t[0] = 50.0 + 7 * step
        for d in backend.read():
            assert 0 < d.used_bytes <= d.total_bytes
            assert d.used_bytes + d.free_bytes == d.total_bytes
            assert 0 <= d.utilization_percent <= 100
            assert d.power_w <= d.power_limit_w
            seen.add(d.used_bytes)
    assert len(seen) > 20


def test_simulated_loss():
    backend = SimulatedBackend.from_spec("2xrtx3060", clock=lambda: 0.0)
    backend.set_lost(1)
    d0, d1 = backend.read()
    assert not d0.lost and d1.lost and d1.total_bytes == 0
    backend.set_lost(1, False)
    assert not backend.read()[1].lost


# --- the simulated runtime: hold / release ---------------------------------------------------------

MiB = 1 << 20
DRIVER = 300 * MiB


def _mine(device, pid=None):
    pid = os.getpid() if pid is None else pid
    return [p for p in device.processes if p.pid == pid]


def test_hold_raises_used_by_the_amount_and_shows_our_process():
    backend = SimulatedBackend.from_spec("rtx4090,rtx3060", clock=lambda: 100.0)
    before0, before1 = backend.read()
    assert not _mine(before0)
    backend.hold("llama-7b", 0, 8 * GiB)
    after0, after1 = backend.read()
    grew = after0.used_bytes - before0.used_bytes
    assert abs(grew - 8 * GiB) <= HOLD_JITTER * 8 * GiB
    assert grew != 8 * GiB  # the wobble is there
    assert before0.free_bytes - after0.free_bytes == grew
    assert after0.used_bytes + after0.free_bytes == after0.total_bytes == 24 * GiB
    (ours,) = _mine(after0)
    assert (ours.name, ours.used_bytes, ours.kind) == ("modeldeck", grew, "compute")
    assert after0.processes[: len(before0.processes)] == before0.processes
    assert after1 == before1
    assert backend.held(0) == backend.held() == 8 * GiB and backend.held(1) == 0


def test_wobble_moves_with_the_clock_but_stays_inside_the_bound():
    t = [0.0]
    backend = SimulatedBackend.from_spec("a100-80gb", clock=lambda: t[0])
    backend.hold("m", 0, 40 * GiB)
    seen = set()
    for step in range(60):
        t[0] = 1000.0 + 1.3 * step
        (ours,) = _mine(backend.read()[0])
        assert abs(ours.used_bytes - 40 * GiB) <= HOLD_JITTER * 40 * GiB
        seen.add(ours.used_bytes)
    assert len(seen) > 50


def test_two_owners_with_one_pid_are_one_process_and_hold_again_replaces():
    backend = SimulatedBackend.from_spec("rtx4090", clock=lambda: 7.0)
    base = backend.read()[0]
    backend.hold("a", 0, 4 * GiB)
    backend.hold("b", 0, 2 * GiB)
    dev = backend.read()[0]
    (ours,) = _mine(dev)
    assert abs(ours.used_bytes - 6 * GiB) <= HOLD_JITTER * 6 * GiB
    assert dev.used_bytes - base.used_bytes == ours.used_bytes
    assert len(dev.processes) == len(base.processes) + 1
    assert backend.held(0) == 6 * GiB
    backend.hold("b", 0, 1 * GiB)
    assert backend.held(0) == 5 * GiB
    backend.release("a")
    assert backend.held(0) == 1 * GiB
    backend.release("nobody")
    backend.release("b", 3)
    assert backend.holdings() == {("b", 0): 1 * GiB}
    (ours,) = _mine(backend.read()[0])
    assert abs(ours.used_bytes - 1 * GiB) <= HOLD_JITTER * GiB


def test_other_pid_is_its_own_process():
    backend = SimulatedBackend.from_spec("rtx4090", clock=lambda: 7.0)
    backend.hold("a", 0, 2 * GiB)
    backend.hold("w", 0, 3 * GiB, pid=424242, name="worker")
    dev = backend.read()[0]
    (ours,) = _mine(dev)
    (worker,) = _mine(dev, 424242)
    assert ours.name == "modeldeck" and worker.name == "worker"
    assert abs(worker.used_bytes - 3 * GiB) <= HOLD_JITTER * 3 * GiB
    assert dev.used_bytes == DRIVER + sum(p.used_bytes for p in dev.processes)


def test_release_restores_the_exact_numbers():
    backend = SimulatedBackend.from_spec("2xrtx3060", clock=lambda: 321.0)
    before = backend.read()
    backend.hold("m", 0, 3 * GiB)
    backend.hold("m", 1, 2 * GiB)
    backend.hold("n", 1, 1 * GiB)
    backend.release("m", 0)
    d0, d1 = backend.read()
    assert d0 == before[0] and d1 != before[1]
    backend.release("m")
    assert backend.held() == 1 * GiB
    backend.release("n")
    assert backend.read() == before
    assert backend.held() == 0


def test_hold_beyond_the_card_clamps():
    backend = SimulatedBackend.from_spec("rtx3060", clock=lambda: 50.0)
    base = backend.read()[0]
    backend.hold("huge", 0, 30 * GiB)
    dev = backend.read()[0]
    assert dev.used_bytes == dev.total_bytes == 12 * GiB and dev.free_bytes == 0
    (ours,) = _mine(dev)
    assert ours.used_bytes == 12 * GiB - DRIVER - sum(p.used_bytes for p in base.processes)
    assert backend.held(0) == 30 * GiB
    backend.hold("zero", 0, 0)  # 0 bytes holds nothing
    assert backend.held(0) == 30 * GiB and ("zero", 0) not in backend.holdings()


def test_hold_checks_its_arguments():
    backend = SimulatedBackend.from_spec("rtx3060", clock=lambda: 0.0)
    with pytest.raises(IndexError):
        backend.hold("m", 1, GiB)
    with pytest.raises(ValueError):
        backend.hold("m", 0, -1)
    backend.hold("m", 0, GiB)
    backend.hold("m", 0, 0)
    assert backend.held() == 0


def test_holds_are_deterministic_for_a_clock_value():
    def make():
        b = SimulatedBackend.from_spec("rtx4090,a100-80gb", clock=lambda: 1_767_225_600.0)
        b.hold("llama-7b", 0, 5 * GiB)
        b.hold("mistral", 1, 13 * GiB)
        b.hold("phi", 1, 3 * GiB)
        return b

    first = make().read()
    assert make().read() == first
    # Python salts str hashes per process; the wobble must not depend on them.
    code = ("from app.core.hardware.simulated import SimulatedBackend as S\n"
            "b = S.from_spec('rtx4090', clock=lambda: 1_767_225_600.0)\n"
            "b.hold('llama-7b', 0, 5 << 30, pid=1)\n"
            "print(b.read()[0].used_bytes)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outs = {
        subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1


def test_lost_gpu_hides_holds_and_they_come_back():
    backend = SimulatedBackend.from_spec("2xrtx4090", clock=lambda: 9.0)
    backend.hold("m", 0, 4 * GiB)
    backend.hold("n", 1, 2 * GiB)
    held_view = backend.read()
    backend.set_lost(0)
    dev, other = backend.read()
    assert dev.lost and dev.used_bytes == 0 and dev.processes == ()
    assert other == held_view[1] and _mine(other)  # the other card keeps its hold
    assert backend.held(0) == 4 * GiB
    backend.set_lost(0, False)
    assert backend.read() == held_view


def test_threads_hold_and_release_while_a_reader_reads():
    backend = SimulatedBackend.from_spec("2xa100-80gb", clock=lambda: 77.0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        try:
            for n in range(300):
                backend.hold(f"w{k}", n % 2, (n % 7 + 1) * GiB)
                if n % 3 == 0:
                    backend.release(f"w{k}")
            backend.release(f"w{k}")
            backend.hold(f"w{k}", k % 2, (k + 1) * GiB)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    def reader() -> None:
        try:
            while not stop.is_set():
                for d in backend.read():
                    assert d.used_bytes + d.free_bytes == d.total_bytes
                    assert len(_mine(d)) <= 1
                backend.held()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert errors == []
    # w0, w2 on GPU 0 (1 + 3 GiB); w1, w3 on GPU 1 (2 + 4 GiB)
    assert (backend.held(0), backend.held(1)) == (4 * GiB, 6 * GiB)
    d0, d1 = backend.read()
    assert abs(_mine(d0)[0].used_bytes - 4 * GiB) <= HOLD_JITTER * 4 * GiB
    assert abs(_mine(d1)[0].used_bytes - 6 * GiB) <= HOLD_JITTER * 6 * GiB


def test_profiler_gives_its_simulated_backend_and_the_allocator_sees_the_load():
    from app.core.memory_allocator import MemoryAllocator
    from app.demo import ManualClock, demo_profiler

    clock = ManualClock()
    profiler = demo_profiler("rtx4090", clock)
    backend = simulated_backend(profiler)
    assert isinstance(backend, SimulatedBackend) and backend is profiler.backends[0]
    assert simulated_backend(HardwareProfiler(backends=[])) is None

    allocator = MemoryAllocator(profiler.get_profile())
    allocator.reserve("llama-7b", "cuda:0", {"weights": 6 * GiB, "kv_cache": GiB})
    ledger = allocator.ledger("cuda:0")
    assert (ledger.measured_ours_bytes, ledger.unreflected_bytes) == (0, 7 * GiB)

    backend.hold("llama-7b", 0, 7 * GiB)
    clock.advance(1.0)
    allocator.update(profiler.get_profile())
    ledger = allocator.ledger("cuda:0")
    assert abs(ledger.measured_ours_bytes - 7 * GiB) <= HOLD_JITTER * 7 * GiB
    assert ledger.unreflected_bytes <= HOLD_JITTER * 7 * GiB

    allocator.release("llama-7b")
    backend.release("llama-7b")
    allocator.update(profiler.get_profile())
    assert allocator.ledger("cuda:0").measured_ours_bytes == 0
