"""HardwareProfiler: combining backends, surviving broken ones, and the seed's API."""

from __future__ import annotations

import dataclasses

import pytest

from app.core import HardwareProfile, HardwareProfiler
from app.core.hardware.host import HostBackend
from app.core.hardware.nvml import NvmlBackend
from app.core.hardware.simulated import SimulatedBackend
from app.core.hardware.snapshot import BackendStatus
from tests.core.fake_nvml import FakeGpu, FakeNvml, GiB

MiB = 1 << 20


class ExplodingBackend:
    name = "exploding"

    def status(self):
        return BackendStatus(self.name, True)

    def read(self):
        raise RuntimeError("boom")

    def close(self):
        raise RuntimeError("boom on close too")


def test_seed_usage_runs_as_written():
    profiler = HardwareProfiler()
    profile = profiler.get_profile()
    assert isinstance(profile, HardwareProfile)
    for name in ("total_vram_gb", "available_vram_gb", "total_ram_gb", "available_ram_gb",
                 "cuda_available", "cuda_compute_capability", "device_name", "cpu_count", "platform"):
        getattr(profile, name)
    assert profile.total_ram_gb > 0
    assert isinstance(profiler.has_sufficient_ram(0.001), bool)
    assert isinstance(profiler.is_ampere_or_newer(), bool)


def test_machine_without_gpu_is_first_class():
    profiler = HardwareProfiler(backends=[NvmlBackend(FakeNvml([]))])
    profile = profiler.get_profile()
    assert profile.gpus == ()
    assert profile.total_vram_gb == 0.0 and profile.available_vram_gb == 0.0
    assert profile.cuda_available is False and profile.device_name is None
    assert profile.host.total_bytes > 0
    assert profiler.has_sufficient_vram(0.5) is False
    assert profiler.is_ampere_or_newer() is False


def test_gpus_are_numbered_across_backends_and_a_broken_backend_is_reported():
    sim = SimulatedBackend.from_spec("rtx3060", clock=lambda: 0.0)
    nv = NvmlBackend(FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-2")]))
    profiler = HardwareProfiler(backends=[nv, ExplodingBackend(), sim])
    profile = profiler.get_profile()
    assert [g.index for g in profile.gpus] == [0, 1, 2]
    assert [g.kind for g in profile.gpus] == ["nvidia", "nvidia", "simulated"]
    exploding = profile.backend("exploding")
    assert exploding is not None and not exploding.available and "boom" in exploding.reason
    assert profile.backend("host").available
    profiler.close()  # a backend failing to close does not raise either


def test_seed_fields_describe_the_primary_gpu():
    gpus = [FakeGpu(total=24 * GiB, used=4 * GiB, reserved=0, cc=(8, 9)), FakeGpu(uuid="B", total=12 * GiB, cc=(7, 5))]
    profiler = HardwareProfiler(backends=[NvmlBackend(FakeNvml(gpus))])
    p = profiler.get_profile()
    assert p.total_vram_gb == pytest.approx(24.0)
    assert p.available_vram_gb == pytest.approx(20.0)
    assert p.cuda_available and p.cuda_compute_capability == (8, 9)
    assert p.device_name == "NVIDIA GeForce RTX 4090"
    assert profiler.has_sufficient_vram(19.9) and not profiler.has_sufficient_vram(20.1)
    assert profiler.is_ampere_or_newer()


def test_lost_primary_falls_to_the_next_gpu():
    fake = FakeNvml([FakeGpu(), FakeGpu(uuid="B", name="NVIDIA GeForce RTX 3060", total=12 * GiB)])
    import pynvml

    fake.fail("nvmlDeviceGetHandleByIndex", pynvml.NVML_ERROR_GPU_IS_LOST, device=0)
    p = HardwareProfiler(backends=[NvmlBackend(fake)]).get_profile()
    assert p.gpus[0].lost
    assert p.device_name == "NVIDIA GeForce RTX 3060" and p.total_vram_gb == pytest.approx(12.0)


def test_snapshots_are_immutable():
    p = HardwareProfiler(simulate="rtx4090", clock=lambda: 1.0).get_profile()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.gpus[0].used_bytes = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.host.total_bytes = 0  # type: ignore[misc]
    assert isinstance(p.gpus, tuple) and isinstance(p.gpus[0].processes, tuple)


def test_unified_memory_names_the_device_when_there_is_no_discrete_gpu():
    host = HostBackend(system="Darwin", machine="arm64", apple_chip="Apple M3 Max")
    p = HardwareProfiler(backends=[], host=host).get_profile()
    assert p.device_name == "Apple M3 Max (unified memory)"
    assert p.cuda_available is False


def test_host_backend_exception_still_gives_a_profile():
    class BadHost(HostBackend):
        def read(self):
            raise RuntimeError("psutil broke")

    p = HardwareProfiler(backends=[], host=BadHost()).get_profile()
    assert p.host.total_bytes == 0 and p.host.unavailable[0][0] == "ram"
