"""NvmlBackend against a fake pynvml that raises pynvml's real errors, and against the real library."""

from __future__ import annotations

import logging

import pynvml
import pytest

from app.core.hardware.nvml import NvmlBackend
from app.core.hardware.processes import ProcessNames
from app.core.hardware.snapshot import HardwareProfile, HostMemory
from app.core.reports import status_document
from tests.core.fake_nvml import FakeGpu, FakeNvml, FakePsutil, GiB

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(gpus=None, names=None, **kw):
    fake = FakeNvml(gpus)
    ps = FakePsutil(names or {})
    clock = Clock()
    backend = NvmlBackend(fake, process_names=ProcessNames(ps), clock=clock, **kw)
    return backend, fake, ps, clock


def test_real_pynvml_without_driver_is_unavailable_with_reason():
    backend = NvmlBackend()  # the real pynvml module, real libnvidia-ml lookup
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        devices = backend.read()
        status = backend.status()
        assert devices == []
        assert status.available is False
        assert "NVIDIA" in status.reason
    else:  # a machine with a driver: the same backend must list what nvidia-smi lists
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        devices = backend.read()
        assert len([d for d in devices if d.mig_parent is None]) == count
        assert backend.status().available
        assert all(d.total_bytes > 0 for d in devices if not d.lost)
    backend.close()


def test_reads_every_field_of_every_gpu():
    gpus = [
        FakeGpu(compute=[(101, 2 * GiB)], graphics=[(102, 300 * MiB)]),
        FakeGpu(name="NVIDIA GeForce RTX 3060", uuid="GPU-1", total=12 * GiB, used=1 * GiB, cc=(8, 6)),
    ]
    backend, fake, _, _ = make(gpus, names={101: "ollama", 102: "Xorg"})
    devices = backend.read()
    assert [d.name for d in devices] == ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3060"]
    d0 = devices[0]
    assert d0.kind == "nvidia"
    assert d0.total_bytes == 24 * GiB
    assert d0.used_bytes == 3 * GiB
    assert d0.reserved_bytes == 300 * MiB
    assert d0.free_bytes == 24 * GiB - 3 * GiB - 300 * MiB
    assert d0.utilization_percent == 37.0 and d0.memory_utilization_percent == 12.0
    assert d0.temperature_c == 55.0
    assert d0.power_w == pytest.approx(123.0) and d0.power_limit_w == pytest.approx(450.0)
    assert (d0.sm_clock_mhz, d0.memory_clock_mhz) == (2520, 10501)
    assert d0.compute_capability == (8, 9)
    assert d0.pci_bus_id == "00000000:01:00.0"
    assert [(p.pid, p.name, p.used_bytes, p.kind) for p in d0.processes] == [
        (101, "ollama", 2 * GiB, "compute"),
        (102, "Xorg", 300 * MiB, "graphics"),
    ]
    assert d0.unavailable == ()
    assert devices[1].compute_capability == (8, 6)
    status = backend.status()
    assert status.available and status.driver_version == "580.95.05" and status.runtime_version == "13.0"


def test_process_in_both_lists_is_counted_once():
    gpu = FakeGpu(compute=[(7, 1 * GiB)], graphics=[(7, 1 * GiB)])
    backend, _, _, _ = make([gpu], names={7: "blender"})
    (d,) = backend.read()
    assert [(p.pid, p.used_bytes, p.kind) for p in d.processes] == [(7, 1 * GiB, "compute+graphics")]


def test_process_names_access_denied_and_exited():
    gpu = FakeGpu(compute=[(1, GiB), (2, GiB), (3, None)])
    backend, _, _, _ = make([gpu], names={3: "python3"})
    backend._names = ProcessNames(FakePsutil({3: "python3"}, denied={1}, gone={2}))
    (d,) = backend.read()
    names = {p.pid: p.name for p in d.processes}
    assert names == {1: "unknown (access denied)", 2: "exited", 3: "python3"}
    # The driver did not say how much pid 3 holds: unknown, not zero ...
    assert d.processes[2].used_bytes is None
    # ... and the JSON keeps an int while saying it is unknown.
    doc = status_document(HardwareProfile(0.0, (d,), HostMemory(1, 1, 0)))
    p3 = doc["devices"][0]["processes"][2]
    assert p3["used_bytes"] == 0 and p3["used_known"] is False


