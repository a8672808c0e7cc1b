"""The runtime profile: each setting changes the term it should, by the amount the runtime's rule says."""

from __future__ import annotations

import dataclasses

import pytest

from app.core.estimation import Architecture, embedding_bytes, resolve_quantization
from app.core.model_registry import ModelRegistry
from app.core.pipelines import estimate_speech_pipeline
from app.core.quantization_strategy import estimate_model
from app.core.runtime_estimate import estimate_llm_run
from app.core.runtime_profile import RuntimeProfile, check_runtime, parse_resolution, resolve, runtime_for
from app.core.units import MiB

LLAMA3_8B = Architecture(layers=32, hidden_size=4096, heads=32, kv_heads=8, head_dim=128, vocab_size=128256,
                         intermediate_size=14336, family="llama")
GEMMA2_9B = Architecture(layers=42, hidden_size=3584, heads=16, kv_heads=8, head_dim=256, vocab_size=256000,
                         intermediate_size=14336, family="gemma2", sliding_window=4096, sliding_window_pattern=2,
                         tie_word_embeddings=True)
WHISPER_LARGE = Architecture(layers=32, hidden_size=1280, heads=20, kv_heads=20, head_dim=64, vocab_size=51865,
                             family="whisper", mlp_gated=False)


def run(profile: RuntimeProfile, arch: Architecture = LLAMA3_8B, context: int = 8192, level: str = "Q4_K_M",
        device_kind: str = "gpu"):
    return estimate_llm_run(level, profile, architecture=arch, context=context, device_kind=device_kind)


def test_llama_cpp_keeps_untied_embeddings_in_ram_and_tied_ones_in_both():
    q = resolve_quantization("Q4_K_M")
    emb = embedding_bytes(q, LLAMA3_8B)
    est = run(RuntimeProfile(runtime="llama.cpp"))
    assert sum(b for _, b in est.weights_by_type) - est.weights_bytes == emb
    assert est.host_bytes >= emb
    tied = run(RuntimeProfile(runtime="llama.cpp"), GEMMA2_9B)
    assert tied.weights_bytes == sum(b for _, b in tied.weights_by_type)  # the output layer's copy on the GPU
    assert tied.host_bytes >= embedding_bytes(q, GEMMA2_9B)
    on_cpu = run(RuntimeProfile(runtime="llama.cpp"), device_kind="cpu")
    assert on_cpu.host_bytes == 0 and on_cpu.weights_bytes == sum(b for _, b in on_cpu.weights_by_type)


def test_transformers_keeps_everything_on_the_gpu():
    est = run(RuntimeProfile(runtime="transformers"), level="bf16")
    assert est.host_bytes == 0 and est.weights_bytes == sum(b for _, b in est.weights_by_type)


def test_flash_attention_off_sizes_the_attention_scores():
    on, off = run(RuntimeProfile(runtime="llama.cpp")), run(RuntimeProfile(runtime="llama.cpp", flash_attention=False))
    # without flash attention: f32 scores for 512 tokens × 8192 cells × (32 heads + the mask)
    assert off.compute_bytes >= 4 * 512 * 8192 * 33 > on.compute_bytes
    assert "no flash attention" in off.runtime and "no flash attention" not in on.runtime


def test_ollama_context_is_per_sequence_and_llama_cpp_shares_it():
    one = run(RuntimeProfile(runtime="ollama"))
    four = run(RuntimeProfile(runtime="ollama", parallel=4))
    assert four.kv_cache_bytes == 4 * one.kv_cache_bytes
    shared = run(RuntimeProfile(runtime="llama.cpp", parallel=4))
    assert shared.kv_cache_bytes == run(RuntimeProfile(runtime="llama.cpp")).kv_cache_bytes


def test_llama_cpp_slots_each_keep_a_sliding_window():
    one = run(RuntimeProfile(runtime="llama.cpp"), GEMMA2_9B, context=32768)
    four = run(RuntimeProfile(runtime="llama.cpp", parallel=4), GEMMA2_9B, context=32768)
    per_cell = 2 * 8 * 256 * 2  # K and V, 8 KV heads × 256, f16
    # 21 sliding layers: (4096 + 512) cells for one slot, 4 × 4096 + 512 (padded to 256) for four
    assert one.kv_cache_bytes == (21 * 32768 + 21 * 4608) * per_cell
    assert four.kv_cache_bytes == (21 * 32768 + 21 * 16896) * per_cell


