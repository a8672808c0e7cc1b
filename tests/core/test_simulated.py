"""Simulated GPUs: spec parsing, published sizes, determinism under an injected clock."""

from __future__ import annotations

import json

import pytest

from app.core.hardware.simulated import CARDS, SimulatedBackend, SimulationSpecError, parse_spec

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
