"""QuantizationStrategy: the best level that fits, partial offload, the CPU, and validated preferences."""

from __future__ import annotations

import pytest

from app.core.estimation import UnknownQuantizationError
from app.core.hardware.snapshot import GpuDevice, HardwareProfile, HostMemory
from app.core.model_registry import ModelMetadata, ModelRegistry, ModelType
from app.core.quantization_strategy import (
    PlacementError,
    QuantizationConfig,
    QuantizationLevel,
    QuantizationStrategy,
    candidate_levels,
    estimate_model,
    quality_of,
)

GiB = 1 << 30


def machine(gpus_free_gib=(12.0,), ram_gib=64.0, cc=(8, 6)) -> HardwareProfile:
    gpus = tuple(
        GpuDevice(index=i, name=f"Test GPU {i}", kind="simulated", total_bytes=int(f * GiB) + GiB,
                  used_bytes=GiB, free_bytes=int(f * GiB), compute_capability=cc)
        for i, f in enumerate(gpus_free_gib)
    )
    host = HostMemory(total_bytes=int(ram_gib * GiB), available_bytes=int(ram_gib * GiB), used_bytes=0)
    return HardwareProfile(timestamp=0.0, gpus=gpus, host=host)


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry(user_store=None)


def test_picks_the_best_quality_that_fits(registry):
    model = registry.get_model("meta-llama/Llama-3.1-8B-Instruct")
    strategy = QuantizationStrategy()
    plan = strategy.plan(model, machine((12.0,)))
    available = 11 * GiB  # 12 GiB free minus the 1 GiB headroom
    assert plan.placement == "gpu" and plan.fits and plan.device == "cuda:0"
    assert plan.estimate.total_bytes <= available
    assert plan.headroom_bytes == available - plan.estimate.total_bytes
    ranked = [c.quantization for c in plan.alternatives]
    better = ranked[: ranked.index(plan.quantization)]
    assert better, "a 16-bit level should have been considered first"
    assert all(estimate_model(model, lv).total_bytes > available for lv in better)
    assert plan.gpu_layers == 32


def test_more_memory_never_means_a_worse_level(registry):
    model = registry.get_model("Qwen/Qwen2.5-14B-Instruct")
    strategy = QuantizationStrategy()
    last = None
    for free in (6, 8, 10, 12, 16, 24, 32, 48):
        plan = strategy.plan(model, machine((float(free),)))
        if plan.placement == "gpu":
            q = quality_of(plan.quantization)[0]
            assert last is None or q <= last
            last = q
    assert last is not None