def test_k_and_v_types_count_separately():
    f16 = run(RuntimeProfile(runtime="llama.cpp"))
    k8 = run(RuntimeProfile(runtime="llama.cpp", cache_type_k="q8_0"))
    both = run(RuntimeProfile(runtime="llama.cpp", cache_type_k="q8_0", cache_type_v="q8_0"))
    half = f16.kv_cache_bytes // 2
    assert k8.kv_cache_bytes == half + half * 34 // 64
    assert both.kv_cache_bytes == 2 * (half * 34 // 64)


def test_kv_cache_in_ram_moves_it_off_the_device():
    est = run(RuntimeProfile(runtime="llama.cpp", kv_offload=False))
    assert est.kv_cache_bytes == 0
    assert est.host_bytes >= run(RuntimeProfile(runtime="llama.cpp")).kv_cache_bytes


def test_backends_have_their_own_context_and_metal_is_one_memory():
    cuda = run(RuntimeProfile(runtime="llama.cpp"))
    metal = run(RuntimeProfile(runtime="llama.cpp", backend="metal"))
    assert cuda.overhead_bytes == 457 * MiB and metal.overhead_bytes == 512 * MiB
    assert metal.host_bytes == 0 and metal.weights_bytes == cuda.weights_bytes + cuda.host_bytes


def test_partial_offload_graph_is_the_output_matrix():
    est = run(RuntimeProfile(runtime="llama.cpp"))
    assert est.offload_graph_bytes == 128256 * 4096 // 256 * 210  # the output layer at Q6_K


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry(user_store=None)


def test_diffusion_peak_is_the_largest_phase_not_the_sum(registry):
    sdxl = registry.get_model("stabilityai/stable-diffusion-xl-base-1.0")
    est = estimate_model(sdxl, "fp16")
    assert [p.name for p in est.phases] == ["encode", "denoise", "decode"]
    working = [p.working_bytes for p in est.phases]
    assert est.compute_bytes == max(working) < sum(working)
    assert est.total_bytes == est.weights_bytes + max(working) + est.overhead_bytes
    assert {c.name for c in est.components} == set(sdxl.architecture.components)


def test_text_encoders_on_the_cpu_and_component_offload(registry):
    sdxl = registry.get_model("stabilityai/stable-diffusion-xl-base-1.0")
    whole = estimate_model(sdxl, "fp16")
    cpu_text = estimate_model(sdxl, "fp16", profile=RuntimeProfile(text_encoder_device="cpu"))
    encoders = sum(c.bytes for c in whole.components if c.role == "text encoder")
    assert cpu_text.weights_bytes == whole.weights_bytes - encoders and cpu_text.host_bytes == encoders
    offload = estimate_model(sdxl, "fp16", profile=RuntimeProfile(offload="model"))
    top = max(offload.phases, key=lambda p: p.peak_bytes)
    assert offload.total_bytes == top.peak_bytes + offload.overhead_bytes < whole.total_bytes


def test_vae_tiling_and_slicing_bound_the_decode(registry):
    sdxl = registry.get_model("stabilityai/stable-diffusion-xl-base-1.0")

    def decode(**kw):
        est = estimate_model(sdxl, "fp16", profile=RuntimeProfile(**kw))
        return next(p.working_bytes for p in est.phases if p.name == "decode")

    vae_copy = sdxl.architecture.components["vae"] * 2  # SDXL's fp32 copy of its VAE
    assert decode() - vae_copy == 768 * 4 * 1024 * 1024  # 3 × 256 channels, fp32, one 1024² image
    assert decode(vae_tiling=True) - vae_copy == 768 * 4 * 512 * 512
    assert decode(batch=4) - vae_copy == 4 * (decode() - vae_copy)
    assert decode(batch=4, vae_slicing=True) == decode()


def test_a_component_at_its_own_level(registry):
    sd35 = registry.get_model("stabilityai/stable-diffusion-3.5-large")
    est = estimate_model(sd35, "fp16", profile=RuntimeProfile(component_levels=(("text_encoder_3", "int8"),)))
    t5 = next(c for c in est.components if c.name == "text_encoder_3")
    assert t5.level == "int8" and t5.bytes == sd35.architecture.components["text_encoder_3"]


def test_speech_cross_attention_once_per_window_unless_the_runtime_repeats_it():
    def decode(runtime: str, batch: int = 1) -> int:
        est = estimate_speech_pipeline("fp16", RuntimeProfile(runtime=runtime, batch=batch), parameters=1_543_304_960,
                                       architecture=WHISPER_LARGE, components=None, encoder_layers=32)
        return next(p.working_bytes for p in est.phases if p.name == "decode")

    cross = 2 * 32 * 1500 * 1280 * 2
    self_kv = 2 * 32 * 100 * 1280 * 2 * 5
    assert decode("ctranslate2") == cross + self_kv
    assert decode("openai-whisper") == 5 * cross + self_kv
    assert decode("ctranslate2", batch=8) == 8 * decode("ctranslate2")
    assert decode("whisper.cpp") == cross + 2 * 32 * 448 * 1280 * 2 * 5


def test_runtime_defaults_follow_the_level_and_the_model():
    assert runtime_for("llm", "Q4_K_M") == "llama.cpp" and runtime_for("llm", "bf16") == "transformers"
    assert runtime_for("llm", "Q4_K_M", "ollama") == "ollama"
    assert runtime_for("text_to_image", "fp16") == "diffusers"
    assert runtime_for("speech_to_text", "int8", "faster-whisper") == "ctranslate2"
    assert resolve(RuntimeProfile(parallel=2), "llm", "Q8_0").runtime == "llama.cpp"
    assert resolve(RuntimeProfile(runtime="ollama"), "llm", "Q8_0").runtime == "ollama"


@pytest.mark.parametrize(("kw", "words"), [
    ({"runtime": "vllm"}, "unknown runtime"),
    ({"backend": "opencl"}, "unknown backend"),
    ({"cache_type_k": "q3_k"}, "cache-type-k"),
    ({"parallel": 0}, "parallel"),
    ({"width": 1 << 20}, "width"),
    ({"offload": "sequential"}, "offload"),
    ({"component_levels": (("vae",),)}, "pairs"),
])
def test_bad_settings_are_refused_in_words(kw, words):
    with pytest.raises(ValueError, match=words):
        RuntimeProfile(**kw)


def test_runtime_and_level_are_checked_against_the_model():
    check_runtime(RuntimeProfile(runtime="llama.cpp"), "llm", "Q4_K_M")
    with pytest.raises(ValueError, match="does not run image models"):
        check_runtime(RuntimeProfile(runtime="llama.cpp"), "text_to_image")
    with pytest.raises(ValueError, match="does not load nf4"):
        check_runtime(RuntimeProfile(runtime="ollama"), "llm", "nf4")


@pytest.mark.parametrize(("text", "size"), [("1024x768", (1024, 768)), ("512", (512, 512)),
                                           (" 832 × 480 ", (832, 480))])
def test_resolutions(text, size):
    assert parse_resolution(text) == size


@pytest.mark.parametrize("text", ["", "x", "1024x", "4x4", "99999999x2", "-5x5"])
def test_bad_resolutions_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="WIDTHxHEIGHT|between"):
        parse_resolution(text)


