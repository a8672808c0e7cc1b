"""The `modeldeck` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_status_json_with_two_simulated_4090s():
    out = run("status", "--json", "--simulate", "2xrtx4090")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    devices = doc["devices"]
    assert len(devices) == 2
    for i, d in enumerate(devices):
        assert d["index"] == i and d["kind"] == "simulated"
        assert d["total_bytes"] == 24 * 2**30
        assert d["used_bytes"] + d["free_bytes"] == d["total_bytes"]
        assert d["processes"] and all(isinstance(p["used_bytes"], int) for p in d["processes"])
    assert doc["models"] == []
    assert [b["name"] for b in doc["backends"]] == ["simulated", "host"]


def _meminfo() -> dict[str, int]:
    vals = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        vals[k] = int(v.split()[0]) * 1024
    return vals


def test_status_json_on_this_machine_lists_nvml_reason_and_true_ram():
    out = run("status", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    nvml = next(b for b in doc["backends"] if b["name"] == "nvml")
    if not nvml["available"]:
        assert doc["devices"] == [] or all(d["kind"] != "nvidia" for d in doc["devices"])
        assert nvml["reason"]
    if Path("/proc/meminfo").exists():
        info = _meminfo()
        assert doc["ram"]["total_bytes"] == pytest.approx(info["MemTotal"], rel=0.01)
        assert doc["ram"]["available_bytes"] == pytest.approx(info["MemAvailable"], rel=0.01)


def test_human_status_is_a_table():
    out = run("status", "--simulate", "a100-80gb,rtx3060")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "NVIDIA A100-SXM4-80GB" in text and "NVIDIA GeForce RTX 3060" in text
    assert "/ 80.0 GiB" in text and "/ 12.0 GiB" in text
    assert "RAM" in text and "Backends:" in text and "Models: none loaded" in text


def test_bad_simulate_spec_is_a_clear_error():
    out = run("status", "--simulate", "rtx9999")
    assert out.returncode == 2
    assert "unknown card 'rtx9999'" in out.stderr and "rtx4090" in out.stderr
    assert "Traceback" not in out.stderr


def test_bare_command_opens_the_dashboard_or_says_why_not():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert out.returncode == 2 and "modeldeck screenshot" in out.stderr
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("modeldeck ")


def test_gui_without_a_display_says_so_and_points_to_screenshot():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run([sys.executable, "-m", "app", "gui", "--simulate", "rtx4090"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, env=env)
    assert out.returncode == 2
    assert "display" in out.stderr.lower() and "modeldeck screenshot" in out.stderr