def test_preferred_level_that_does_not_fit_says_needed_and_available(registry):
    model = registry.get_model("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(PlacementError) as err:
        QuantizationStrategy().plan(model, machine((8.0,)), preferred=QuantizationLevel.FLOAT16)
    e = err.value
    assert e.needed_bytes > e.available_bytes == 7 * GiB
    assert "needs" in str(e) and "available" in str(e) and "fp16" in str(e)


def test_preferred_level_that_fits_is_used(registry):
    model = registry.get_model("meta-llama/Llama-3.1-8B-Instruct")
    plan = QuantizationStrategy().plan(model, machine((24.0,)), preferred="4bit")
    assert plan.quantization == "int4" and plan.fits


def test_unknown_preferred_level_is_an_error(registry):
    model = registry.get_model("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(UnknownQuantizationError):
        QuantizationStrategy().plan(model, machine(), preferred="9bit")


def test_partial_offload_when_nothing_fits_whole(registry):
    model = registry.get_model("meta-llama/Llama-3.3-70B-Instruct")
    plan = QuantizationStrategy().plan(model, machine((24.0,), ram_gib=128))
    assert plan.placement == "partial" and not plan.fits
    assert 0 < plan.gpu_layers < 80
    assert plan.device == "cuda:0+cpu"
    assert f"{plan.gpu_layers} of 80 layers" in plan.reason


def test_cpu_when_there_is_no_gpu(registry):
    model = registry.get_model("meta-llama/Llama-3.2-3B-Instruct")
    plan = QuantizationStrategy().plan(model, machine((), ram_gib=16))
    assert plan.placement == "cpu" and plan.device == "cpu" and plan.fits
    # The runtime's own RAM: llama.cpp's 150 MiB footprint for GGUF levels; a Python runtime's libraries
    # and allocator (1.27 GiB, faster-whisper's CPU benchmark) for transformers levels.
    expected = 150 * (1 << 20) if plan.quantization[:1].isupper() else 1300 * (1 << 20)
    assert plan.estimate.overhead_bytes == expected
    assert "CPU" in plan.reason


def test_nothing_fits(registry):
    model = registry.get_model("meta-llama/Llama-3.1-405B-Instruct")
    plan = QuantizationStrategy().plan(model, machine((8.0,), ram_gib=16))
    assert plan.placement == "none" and not plan.fits
    assert "does not fit" in plan.reason


def test_fp8_only_offered_on_gpus_that_run_it(registry):
    model = registry.get_model("stabilityai/stable-diffusion-xl-base-1.0")
    old = QuantizationStrategy().plan(model, machine((2.0,), cc=(8, 6)))
    new = QuantizationStrategy().plan(model, machine((2.0,), cc=(8, 9)))
    assert "fp8" not in [c.quantization for c in old.alternatives]
    assert "fp8" in [c.quantization for c in new.alternatives]


def test_compute_capability_minimum_is_honoured():
    model = ModelMetadata(name="Needs Hopper", provider="other", model_type=ModelType.LLM, size_gb=1.0,
                          model_id="x/hopper-only", compute_capability_min=(9, 0))
    plan = QuantizationStrategy().plan(model, machine((80.0,), cc=(8, 6)))
    assert plan.device == "cpu"


def test_candidates_follow_the_runtime(registry):
    llm = candidate_levels(registry.get_model("meta-llama/Llama-3.1-8B-Instruct"))
    assert "Q4_K_M" in llm and "nf4" in llm
    sd = candidate_levels(registry.get_model("stabilityai/stable-diffusion-xl-base-1.0"))
    assert set(sd) <= {"fp16", "bf16", "fp8"}
    qualities = [quality_of(lv)[0] for lv in llm]
    assert qualities == sorted(qualities)


def test_seed_select_quantization(registry):
    strategy = QuantizationStrategy()
    config = strategy.select_quantization(8.0, machine((24.0,)))
    assert isinstance(config, QuantizationConfig)
    assert isinstance(config.level, QuantizationLevel)
    assert 0 < config.estimated_memory_gb < 23
    # transformers keeps embeddings and the output head at 16 bits: an 8B model at 4-bit needs ~6 GiB.
    small = strategy.select_quantization(8.0, machine((8.0,)))
    assert small.level in (QuantizationLevel.NF4, "nf4-dq") and small.estimated_memory_gb < 7.0
    with pytest.raises(PlacementError):
        strategy.select_quantization(8.0, machine((7.0,)), preferred_level=QuantizationLevel.NONE)


def test_a_12_gib_card_holds_ministral_8b_4bit_and_sd15_together(registry):
    """The first user story: an LLM and Stable Diffusion side by side on an RTX 3060."""
    llm = estimate_model(registry.get_model("mistralai/Ministral-8B-v0.1"), "Q4_K_M")
    sd = estimate_model(registry.get_model("stable-diffusion-v1-5/stable-diffusion-v1-5"), "fp16")
    together = llm.total_bytes + sd.without_overhead().total_bytes
    assert together <= 12 * GiB - QuantizationStrategy().gpu_headroom_bytes
    sdxl = estimate_model(registry.get_model("stabilityai/stable-diffusion-xl-base-1.0"), "fp16")
    assert together + sdxl.without_overhead().total_bytes > 12 * GiB  # asking for SDXL too needs a decision


def test_bitsandbytes_4bit_ministral_matches_what_ai_runner_saw(registry):
    """AI Runner's issue #1066: a 4-bit Ministral 8B is 5.75 GB on disk and took 5.34 (GiB) of VRAM.
    bitsandbytes NF4 with double quantization, embeddings and head kept in bf16, gives that size."""
    est = estimate_model(registry.get_model("mistralai/Ministral-8B-Instruct-2410"), "nf4-dq")
    assert est.weights_bytes / 1e9 == pytest.approx(5.75, rel=0.02)


def test_scanned_file_weights_are_exact():
    model = ModelMetadata(name="my.gguf", provider="llama", model_type=ModelType.LLM, size_gb=8.0,
                          model_id="file:/models/my.gguf", weight_bytes=4_920_000_000, file_type="Q4_K_M",
                          weights_exact=True, origin="scanned")
    est = estimate_model(model, "Q4_K_M")
    assert est.weights_bytes == 4_920_000_000 and "header" in est.weights.explanation
    assert estimate_model(model, "Q8_0").weights_bytes != 4_920_000_000


def test_a_model_too_big_for_one_gpu_is_split_across_two(registry):
    model = registry.get_model("meta-llama/Llama-3.3-70B-Instruct")
    plan = QuantizationStrategy().plan(model, machine((24.0, 24.0), ram_gib=8))
    assert plan.placement == "split" and plan.fits
    assert set(plan.device.split("+")) == {"cuda:0", "cuda:1"}
    assert sum(n for _, n in plan.layer_split) == plan.gpu_layers == 80
    assert all(n > 0 for _, n in plan.layer_split)
    doc = plan.to_dict()
    assert doc["layer_split"] and doc["fits"] is True
    # Each GPU holds its layers plus its own compute buffer and runtime, inside its room.
    est = plan.estimate
    per = (est.weights_bytes + est.kv_cache_bytes) / 80
    for _device, n in plan.layer_split:
        assert per * n + est.compute_bytes + est.overhead_bytes <= 23 * GiB
    # One GPU alone would not hold it at this level: that is why it was split.
    assert estimate_model(model, plan.quantization).total_bytes > 23 * GiB


def test_an_explicit_device_is_never_split(registry):
    model = registry.get_model("meta-llama/Llama-3.3-70B-Instruct")
    plan = QuantizationStrategy().plan(model, machine((24.0, 24.0), ram_gib=128), device="cuda:0")
    assert plan.placement in ("partial", "gpu") and "cuda:1" not in plan.device
