"""HostBackend: real psutil against /proc/meminfo, and faults injected through a broken psutil."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from app.core.hardware.host import HostBackend


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        parts = value.split()
        out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="Linux only")
def test_ram_matches_proc_meminfo_within_one_percent():
    host = HostBackend().read()
    info = meminfo()
    assert host.total_bytes == pytest.approx(info["MemTotal"], rel=0.01)
    assert host.available_bytes == pytest.approx(info["MemAvailable"], rel=0.01)
    assert host.swap_total_bytes == pytest.approx(info["SwapTotal"], rel=0.01, abs=1 << 20)


def test_counts_platform_and_own_rss():
    host = HostBackend().read()
    assert host.logical_cpu_count >= host.cpu_count >= 1
    assert host.platform and host.machine
    assert host.process_rss_bytes is not None and host.process_rss_bytes > 10 << 20
    assert host.unavailable == ()


class BrokenPsutil:
    AccessDenied = psutil.AccessDenied
    NoSuchProcess = psutil.NoSuchProcess

    def cpu_count(self, logical=True):
        if not logical:
            raise PermissionError("sandbox")
        return 8

    def virtual_memory(self):
        raise OSError("no /proc")

    def swap_memory(self):
        raise psutil.AccessDenied()

    def Process(self):  # noqa: N802 - psutil's name
        raise psutil.NoSuchProcess(1)


def test_faults_become_unavailable_values_not_exceptions():
    host = HostBackend(BrokenPsutil()).read()
    assert host.total_bytes == 0 and host.available_bytes == 0
    assert host.swap_total_bytes is None and host.process_rss_bytes is None
    assert {name for name, _ in host.unavailable} == {"ram", "swap", "process_rss_bytes"}
    assert host.cpu_count == 8 and host.logical_cpu_count == 8


def test_apple_silicon_reports_unified_memory():
    host = HostBackend(system="Darwin", machine="arm64", apple_chip="Apple M2 Pro").read()
    assert host.unified_memory is True
    assert host.unified_gpu_name == "Apple M2 Pro (unified memory)"
    linux = HostBackend(system="Linux", machine="x86_64").read()
    assert linux.unified_memory is False and linux.unified_gpu_name is None