def test_profiles_are_hashable_and_key_the_estimate_cache(registry):
    sd15 = registry.get_model("stable-diffusion-v1-5/stable-diffusion-v1-5")
    a = estimate_model(sd15, "fp16", profile=RuntimeProfile(vae_tiling=True))
    b = estimate_model(sd15, "fp16", profile=dataclasses.replace(RuntimeProfile(), vae_tiling=True))
    assert a is b and a is not estimate_model(sd15, "fp16")


def test_a_refused_pipeline_names_the_lighter_settings_that_fit(registry, tmp_path):
    import json

    from app.core.hardware_profiler import HardwareProfiler
    from app.core.manager.placement import Refusal
    from app.core.model_resource_manager import ModelResourceManager

    rig = tmp_path / "rtx3060.json"  # one RTX 3060 with a desktop holding a fixed 0.5 GiB
    rig.write_text(json.dumps({"gpus": [{"card": "rtx3060", "processes": [{"name": "Xorg", "used_gib": 0.5}]}]}))
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=str(rig), clock=lambda: 1000.0),
                                   registry=registry)
    answer = manager.plan("stabilityai/stable-diffusion-xl-base-1.0", "fp16", runtime=RuntimeProfile(batch=2))
    assert isinstance(answer, Refusal)
    assert any(o.startswith("with one component on the GPU at a time: fp16 on cuda:0") for o in answer.options)
    assert manager.loaded_models() == ()  # options are proposals: nothing was loaded or changed


def test_the_3060_refusal_names_each_lighter_setting_once_and_whom_it_would_move(registry):
    from app.core.hardware_profiler import HardwareProfiler
    from app.core.manager.placement import Refusal
    from app.core.model_resource_manager import ModelResourceManager

    manager = ModelResourceManager(profiler=HardwareProfiler(simulate="rtx3060", clock=lambda: 1000.0),
                                   registry=registry)
    manager.load("mistralai/Ministral-8B-Instruct-2410", "Q4_K_M")
    manager.load("stable-diffusion-v1-5/stable-diffusion-v1-5")
    answer = manager.plan("stabilityai/stable-diffusion-xl-base-1.0")
    assert isinstance(answer, Refusal)
    tiling = next(o for o in answer.options if o.startswith("with VAE tiling:"))
    assert tiling.endswith("after offloading Stable Diffusion 1.5 and Ministral 8B Instruct 2410 to RAM")
    # one setting alone is enough here, so the all-at-once option is left out
    assert not any(o.startswith("with VAE tiling, the text encoders") for o in answer.options)
    assert {m.state.value for m in manager.loaded_models()} == {"loaded"}  # proposals: nothing moved
