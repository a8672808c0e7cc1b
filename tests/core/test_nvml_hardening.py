"""NvmlBackend under fault storms: per-field degradation, re-probing, plausibility, quiet logs, bounded work.

Each test names the storm finding it pins down; all run against FakeNvml, which raises pynvml's real
error classes, with a manual clock so retry intervals cost no waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time

import pynvml
import pytest

from app.core.hardware.faults import FaultLog
from app.core.hardware.nvml import NvmlBackend
from app.core.hardware.processes import ProcessNames
from app.core.hardware.snapshot import GpuDevice
from app.core.hardware_profiler import HardwareProfiler
from tests.core.fake_nvml import (
    FIELD_ERRORS,
    FIELD_FUNCTIONS,
    ODD_VALUES,
    FakeGpu,
    FakeNvml,
    FakePsutil,
    GiB,
    ManualClock,
    StormRun,
    expected_clean,
    implausible,
    observed,
)

RETRY = 10.0
MAX_DEVICES = 64  # app.core.hardware.nvml.MAX_DEVICES


def four_gpus() -> list[FakeGpu]:
    return [FakeGpu(name=f"NVIDIA GeForce RTX 4090 #{i}", uuid=f"GPU-{i}", used=(i + 1) * GiB,
                    bus_id=f"00000000:{i + 1:02X}:00.0", compute=[(1000 + i, GiB)]) for i in range(4)]


def make(gpus: list[FakeGpu] | None = None, **kw):
    gpus = gpus if gpus is not None else four_gpus()
    fake = FakeNvml(gpus)
    clock = ManualClock()
    names = ProcessNames(FakePsutil({1000 + i: f"w{i}" for i in range(len(gpus))} | {4242: "leak"}))
    backend = NvmlBackend(fake, process_names=names, clock=clock, retry_interval_s=RETRY, **kw)
    return backend, fake, clock


def assert_clean(device: GpuDevice, gpu: FakeGpu) -> None:
    assert observed(device) == expected_clean(gpu)


# --- 1. one bad value degrades one field of one device ----------------------------------------------
@pytest.mark.parametrize("odd", sorted(ODD_VALUES))
def test_one_odd_value_marks_one_field_and_hides_nothing(odd):
    change, fields = ODD_VALUES[odd]
    gpus = four_gpus()
    backend, fake, _ = make([dataclasses.replace(g) for g in gpus])
    fake.gpus[1] = change(gpus[1])
    devices = backend.read()
    assert [d.index for d in devices] == [0, 1, 2, 3]
    for i in (0, 2, 3):
        assert_clean(devices[i], gpus[i])
    d1 = devices[1]
    assert not d1.lost
    marked = {name for name, _ in d1.unavailable}
    assert marked and marked <= fields, d1.unavailable
    assert all(reason for _, reason in d1.unavailable)


@pytest.mark.parametrize("fn", sorted(FIELD_FUNCTIONS))
@pytest.mark.parametrize("what", [pynvml.NVML_ERROR_UNKNOWN, 555, RuntimeError("ctypes went wrong")])
def test_an_error_from_one_field_of_one_gpu_touches_only_that_field(fn, what):
    gpus = four_gpus()
    backend, fake, _ = make([dataclasses.replace(g) for g in gpus])
    fake.device_faults[(fn, 2)] = what
    devices = backend.read()
    assert [d.index for d in devices] == [0, 1, 2, 3]
    for i in (0, 1, 3):
        assert_clean(devices[i], gpus[i])
    assert not devices[2].lost
    assert {name for name, _ in devices[2].unavailable} <= FIELD_FUNCTIONS[fn] | {"memory_v2"}


def test_the_profiler_keeps_every_gpu_when_one_reports_a_none_utilization():
    gpus = four_gpus()
    gpus[3] = dataclasses.replace(gpus[3], util=(None, None))
    backend, _, _ = make(gpus)
    profile = HardwareProfiler(backends=[backend]).get_profile()
    assert len(profile.gpus) == 4 and not any(g.lost for g in profile.gpus)
    assert profile.gpus[3].utilization_percent is None
    assert profile.gpus[3].reason_unavailable("utilization_percent")
    assert profile.gpus[0].utilization_percent == 37.0


# --- 2. NOT_SUPPORTED is re-probed ------------------------------------------------------------------
def test_not_supported_is_asked_again_after_the_retry_interval():
    backend, fake, clock = make()
    fake.device_faults[("nvmlDeviceGetPowerUsage", None)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert all(d.power_w is None for d in backend.read())
    fake.device_faults.clear()
    clock.t += RETRY / 2
    assert all(d.power_w is None for d in backend.read())  # remembered while the interval lasts
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 4
    clock.t += RETRY / 2
    assert all(d.power_w == pytest.approx(123.0) for d in backend.read())


def test_not_supported_is_asked_again_after_the_driver_restarts():
    backend, fake, clock = make()
    fake.device_faults[("nvmlDeviceGetTemperature", None)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    backend.read()
    fake.device_faults.clear()
    fake.initialized, fake.init_error = False, pynvml.NVML_ERROR_DRIVER_NOT_LOADED  # the driver goes
    assert backend.read() == [] and not backend.status().available
    fake.init_error = None  # ... and comes back
    clock.t += RETRY
    devices = backend.read()
    assert backend.status().available
    assert [d.temperature_c for d in devices] == [55.0] * 4  # asked again at once, in the new session


# --- 3. implausible values never pass ---------------------------------------------------------------
@pytest.mark.parametrize("odd", sorted(ODD_VALUES))
def test_implausible_values_are_not_passed_on(odd):
    change, _ = ODD_VALUES[odd]
    backend, fake, _ = make([change(g) for g in four_gpus()])
    for d in backend.read():
        assert implausible(d) == []
        assert d.used_bytes + d.free_bytes <= d.total_bytes


def test_used_above_total_is_read_as_a_full_gpu_with_a_reason():
    gpu = FakeGpu(total=24 * GiB, used=30 * GiB)
    backend, _, _ = make([gpu])
    (d,) = backend.read()
    assert (d.total_bytes, d.used_bytes, d.free_bytes) == (24 * GiB, 24 * GiB, 0)
    assert "treated as full" in d.reason_unavailable("memory")


@pytest.mark.parametrize(("total", "used", "free"), [(10, 20, 5), (10, 2, 50), (10, -1, -1), (-5, 3, 3), (10, 4, 7)])
def test_gpu_device_guarantees_used_plus_free_within_total(total, used, free):
    d = GpuDevice(index=0, name="x", kind="simulated", total_bytes=total, used_bytes=used, free_bytes=free)
    assert 0 <= d.used_bytes <= d.total_bytes
    assert 0 <= d.free_bytes and d.used_bytes + d.free_bytes <= d.total_bytes
    assert d.reason_unavailable("memory")
    ok = GpuDevice(index=0, name="x", kind="simulated", total_bytes=10, used_bytes=4, free_bytes=6)
    assert (ok.used_bytes, ok.free_bytes, ok.unavailable) == (4, 6, ())


# --- 4. fault logging is rate-limited -----------------------------------------------------------------
def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("app.core.hardware")]


def test_a_flapping_fault_writes_at_most_five_lines_in_300_ticks(caplog):
    backend, fake, clock = make()
    with caplog.at_level(logging.INFO, logger="app.core.hardware"):
        backend.read()
        caplog.clear()
        for t in range(300):
            clock.t += 1
            if t % 2:
                fake.device_faults[("nvmlDeviceGetTemperature", 1)] = pynvml.NVML_ERROR_TIMEOUT
            else:
                fake.device_faults.clear()
            backend.read()
        fake.device_faults.clear()
        for _ in range(30):
            clock.t += 1
            backend.read()
    lines = _lines(caplog)
    assert 3 <= len(lines) <= 5, lines
    assert lines[0] == "GPU 1: cannot read temperature_c: Timeout"
    assert any(line.startswith("still failing") and "times" in line for line in lines)  # the count
    assert lines[-1].startswith("recovered") and "flapping" in lines[-1]


def test_a_persistent_fault_is_logged_once_then_counted_then_recovered(caplog):
    backend, fake, clock = make()
    with caplog.at_level(logging.INFO, logger="app.core.hardware"):
        backend.read()
        caplog.clear()
        fake.device_faults[("nvmlDeviceGetPowerUsage", None)] = 555
        for _ in range(300):
            clock.t += 1
            backend.read()
        fake.device_faults.clear()
        clock.t += 1
        backend.read()
    lines = _lines(caplog)
    assert len(lines) <= 5, lines
    assert "GPU 0: cannot read power_w: NVML error 555" in lines[0] and "GPU 3" in lines[0]
    assert lines[-1].startswith("recovered")


def test_fault_log_without_a_clock_keeps_its_old_behaviour(caplog):
    log = FaultLog(logging.getLogger("app.core.hardware.test"))
    with caplog.at_level(logging.INFO, logger="app.core.hardware.test"):
        assert log.fault("k", "broken") is True
        assert log.fault("k", "broken") is False
        log.clear("k")
    assert [r.getMessage() for r in caplog.records] == ["broken", "recovered: broken"]


def test_log_messages_are_only_built_when_written():
    built = []
    log = FaultLog(logging.getLogger("app.core.hardware.test"), clock=lambda: 0.0)
    for _ in range(100):
        log.fault("k", lambda: built.append(1) or "broken")
        log.flush()
    assert built == [1]


# --- 5. the device count is bounded -------------------------------------------------------------------
def test_an_absurd_device_count_is_bounded_and_logged_once(caplog):
    gpus = four_gpus()
    backend, fake, clock = make([dataclasses.replace(g) for g in gpus])
    fake.count_override = 100_000
    with caplog.at_level(logging.INFO, logger="app.core.hardware"):
        start = time.perf_counter()
        for _ in range(10):
            clock.t += 1
            devices = backend.read()
        elapsed = time.perf_counter() - start
    assert len(devices) == 4
    for d, g in zip(devices, gpus, strict=True):
        assert_clean(d, g)
    assert fake.calls["nvmlDeviceGetHandleByIndex"] <= 10 * (len(gpus) + 1)
    assert elapsed < 0.5
    assert len([line for line in _lines(caplog) if "100000 GPUs" in line]) == 1


def test_more_gpus_than_the_bound_reads_only_the_bound():
    backend, fake, _ = make([FakeGpu(uuid=f"GPU-{i}") for i in range(MAX_DEVICES + 6)])
    assert len(backend.read()) == MAX_DEVICES


# --- 6. a faulted tick costs about a clean one --------------------------------------------------------
@pytest.mark.parametrize("what", [555, pynvml.NVML_ERROR_UNKNOWN, RuntimeError("ctypes went wrong"), "count 257"])
def test_a_faulted_tick_costs_at_most_5_ms(what):
    backend, fake, clock = make()
    backend.read()
    if what == "count 257":  # the driver's count is absurd: no phantom GPUs probed, logged or reported
        fake.count_override = 257
    else:  # every field of every GPU fails
        for fn in FIELD_FUNCTIONS:
            fake.device_faults[(fn, None)] = what
    times = []
    for _ in range(60):
        clock.t += 1
        start = time.perf_counter()
        backend.read()
        times.append(time.perf_counter() - start)
    assert statistics.median(times) <= 0.005


def test_an_unknown_error_code_does_not_go_back_to_the_library_for_its_text():
    backend, fake, _ = make()
    pynvml.NVMLError._errcode_to_string.pop(555, None)
    fake.device_faults[("nvmlDeviceGetTemperature", None)] = 555
    (d, *_) = backend.read()
    assert d.reason_unavailable("temperature_c") == "NVML error 555"
    assert 555 not in pynvml.NVMLError._errcode_to_string  # str(err) was never called


# --- the storm, fast -----------------------------------------------------------------------------------
def test_fault_storm_1000_ticks():
    report = StormRun(ticks=1000, gpus=4, seed=11, retry_interval_s=RETRY).run()
    assert len({s.kind for s in report.storms}) == len(StormRun.KINDS), [s.kind for s in report.storms]
    assert report.crashes == 0, report.crash_examples
    assert report.hidden_device_ticks == 0 and report.collateral_field_ticks == 0, report.hidden_examples
    assert report.implausible_ticks == 0, report.implausible_examples
    assert report.not_recovered_within(RETRY) == []
    assert report.max_lines_per_storm <= 5, max(report.storms, key=lambda s: s.lines).log_examples
    assert statistics.median(report.faulted_s) <= 0.005
    assert FIELD_ERRORS  # (the storm draws its per-field errors from these)
