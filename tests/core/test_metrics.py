"""The Prometheus exporter: what a scrape says, that it never calls the driver, and where it listens."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.hardware.simulated import SimulatedBackend
from app.core.hardware_profiler import HardwareProfiler
from app.core.metrics import (
    Exposition,
    MetricsCollector,
    is_loopback,
    metrics_registry,
    render_metrics,
    serve_metrics,
)
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader
from app.core.sampler import Sampler

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


class CountingProfiler(HardwareProfiler):
    """A simulated profiler that counts how often the driver is read."""

    calls = 0

    def get_profile(self):  # type: ignore[override]
        type(self).calls += 1
        return super().get_profile()


@pytest.fixture
def rig():
    t = [1000.0]
    sim = SimulatedBackend.from_spec("2xrtx4090", clock=lambda: t[0])
    CountingProfiler.calls = 0
    profiler = CountingProfiler(backends=[sim], clock=lambda: t[0])
    manager = ModelResourceManager(profiler=profiler, registry=ModelRegistry(user_store=None),
                                   loader=SimulatedLoader.for_profiler(profiler), clock=lambda: t[0])
    sampler = Sampler(profiler, clock=lambda: t[0])
    sampler.sampled.connect(manager.tick)
    sampler.tick()
    yield manager, sampler, sim, t
    manager.stop()


def scrape(manager, sampler, *, registry: bool = False) -> dict[str, list]:
    """What a scraper reads: the served exposition (or a host's prometheus_client registry)."""
    source = metrics_registry(manager, sampler, node="box") if registry else Exposition(
        MetricsCollector(manager, sampler, node="box"))
    text = render_metrics(source).decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def one(samples, **labels) -> float:
    hits = [v for lab, v in samples if all(lab.get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, (labels, samples)
    return hits[0]


def test_a_scrape_reads_the_last_sample_and_never_the_driver(rig):
    manager, sampler, _, _ = rig
    manager.load(LLAMA, "Q4_K_M", "cuda:0")
    sampler.tick()
    calls = CountingProfiler.calls
    for _ in range(20):
        scrape(manager, sampler)
    assert CountingProfiler.calls == calls


def test_bookings_per_device_and_per_model_match_the_ledger(rig):
    manager, sampler, _, t = rig
    manager.load(LLAMA, "Q4_K_M", "cuda:0", pin=True)
    manager.load(SD15, "fp16", "cuda:1")
    t[0] += 30
    sampler.tick()
    m = scrape(manager, sampler)
    for ledger in manager.ledgers():
        assert one(m["modeldeck_device_booked_bytes"], device=ledger.device) == ledger.reserved_bytes
        assert one(m["modeldeck_device_bookable_bytes"], device=ledger.device) == ledger.available_bytes
        assert one(m["modeldeck_device_pressure_level"], device=ledger.device) == ledger.pressure.rank
    llama = next(x for x in manager.loaded_models() if x.model_id == LLAMA)
    share = llama.placement.shares[0]
    assert one(m["modeldeck_model_booked_bytes"], model=LLAMA, device="cuda:0", category="weights") \
        == share.weights_bytes
    assert one(m["modeldeck_model_booked_bytes"], model=LLAMA, device="cuda:0", category="kv_cache") \
        == share.kv_cache_bytes
    booked_models = sum(v for lab, v in m["modeldeck_model_booked_bytes"] if lab["device"] == "cuda:0")
    runtime = one(m["modeldeck_device_runtime_context_bytes"], device="cuda:0")
    assert booked_models + runtime == one(m["modeldeck_device_booked_bytes"], device="cuda:0")
    info = one(m["modeldeck_model_info"], model=LLAMA, level="Q4_K_M", device="cuda:0", state="loaded",
               placement="gpu", type="llm")
    assert info == 1.0
    assert one(m["modeldeck_model_pinned"], model=LLAMA) == 1.0 and one(m["modeldeck_model_pinned"], model=SD15) == 0
    assert one(m["modeldeck_model_info"], model=SD15, state="loaded", device="cuda:1") == 1.0
    assert one(m["modeldeck_model_idle_seconds"], model=SD15) == 30.0
    # pinned: never expires, so no keep-alive series; SD 1.5 expires after its keep-alive
    assert [lab for lab, _ in m.get("modeldeck_model_keep_alive_remaining_seconds", [])] == [{"model": SD15}]
    assert one(m["modeldeck_node_info"], node="box") == 1.0


def test_a_hosts_prometheus_client_registry_gets_the_same_figures(rig):
    manager, sampler, _, _ = rig
    manager.load(LLAMA, "Q4_K_M", "cuda:0")
    served = scrape(manager, sampler)
    hosted = scrape(manager, sampler, registry=True)
    for name in ("modeldeck_model_booked_bytes", "modeldeck_device_bookable_bytes", "modeldeck_gpu_memory_used_bytes",
                 "modeldeck_model_info", "modeldeck_sampler_samples_total"):
        def norm(rows):
            return sorted((sorted(labels.items()), float(value)) for labels, value in rows)

        assert norm(hosted[name]) == norm(served[name]) and served[name], name


def test_label_values_are_escaped(rig):
    manager, sampler, _, _ = rig
    from app.core.model_registry import ModelMetadata, ModelType

    odd = 'org/quote"back\\slash\nnewline'
    manager.model_registry.register_model(ModelMetadata(name='A "quoted" name', provider="other",
                                                        model_type=ModelType.LLM, size_gb=1.0, model_id=odd),
                                          persist=False)
    manager.load(odd, "Q4_K_M", "cuda:1")
    m = scrape(manager, sampler)
    assert one(m["modeldeck_model_info"], model=odd, name='A "quoted" name') == 1.0
    assert one(m["modeldeck_model_booked_bytes"], model=odd, category="weights") > 0


def test_gpu_series_carry_dcgm_labels_and_the_drivers_figures(rig):
    manager, sampler, _, _ = rig
    m = scrape(manager, sampler)
    gpu = sampler.latest.gpus[1]
    labels = dict(gpu="1", UUID=gpu.uuid, modelName="NVIDIA GeForce RTX 4090", pci_bus_id=gpu.pci_bus_id,
                  device="cuda:1")
    assert one(m["modeldeck_gpu_memory_total_bytes"], **labels) == gpu.total_bytes
    assert one(m["modeldeck_gpu_memory_used_bytes"], **labels) == gpu.used_bytes
    assert one(m["modeldeck_gpu_temperature_celsius"], **labels) == pytest.approx(gpu.temperature_c)
    assert one(m["modeldeck_gpu_info"], compute_capability="8.9", **labels) == 1.0
    assert one(m["modeldeck_sampler_samples_total"]) == 1.0 and one(m["modeldeck_sampler_failures_total"]) == 0.0


def test_a_lost_gpu_says_lost_and_has_no_memory_figures_rather_than_zero(rig):
    manager, sampler, sim, t = rig
    sim.set_lost(0)
    t[0] += 1
    sampler.tick()
    m = scrape(manager, sampler)
    assert one(m["modeldeck_gpu_lost"], device="cuda:0") == 1.0
    assert one(m["modeldeck_gpu_lost"], device="cuda:1") == 0.0
    assert [lab["device"] for lab, _ in m["modeldeck_gpu_memory_used_bytes"]] == ["cuda:1"]
    assert one(m["modeldeck_device_pressure_level"], device="cuda:0") == 3  # critical: nothing can be booked


def test_sampler_failures_are_counted_and_the_last_success_stays(rig):
    manager, sampler, _, t = rig
    good = sampler.health().last_success
    original = sampler._profiler.get_profile
    sampler._profiler.get_profile = lambda: (_ for _ in ()).throw(OSError("driver fault"))
    t[0] += 5
    assert sampler.tick() is None
    sampler._profiler.get_profile = original
    m = scrape(manager, sampler)
    assert one(m["modeldeck_sampler_failures_total"]) == 1.0
    assert one(m["modeldeck_sampler_last_success_timestamp_seconds"]) == good
    assert "driver fault" in (sampler.health().last_error or "")


def test_serve_metrics_listens_on_loopback_by_default_on_any_free_port(rig):
    manager, sampler, _, _ = rig
    server = serve_metrics(manager, sampler, port=0)
    try:
        assert server.address == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(server.url, timeout=5) as answer:
            body = answer.read().decode()
        assert "modeldeck_device_bookable_bytes" in body and "process_resident_memory_bytes" in body
        with pytest.raises(OSError):  # the port is taken: the caller hears it
            serve_metrics(manager, sampler, port=server.port)
    finally:
        server.close()
        server.close()  # a second close is harmless
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def test_another_address_is_served_only_when_asked_and_then_with_a_warning(rig, caplog):
    manager, sampler, _, _ = rig
    with caplog.at_level(logging.WARNING, logger="app.core.metrics"):
        server = serve_metrics(manager, sampler, port=0, address="0.0.0.0")
    server.close()
    assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.core.metrics"):
        serve_metrics(manager, sampler, port=0).close()
    assert not caplog.records


@pytest.mark.parametrize(("address", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                  ("0.0.0.0", False), ("192.168.1.4", False), ("::", False),
                                                  ("gpu-box", False)])
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_a_name_that_is_not_valid_unicode_never_fails_a_scrape(rig):
    """A driver's odd answer (a product name that is not valid UTF-8, decoded with surrogates)."""
    import os
    from dataclasses import replace

    manager, sampler, _, _ = rig
    profile = sampler.latest
    odd = os.fsdecode(b"NVIDIA \xff RTX")
    sampler._latest = replace(profile, gpus=(replace(profile.gpus[0], name=odd), *profile.gpus[1:]))
    m = scrape(manager, sampler)
    assert one(m["modeldeck_gpu_lost"], modelName="NVIDIA \ufffd RTX") == 0.0


def test_a_figure_the_driver_cannot_read_is_one_series_whatever_its_message(rig):
    manager, sampler, sim, t = rig
    from dataclasses import replace

    profile = sampler.latest
    gpus = []
    for n in (1, 2, 3):  # messages with live numbers in them, as NVML's are
        gpu = replace(profile.gpus[0], unavailable=(("power_w", f"read {n * 1000} mW above the limit"),))
        sampler._latest = replace(profile, gpus=(gpu, *profile.gpus[1:]))
        gpus.append([lab for lab, _ in scrape(manager, sampler)["modeldeck_gpu_field_unavailable"]])
    assert gpus[0] == gpus[1] == gpus[2] and gpus[0][0]["field"] == "power_w" and "reason" not in gpus[0][0]


def test_what_a_runtime_measured_is_exported_per_model(rig):
    manager, sampler, _, _ = rig
    from app.core.manager.loaders import ReservationLoader
    from app.core.units import MiB

    class Measuring(ReservationLoader):
        def measured(self, handle):
            return {"cuda:0": {"weights": 4400 * MiB, "kv_cache": 512 * MiB, "output": MiB, "compute": 300 * MiB}}

    manager.loader = Measuring()
    manager.load(LLAMA, "Q4_K_M", "cuda:0")
    m = scrape(manager, sampler)
    assert one(m["modeldeck_model_measured_bytes"], model=LLAMA, category="kv_cache", device="cuda:0") == 512 * MiB
    assert one(m["modeldeck_model_measured_bytes"], model=LLAMA, category="output") == MiB
    # the ledger books what was measured: weights booked = weights measured
    assert one(m["modeldeck_model_booked_bytes"], model=LLAMA, category="weights") == 4400 * MiB