def test_unsupported_field_is_none_with_reason_and_not_asked_again():
    backend, fake, _, _ = make()
    fake.fail("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_NOT_SUPPORTED)
    for _ in range(5):
        (d,) = backend.read()
    assert d.power_w is None
    assert d.reason_unavailable("power_w") == "not supported by this GPU or driver"
    assert d.temperature_c == 55.0  # the rest is still read
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1


def test_lost_gpu_is_marked_and_others_go_on_then_recovers():
    gpus = [FakeGpu(uuid="GPU-A"), FakeGpu(name="NVIDIA A100-SXM4-80GB", uuid="GPU-B", total=80 * GiB)]
    backend, fake, _, _ = make(gpus)
    backend.read()
    fake.fail("nvmlDeviceGetMemoryInfo_v2", pynvml.NVML_ERROR_GPU_IS_LOST, device=1)
    d0, d1 = backend.read()
    assert not d0.lost and d0.total_bytes == 24 * GiB
    assert d1.lost and d1.name == "NVIDIA A100-SXM4-80GB" and d1.uuid == "GPU-B"
    assert d1.total_bytes == d1.used_bytes == d1.free_bytes == 0
    fake.heal()
    d0, d1 = backend.read()
    assert not d1.lost and d1.total_bytes == 80 * GiB


def test_lost_before_handle_is_reported_lost():
    backend, fake, _, _ = make([FakeGpu(), FakeGpu(uuid="GPU-2")])
    fake.fail("nvmlDeviceGetHandleByIndex", pynvml.NVML_ERROR_GPU_IS_LOST, device=0)
    d0, d1 = backend.read()
    assert d0.lost and not d1.lost


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver is installed"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "not loaded"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "different versions"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "permission"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML could not start"),
    ],
)
def test_init_failures_give_a_reason(code, words):
    backend, fake, _, _ = make()
    fake.init_error = code
    assert backend.read() == []
    status = backend.status()
    assert status.available is False
    assert words in status.reason


def test_recovers_when_the_driver_comes_back_and_retries_only_after_the_interval():
    backend, fake, _, clock = make(retry_interval_s=30.0)
    fake.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    assert backend.read() == []
    fake.init_error = None
    clock.t += 10
    assert backend.read() == []  # not retried yet: no hammering a broken driver every tick
    assert fake.calls["nvmlInit"] == 1
    clock.t += 25
    assert len(backend.read()) == 1
    assert backend.status().available


def test_driver_vanishing_after_start_makes_backend_unavailable_then_recovers():
    backend, fake, _, clock = make(retry_interval_s=5.0)
    assert len(backend.read()) == 1
    fake.fail("nvmlDeviceGetCount", pynvml.NVML_ERROR_UNKNOWN)
    assert backend.read() == []
    assert not backend.status().available
    assert "stopped answering" in backend.status().reason
    fake.heal()
    clock.t += 6
    assert len(backend.read()) == 1


def test_each_distinct_error_is_logged_once(caplog):
    backend, fake, _, _ = make([FakeGpu(), FakeGpu(uuid="GPU-2")])
    fake.fail("nvmlDeviceGetTemperature", pynvml.NVML_ERROR_UNKNOWN)
    with caplog.at_level(logging.INFO, logger="app.core.hardware.nvml"):
        for _ in range(20):
            backend.read()
    temp_logs = [r for r in caplog.records if "temperature_c" in r.getMessage()]
    # Once, not once per tick; the same fault on both GPUs in one tick is one line naming both.
    assert len(temp_logs) == 1
    assert "GPU 0: cannot read temperature_c" in temp_logs[0].getMessage()
    assert "GPU 1: cannot read temperature_c" in temp_logs[0].getMessage()
    fake.heal()
    with caplog.at_level(logging.INFO, logger="app.core.hardware.nvml"):
        backend.read()
    assert any(r.getMessage().startswith("recovered") for r in caplog.records)


def test_unexpected_exception_from_binding_does_not_escape():
    backend, fake, _, _ = make()

    def broken(h):
        raise RuntimeError("ctypes went wrong")

    fake.nvmlDeviceGetUtilizationRates = broken  # type: ignore[method-assign]
    (d,) = backend.read()
    assert d.utilization_percent is None
    assert "ctypes went wrong" in d.reason_unavailable("utilization_percent")


def test_memory_v1_fallback_when_v2_is_missing():
    backend, fake, _, _ = make()
    fake.v2_missing = True
    (d,) = backend.read()
    assert d.reserved_bytes is None
    assert d.total_bytes == 24 * GiB
    assert d.used_bytes == 3 * GiB + 300 * MiB
    backend.read()
    assert fake.calls["nvmlDeviceGetMemoryInfo_v2"] == 1


def test_mig_instances_are_listed_after_their_parent():
    parent = FakeGpu(name="NVIDIA A100-SXM4-80GB", total=80 * GiB,
                     mig=[FakeGpu(name="MIG 3g.40gb", uuid="MIG-1", total=40 * GiB, used=1 * GiB),
                          FakeGpu(name="MIG 3g.40gb", uuid="MIG-2", total=40 * GiB, used=2 * GiB)])
    backend, _, _, _ = make([parent])
    devices = backend.read()
    assert [d.name for d in devices] == ["NVIDIA A100-SXM4-80GB", "MIG 3g.40gb", "MIG 3g.40gb"]
    assert [d.mig_parent for d in devices] == [None, 0, 0]
    assert devices[2].total_bytes == 40 * GiB
