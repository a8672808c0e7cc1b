"""AmdBackend: missing amdsmi, and a fake amdsmi shaped like ROCm's."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from app.core.hardware.amd import AmdBackend
from app.core.hardware.processes import ProcessNames
from tests.core.fake_nvml import FakePsutil

MiB = 1 << 20


class FakeAmdSmi:
    AmdSmiTemperatureType = SimpleNamespace(EDGE=0)
    AmdSmiTemperatureMetric = SimpleNamespace(CURRENT=0)

    def __init__(self, fail_init=False):
        self.fail_init = fail_init
        self.broken_power = False
        self.gone = set()

    def amdsmi_init(self):
        if self.fail_init:
            raise RuntimeError("AMDSMI_STATUS_DRIVER_NOT_LOADED")

    def amdsmi_shut_down(self):
        pass

    def amdsmi_get_processor_handles(self):
        return ["h0", "h1"]

    def amdsmi_get_gpu_driver_info(self, h):
        return {"driver_version": "6.10.5"}

    def amdsmi_get_gpu_asic_info(self, h):
        return {"market_name": "AMD Radeon RX 7900 XTX" if h == "h0" else "AMD Instinct MI300X"}

    def amdsmi_get_gpu_vram_usage(self, h):
        if h in self.gone:
            raise RuntimeError("AMDSMI_STATUS_NOT_FOUND")
        return {"vram_total": 24560 if h == "h0" else 196592, "vram_used": 1024}

    def amdsmi_get_gpu_activity(self, h):
        return {"gfx_activity": 12, "umc_activity": "N/A"}

    def amdsmi_get_temp_metric(self, h, kind, metric):
        return 48

    def amdsmi_get_power_info(self, h):
        if self.broken_power:
            raise RuntimeError("AMDSMI_STATUS_NOT_SUPPORTED")
        return {"current_socket_power": "N/A", "average_socket_power": 95}

    def amdsmi_get_gpu_device_uuid(self, h):
        return f"uuid-{h}"

    def amdsmi_get_gpu_process_list(self, h):
        return [{"pid": 42, "name": "python3", "memory_usage": {"vram_mem": 512 * MiB}}] if h == "h0" else []


def test_missing_amdsmi_is_unavailable_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import amdsmi -> ImportError
    backend = AmdBackend()
    assert backend.read() == []
    status = backend.status()
    assert not status.available and "modeldeck[amd]" in status.reason


def test_reads_amd_gpus_with_processes():
    backend = AmdBackend(FakeAmdSmi(), process_names=ProcessNames(FakePsutil({42: "python3"})))
    d0, d1 = backend.read()
    assert d0.kind == "amd" and d0.name == "AMD Radeon RX 7900 XTX"
    assert d0.total_bytes == 24560 * MiB and d0.used_bytes == 1024 * MiB
    assert d0.free_bytes == d0.total_bytes - d0.used_bytes
    assert d0.utilization_percent == 12 and d0.temperature_c == 48 and d0.power_w == 95
    assert [(p.pid, p.name, p.used_bytes) for p in d0.processes] == [(42, "python3", 512 * MiB)]
    assert d1.total_bytes == 196592 * MiB
    assert backend.status().available and backend.status().driver_version == "6.10.5"


def test_faults_do_not_escape():
    smi = FakeAmdSmi()
    smi.broken_power = True
    smi.gone.add("h1")
    d0, d1 = AmdBackend(smi, process_names=ProcessNames(FakePsutil({42: "x"}))).read()
    assert d0.power_w is None and d0.reason_unavailable("power_w")
    assert d1.lost


def test_driver_not_answering():
    backend = AmdBackend(FakeAmdSmi(fail_init=True))
    assert backend.read() == []
    assert "did not answer" in backend.status().reason
