"""What ModelDeck reads of a model's architecture from real files written here: config.json (with and
without safetensors weights beside it), GGUF headers written by gguf.GGUFWriter with a projector beside
them, diffusers folders, Hugging Face cache entries; and `metadata_for_path`, which turns any of them
into a model description without registering it, or refuses bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from app.core.importers import ModelImportError, read_architecture, read_gguf, read_safetensors, scan_path
from app.core.model_registry import ModelType, metadata_for_path, metadata_from_scan, missing_facts
from tests.core.test_importers import add_cached_repo

LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 4096}


def config_arch(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The architecture read from a config.json alone."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return read_architecture(folder).architecture


def weights(folder: Path, tensors: dict[str, tuple[int, ...]], name: str = "model.safetensors") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(shape, np.float16) for k, shape in tensors.items()}, str(folder / name))


# ------------------------------------------------------------------------------------- config.json


def test_qwen2_moe_experts_shared_experts_and_bias(tmp_path):
    arch = config_arch(tmp_path, {**LLAMA, "model_type": "qwen2_moe", "num_experts": 60, "num_experts_per_tok": 4,
                                  "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632})
    assert (arch["experts"], arch["active_experts"], arch["expert_intermediate_size"]) == (60, 4, 1408)
    assert arch["shared_experts"] == 4  # one shared expert four routed experts wide
    assert arch["attention_bias"] is True and arch["mlp_kind"] == "gated"  # Qwen2: biases without a config key


def test_deepseek_routed_and_shared_experts_and_latent_attention(tmp_path):
    arch = config_arch(tmp_path, {**LLAMA, "model_type": "deepseek_v3", "n_routed_experts": 256,
                                  "num_experts_per_tok": 8, "n_shared_experts": 1, "moe_intermediate_size": 2048,
                                  "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
                                  "attention_bias": False})
    assert (arch["experts"], arch["active_experts"], arch["shared_experts"]) == (256, 8, 1)
    assert (arch["kv_lora_rank"], arch["qk_rope_head_dim"], arch["head_dim"]) == (512, 64, 192)
    assert arch["attention_bias"] is False and arch["mlp_kind"] == "gated"


def test_mixtral_local_experts_and_tying(tmp_path):
    arch = config_arch(tmp_path, {**LLAMA, "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2,
                                  "tie_word_embeddings": False})
    assert (arch["experts"], arch["active_experts"], arch["tie_word_embeddings"]) == (8, 2, False)
    assert arch["kv_lora_rank"] is None and arch["shared_experts"] is None
    assert config_arch(tmp_path, {**LLAMA, "tie_word_embeddings": True})["tie_word_embeddings"] is True


@pytest.mark.parametrize(("config", "bias"), [
    ({"model_type": "qwen2"}, True),
    ({"model_type": "llama", "attention_bias": False}, False),
    ({"model_type": "internlm", "qkv_bias": True}, True),
    ({"model_type": "starcoder2", "use_bias": True}, True),
    ({"model_type": "falcon", "bias": False}, False),
    ({"model_type": "llama"}, None),
])
def test_attention_bias_from_its_keys_or_the_family(tmp_path, config, bias):
    assert config_arch(tmp_path, {**LLAMA, **config})["attention_bias"] is bias


@pytest.mark.parametrize(("family", "kind"), [
    ("gpt2", "plain"), ("gpt_neox", "plain"), ("phi", "plain"), ("falcon", "plain"), ("gpt_bigcode", "plain"),
    ("bloom", "plain"), ("opt", "plain"), ("llama", "gated"), ("mistral", "gated"), ("qwen3", "gated"),
    ("gemma2", "gated"), ("phi3", "gated"), ("unknown_family", None),
])
def test_mlp_kind_by_family(tmp_path, family, kind):
    assert config_arch(tmp_path, {**LLAMA, "model_type": family})["mlp_kind"] == kind


def test_hidden_act_or_mlp_bias_alone_do_not_decide_the_mlp(tmp_path):
    arch = config_arch(tmp_path, {**LLAMA, "model_type": "somenet", "hidden_act": "gelu", "mlp_bias": True})
    assert arch["mlp_kind"] is None


def layer_types(pattern: str) -> list[str]:
    return ["sliding_attention" if c == "s" else "full_attention" for c in pattern]


@pytest.mark.parametrize(("extra", "window", "pattern"), [
    ({"model_type": "gemma3_text", "layer_types": layer_types("sssssf" * 2 + "ss")}, 512, 6),
    ({"model_type": "gemma2", "layer_types": layer_types("sf" * 4)}, 512, 2),
    ({"model_type": "gemma2"}, 512, 2),  # older configs: the family alternates
    ({"model_type": "gemma3_text"}, 512, 6),
    ({"model_type": "cohere2", "sliding_window_pattern": 4}, 512, 4),
    ({"model_type": "mistral"}, 512, None),  # every layer slides
    ({"model_type": "gpt_oss", "layer_types": layer_types("ffff")}, None, None),  # no layer slides: no window
    ({"model_type": "qwen2", "use_sliding_window": False}, None, None),
    ({"model_type": "x", "layer_types": layer_types("ssfsfsssfs")}, 512, 3),  # uneven: at least as many globals
])
def test_sliding_window_and_its_pattern(tmp_path, extra, window, pattern):
    arch = config_arch(tmp_path, {**LLAMA, "sliding_window": 512, **extra})
    assert (arch["sliding_window"], arch["sliding_window_pattern"]) == (window, pattern)


def test_whisper_decoder_is_the_cached_part(tmp_path):
    arch = config_arch(tmp_path, {"model_type": "whisper", "num_hidden_layers": 32, "encoder_layers": 32,
                                  "decoder_layers": 4, "d_model": 1280, "encoder_attention_heads": 20,
                                  "decoder_attention_heads": 20, "decoder_ffn_dim": 5120, "vocab_size": 51866,
                                  "max_target_positions": 448, "max_source_positions": 1500})
    assert (arch["layers"], arch["encoder_layers"], arch["heads"], arch["head_dim"]) == (4, 32, 20, 64)
    assert (arch["intermediate_size"], arch["max_context"], arch["mlp_kind"]) == (5120, 448, "plain")


# ---------------------------------------------------------------------- vision towers in safetensors


def test_qwen2_vl_vision_tower_counted_from_the_weights(tmp_path):
    folder = tmp_path / "qwen2-vl"
    weights(folder, {"visual.patch_embed.proj.weight": (64, 3, 2, 14, 14), "visual.merger.mlp.0.weight": (32, 16),
                     "model.layers.0.self_attn.q_proj.weight": (64, 64), "model.embed_tokens.weight": (100, 64),
                     "lm_head.weight": (100, 64)})
    (folder / "config.json").write_text(json.dumps({**LLAMA, "model_type": "qwen2_vl",
                                                    "vision_config": {"depth": 1, "embed_dim": 64}}))
    model = read_safetensors(folder)
    assert model.architecture["components"] == {"vision_encoder": 64 * 3 * 2 * 14 * 14 + 32 * 16}
    assert model.parameters == 64 * 3 * 2 * 14 * 14 + 32 * 16 + 64 * 64 + 2 * 100 * 64  # the whole model
    assert model.architecture["attention_bias"] is True  # read from the family, as in text-only Qwen2


def test_llava_and_gemma3_towers_and_projectors(tmp_path):
    folder = tmp_path / "llava"
    weights(folder, {"vision_tower.vision_model.embeddings.patch_embedding.weight": (32, 3, 14, 14),
                     "multi_modal_projector.linear_1.weight": (64, 32),
                     "model.vision_tower.vision_model.post_layernorm.weight": (32,),
                     "language_model.model.embed_tokens.weight": (100, 64)})
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {**LLAMA},
                                                    "vision_config": {"hidden_size": 32}}))
    arch = read_safetensors(folder).architecture
    assert arch["components"] == {"vision_encoder": 32 * 3 * 14 * 14 + 64 * 32 + 32}
    assert (arch["family"], arch["layers"], arch["mlp_kind"]) == ("llava", 2, "gated")  # the text model's MLP


def test_no_vision_config_no_component(tmp_path):
    folder = tmp_path / "plain"
    weights(folder, {"visual.odd_name.weight": (4, 4), "model.embed_tokens.weight": (100, 64)})
    (folder / "config.json").write_text(json.dumps(LLAMA))
    assert read_safetensors(folder).architecture["components"] is None


# --------------------------------------------------------------------------------------------- GGUF


def write_gguf(path: Path, arch: str, kv: dict[str, Any], tensors: dict[str, tuple[int, ...]]) -> Path:
    """A GGUF of F32 tensors (shapes numpy-ordered) with the given keys, written by gguf.GGUFWriter."""
    w = gguf.GGUFWriter(path, arch)
    for key, value in kv.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_string(key, value)
    for name, shape in tensors.items():
        w.add_tensor(name, np.zeros(shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llm_kv(arch: str, **extra: Any) -> dict[str, Any]:
    return {f"{arch}.block_count": 2, f"{arch}.embedding_length": 64, f"{arch}.feed_forward_length": 128,
            f"{arch}.attention.head_count": 4, f"{arch}.context_length": 4096,
            **{f"{arch}.{k}": v for k, v in extra.items()}}


def test_gguf_moe_latent_attention_bias_and_gate(tmp_path):
    path = write_gguf(tmp_path / "ds.gguf", "deepseek2", llm_kv(
        "deepseek2", expert_count=64, expert_used_count=6, expert_feed_forward_length=32, expert_shared_count=2,
        **{"attention.kv_lora_rank": 512, "rope.dimension_count": 64}), {
        "token_embd.weight": (100, 64), "blk.0.attn_q.weight": (64, 64), "blk.0.attn_q.bias": (64,),
        "blk.0.ffn_gate_exps.weight": (64, 32, 64)})
    arch = read_gguf(path).architecture
    assert (arch["experts"], arch["active_experts"], arch["expert_intermediate_size"]) == (64, 6, 32)
    assert (arch["shared_experts"], arch["kv_lora_rank"], arch["qk_rope_head_dim"]) == (2, 512, 64)
    assert (arch["attention_bias"], arch["mlp_kind"], arch["tie_word_embeddings"]) == (True, "gated", True)


def test_gguf_plain_and_fused_mlps(tmp_path):
    plain = write_gguf(tmp_path / "gpt2.gguf", "gpt2", llm_kv("gpt2"), {
        "token_embd.weight": (100, 64), "output.weight": (100, 64), "blk.0.attn_qkv.weight": (192, 64),
        "blk.0.ffn_up.weight": (128, 64)})
    arch = read_gguf(plain).architecture
    assert (arch["mlp_kind"], arch["attention_bias"], arch["tie_word_embeddings"]) == ("plain", False, False)
    fused = write_gguf(tmp_path / "other.gguf", "newarch", llm_kv("newarch"), {
        "token_embd.weight": (100, 64), "blk.0.ffn_up.weight": (256, 64)})  # gate and up in one tensor
    assert read_gguf(fused).architecture["mlp_kind"] == "gated"


@pytest.mark.parametrize(("extra", "pattern"), [
    ({"attention.sliding_window_pattern": 4}, 4),
    ({"attention.sliding_window_pattern": [True, True, False, True, True, False]}, 3),
    ({}, 6),  # Gemma 3: llama.cpp's own pattern for the family
])
def test_gguf_sliding_window_pattern(tmp_path, extra, pattern):
    path = write_gguf(tmp_path / "g.gguf", "gemma3", llm_kv("gemma3", **{"attention.sliding_window": 1024}, **extra),
                      {"token_embd.weight": (100, 64)})
    arch = read_gguf(path).architecture
    assert (arch["sliding_window"], arch["sliding_window_pattern"]) == (1024, pattern)


def test_mmproj_beside_a_gguf_is_its_vision_encoder(tmp_path):
    folder = tmp_path / "vlm"
    folder.mkdir()
    write_gguf(folder / "model-Q8_0.gguf", "llama", llm_kv("llama"), {"token_embd.weight": (100, 64)})
    write_gguf(folder / "model-F16.gguf", "llama", llm_kv("llama"), {"token_embd.weight": (100, 64)})
    write_gguf(folder / "mmproj-model-f16.gguf", "clip", {}, {"v.patch_embd.weight": (32, 3, 14, 14),
                                                             "mm.0.weight": (64, 32)})
    projector = 32 * 3 * 14 * 14 + 64 * 32
    models, errors = scan_path(folder)
    assert errors == [] and len(models) == 2  # two quantizations, each with the one projector
    for model in models:
        assert model.architecture["components"] == {"vision_encoder": projector}
        assert model.parameters == 100 * 64 + projector and model.weight_bytes == 4 * (100 * 64 + projector)
        assert model.files[-1].endswith("mmproj-model-f16.gguf") and any("vision projector" in n for n in model.notes)
    [one], _ = scan_path(folder / "model-Q8_0.gguf")
    assert one.architecture["components"] == {"vision_encoder": projector}
    [alone], _ = scan_path(folder / "mmproj-model-f16.gguf")  # asked for by name: the projector itself
    assert alone.parameters == projector and alone.architecture["components"] is None


# ---------------------------------------------------------------------------------- diffusers folders


def write_pipeline(root: Path, model_index: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps(model_index or {
        "_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "safety_checker": [None, None]}))
    weights(root / "unet", {"conv_in.weight": (32, 4, 3, 3), "conv_out.weight": (4, 32, 3, 3)},
            "diffusion_pytorch_model.safetensors")
    weights(root / "unet", {"conv_in.weight": (32, 4, 3, 3), "conv_out.weight": (4, 32, 3, 3)},
            "diffusion_pytorch_model.fp16.safetensors")  # the same part again: counted once
    weights(root / "text_encoder", {"text_model.embeddings.token_embedding.weight": (100, 16)})
    (root / "text_encoder" / "config.json").write_text(json.dumps({"model_type": "clip_text_model"}))
    weights(root / "vae", {"encoder.conv_in.weight": (8, 3, 3, 3)}, "diffusion_pytorch_model.safetensors")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    return root


UNET, TEXT, VAE = 2 * 32 * 4 * 3 * 3, 100 * 16, 8 * 3 * 3 * 3


def test_diffusers_folder_is_one_pipeline_with_its_parts(tmp_path):
    root = write_pipeline(tmp_path / "sdxl")
    models, errors = scan_path(tmp_path)
    assert errors == [] and len(models) == 1
    [pipe] = models
    assert pipe.architecture["components"] == {"text_encoder": TEXT, "unet": UNET, "vae": VAE}
    assert pipe.parameters == UNET + TEXT + VAE and pipe.weight_bytes == 2 * (UNET + TEXT + VAE)
    assert pipe.format == "diffusers" and pipe.name == "sdxl" and pipe.path == str(root)
    assert any("fp16" in n and "not counted" in n for n in pipe.notes)
    meta = metadata_from_scan(pipe)
    assert meta.model_type == ModelType.TEXT_TO_IMAGE and meta.runtime_backend == "diffusers"
    assert meta.provider_name == "stable_diffusion" and meta.architecture.components == pipe.architecture["components"]
    assert missing_facts(meta) == []


def test_video_pipeline_in_the_hugging_face_cache(tmp_path):
    work = write_pipeline(tmp_path / "work", {"_class_name": "WanPipeline",
                                              "transformer": ["diffusers", "WanTransformer3DModel"],
                                              "vae": ["diffusers", "AutoencoderKLWan"]})
    (work / "transformer").mkdir()
    weights(work / "transformer", {"blocks.0.attn.to_q.weight": (64, 64)}, "diffusion_pytorch_model.safetensors")
    hub = tmp_path / "hub"
    files = {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("*") if p.is_file()}
    snapshot = add_cached_repo(hub, "org/wan", files)
    [pipe] = scan_path(hub)[0]
    assert pipe.huggingface_id == "org/wan" and pipe.path == str(snapshot)
    assert pipe.architecture["components"] == {"transformer": 64 * 64, "vae": VAE}  # parts the index lists
    meta = metadata_for_path(snapshot)
    assert meta.model_type == ModelType.TEXT_TO_VIDEO and meta.id == "org/wan" and meta.parameters == 64 * 64 + VAE


# ------------------------------------------------------------------------------------ metadata_for_path


def test_metadata_for_a_gguf_file(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", "llama", llm_kv("llama", **{"attention.head_count_kv": 2}),
                      {"token_embd.weight": (100, 64), "blk.0.ffn_gate.weight": (128, 64)})
    meta = metadata_for_path(path)
    assert meta.model_type == ModelType.LLM and meta.runtime_backend == "llama.cpp" and meta.origin == "scanned"
    assert meta.parameters == 100 * 64 + 128 * 64 and meta.architecture.mlp_kind == "gated"
    assert meta.estimation_architecture is not None and missing_facts(meta) == []


def test_metadata_for_a_folder_with_weights(tmp_path):
    folder = tmp_path / "llama"
    weights(folder, {"model.embed_tokens.weight": (100, 64), "lm_head.weight": (100, 64)})
    (folder / "config.json").write_text(json.dumps(LLAMA))
    meta = metadata_for_path(folder)
    assert meta.parameters == 2 * 100 * 64 and meta.weights_exact and meta.architecture.layers == 2
    assert meta.architecture.tie_word_embeddings is False


def test_metadata_for_a_config_alone(tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA, "model_type": "qwen2"}))
    meta = metadata_for_path(str(folder))
    assert meta.parameters is None and meta.weight_bytes is None and meta.model_type == ModelType.LLM
    assert meta.architecture.attention_bias is True and meta.estimation_architecture is not None
    assert missing_facts(meta) == []  # the architecture speaks for the parameters
    assert any("config.json only" in part for part in (meta.quality_note or "").split("; "))


def test_metadata_for_a_cached_repo_and_its_snapshot(tmp_path):
    work = tmp_path / "work"
    weights(work, {"model.embed_tokens.weight": (100, 64)})
    hub = tmp_path / "hub"
    snapshot = add_cached_repo(hub, "org/tiny", {"model.safetensors": (work / "model.safetensors").read_bytes(),
                                                 "config.json": json.dumps(LLAMA).encode()})
    for where in (hub / "models--org--tiny", snapshot):
        meta = metadata_for_path(where)
        assert meta.id == "org/tiny" and meta.parameters == 100 * 64 and meta.architecture.layers == 2


def test_metadata_for_a_diffusers_folder(tmp_path):
    meta = metadata_for_path(write_pipeline(tmp_path / "pipe"))
    assert meta.model_type == ModelType.TEXT_TO_IMAGE and meta.parameters == UNET + TEXT + VAE


def one_line_error(path: Path | str) -> ModelImportError:
    with pytest.raises(ModelImportError) as err:
        metadata_for_path(path)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text and text.startswith(str(Path(path).resolve()))
    return err.value


def test_bad_input_is_one_clear_line(tmp_path):
    assert "not found" in one_line_error(tmp_path / "nowhere").message
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    assert "holds no model" in one_line_error(empty).message
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text('{"model_type": "llama", ')
    assert "not valid JSON" in one_line_error(corrupt).message
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    assert one_line_error(truncated / "model.gguf").kind.value == "truncated"


def test_a_folder_of_several_models_asks_for_one(tmp_path):
    (tmp_path / "models").mkdir()
    for name in ("a", "b"):
        write_gguf(tmp_path / "models" / f"{name}.gguf", "llama", llm_kv("llama"), {"token_embd.weight": (100, 64)})
    err = one_line_error(tmp_path / "models")
    assert "holds 2 models" in err.message and "a.gguf" in err.message
