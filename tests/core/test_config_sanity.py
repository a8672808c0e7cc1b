"""A model's own numbers checked where they are read: a config.json (alone, or beside safetensors weights)
or a GGUF header with a number outside its physical range, or with numbers that contradict each other
(more KV heads than attention heads, more experts per token than experts, heads that do not divide the
hidden size and no head width given), is refused in one line that names the key and the value, in
bounded time, never with a traceback; good configs (Llama, Gemma 3's 256-wide heads, DeepSeek's latent
attention) read as before. Every file is written here: config.json with json.dumps, GGUF with
gguf.GGUFWriter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from app.core.importers import ImportErrorKind, ModelImportError, read_architecture, read_gguf, scan_path
from app.core.model_registry import metadata_for_path
from tests.core.test_importers_hardening import bounded

ROOT = Path(__file__).resolve().parents[2]
LLAMA = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
         "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
         "max_position_embeddings": 131072}
GEMMA3 = {"model_type": "gemma3_text", "num_hidden_layers": 34, "hidden_size": 2560, "num_attention_heads": 8,
          "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 10240, "vocab_size": 262208,
          "max_position_embeddings": 131072, "sliding_window": 1024}
DEEPSEEK_V3 = {"model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168, "num_attention_heads": 128,
               "num_key_value_heads": 128, "intermediate_size": 18432, "vocab_size": 129280,
               "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1,
               "moe_intermediate_size": 2048, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
               "qk_nope_head_dim": 128, "v_head_dim": 128, "max_position_embeddings": 163840}

#: (config changes, the words the one-line error must hold: the key and its value).
BAD_CONFIGS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"num_hidden_layers": 1_000_000_000}, ("num_hidden_layers is 1,000,000,000", "1 to 10,000")),
    ({"num_hidden_layers": 0}, ("num_hidden_layers is 0", "1 to 10,000")),
    ({"num_hidden_layers": -3}, ("num_hidden_layers is -3", "1 to 10,000")),
    ({"num_hidden_layers": 2.5}, ("num_hidden_layers is 2.5", "not a whole number")),
    ({"hidden_size": 10**40}, ("hidden_size is a 133-bit number", "1 to 1,048,576")),  # too long to print whole
    ({"max_position_embeddings": 1e300}, ("max_position_embeddings is 1e+300", "1 to 1,073,741,824")),
    ({"num_key_value_heads": 64}, ("num_key_value_heads (64)", "num_attention_heads (32)")),
    ({"num_local_experts": 8, "num_experts_per_tok": 16}, ("num_experts_per_tok (16)", "num_local_experts (8)")),
    ({"num_attention_heads": 3, "num_key_value_heads": 1}, ("hidden_size (4,096)", "num_attention_heads (3)",
                                                            "head_dim")),
    ({"hidden_size": 16, "num_attention_heads": 32, "num_key_value_heads": 8},  # a head 0.5 wide: never 0
     ("hidden_size (16)", "num_attention_heads (32)")),
    ({"text_config": {"num_hidden_layers": 20_000}}, ("text_config.num_hidden_layers is 20,000",)),
]
BAD_IDS = ["layers-1e9", "layers-0", "layers-negative", "layers-fraction", "hidden-1e40", "context-1e300",
           "kv-over-heads", "experts-per-token-over-experts", "heads-do-not-divide", "heads-over-hidden",
           "text-config-layers"]


def config_folder(tmp_path: Path, config: dict[str, Any], name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def assert_one_clear_line(message: str, words: tuple[str, ...]) -> None:
    assert "\n" not in message and "Traceback" not in message and len(message) < 600, message
    assert "does not state the number of layers" not in message, message
    for word in words:
        assert word in message, (word, message)


# ------------------------------------------------------------------------------------- config.json


@pytest.mark.parametrize(("change", "words"), BAD_CONFIGS, ids=BAD_IDS)
def test_a_config_alone_with_impossible_numbers_names_the_key_and_the_value(tmp_path, change, words):
    folder = config_folder(tmp_path, {**LLAMA, **change})
    with pytest.raises(ModelImportError) as err:
        bounded(lambda: read_architecture(folder))
    assert err.value.kind is ImportErrorKind.MALFORMED and err.value.path == str(folder / "config.json")
    assert_one_clear_line(str(err.value), words)
    assert "Check config.json" in err.value.message  # what to do
    with pytest.raises(ModelImportError) as through_plan:  # what `modeldeck plan PATH` reads
        bounded(lambda: metadata_for_path(folder))
    assert str(through_plan.value) == str(err.value)


@pytest.mark.parametrize(("change", "words"), BAD_CONFIGS, ids=BAD_IDS)
def test_impossible_numbers_beside_weights_say_why_the_config_was_not_used(tmp_path, change, words):
    """Beside safetensors weights the model is still registered (its weights are exact), with a note naming the
    key; asked for its architecture, the same reason is the error, not 'does not state the number of layers'."""
    folder = config_folder(tmp_path, {**LLAMA, **change})
    save_file({"model.embed_tokens.weight": np.zeros((8, 4), np.float32)}, str(folder / "model.safetensors"))
    models, errors = bounded(lambda: scan_path(folder))
    assert errors == [] and len(models) == 1
    (note,) = [n for n in models[0].notes if n.startswith("config.json not used: ")]
    assert_one_clear_line(note, words)
    assert models[0].architecture["layers"] is None
    with pytest.raises(ModelImportError) as err:
        bounded(lambda: read_architecture(folder / "model.safetensors"))
    assert_one_clear_line(str(err.value), words)
    assert "config.json not used" in err.value.message and "Check config.json" in err.value.message


def test_good_configs_read_as_before(tmp_path):
    llama = read_architecture(config_folder(tmp_path, LLAMA, "llama")).architecture
    assert (llama["layers"], llama["heads"], llama["kv_heads"], llama["head_dim"]) == (32, 32, 8, 128)
    gemma = read_architecture(config_folder(tmp_path, GEMMA3, "gemma")).architecture
    # 8 heads × 256 = 2,048, not the hidden size 2,560: Gemma's heads are wider, and that is fine.
    assert (gemma["hidden_size"], gemma["heads"], gemma["kv_heads"], gemma["head_dim"]) == (2560, 8, 4, 256)
    assert (gemma["sliding_window"], gemma["sliding_window_pattern"]) == (1024, 6)
    deepseek = read_architecture(config_folder(tmp_path, DEEPSEEK_V3, "deepseek")).architecture
    assert (deepseek["heads"], deepseek["kv_heads"], deepseek["head_dim"]) == (128, 128, 192)  # 128 × 192 ≠ 7,168
    assert (deepseek["kv_lora_rank"], deepseek["qk_rope_head_dim"]) == (512, 64)
    assert (deepseek["experts"], deepseek["active_experts"], deepseek["shared_experts"]) == (256, 8, 1)
    for folder in ("llama", "gemma", "deepseek"):
        assert bounded(lambda folder=folder: metadata_for_path(tmp_path / folder)).estimation_architecture


def test_heads_that_do_not_divide_the_hidden_size_are_fine_with_an_explicit_head_dim(tmp_path):
    arch = read_architecture(config_folder(tmp_path, {**LLAMA, "num_attention_heads": 24, "num_key_value_heads": 8,
                                                      "head_dim": 128})).architecture
    assert (arch["hidden_size"], arch["heads"], arch["head_dim"]) == (4096, 24, 128)


def test_attention_free_and_dense_configs_are_no_contradiction(tmp_path):
    mamba = read_architecture(config_folder(tmp_path, {"model_type": "mamba", "num_hidden_layers": 64,
                                                       "hidden_size": 2560, "vocab_size": 50280}, "mamba"))
    assert mamba.architecture["heads"] is None and mamba.architecture["layers"] == 64
    dense = read_architecture(config_folder(tmp_path, {**LLAMA, "num_experts": 0, "num_experts_per_tok": 2}, "dense"))
    assert dense.architecture["experts"] is None and dense.architecture["active_experts"] == 2
    no_window = read_architecture(config_folder(tmp_path, {**LLAMA, "sliding_window": -1}, "window"))
    assert no_window.architecture["sliding_window"] is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.integers(-2, 20_000), hidden=st.integers(-2, 1 << 21), heads=st.integers(-2, 200_000),
       kv_heads=st.none() | st.integers(-2, 200_000), head_dim=st.none() | st.integers(0, 1 << 17),
       experts=st.none() | st.integers(0, 64), active=st.none() | st.integers(0, 64))
def test_any_config_reads_to_a_possible_shape_or_one_line_naming_a_key(tmp_path, layers, hidden, heads, kv_heads,
                                                                       head_dim, experts, active):
    config = {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
              "num_local_experts": experts, "num_experts_per_tok": active}
    folder = config_folder(tmp_path, config)
    try:
        arch = bounded(lambda: read_architecture(folder)).architecture
    except ModelImportError as err:
        message = str(err)
        assert "\n" not in message and len(message) < 600
        assert any(key in message for key in config if key != "model_type"), message
        return
    assert 1 <= arch["layers"] <= 10_000 and 1 <= arch["hidden_size"] <= 1 << 20
    if arch["heads"]:
        assert arch["kv_heads"] <= arch["heads"]
        width = arch["head_dim"] or arch["hidden_size"] / arch["heads"]
        assert width >= 1 and float(width).is_integer()
    if arch["experts"] and arch["active_experts"]:
        assert arch["active_experts"] <= arch["experts"]


# -------------------------------------------------------------------------------------------- GGUF


def write_gguf(path: Path, **numbers: int) -> Path:
    """A two-layer llama GGUF by gguf.GGUFWriter; `numbers` replace or add llama.* keys (a negative one as i32)."""
    w = gguf.GGUFWriter(path, "llama")
    base = {"block_count": 2, "embedding_length": 64, "attention.head_count": 4, "attention.head_count_kv": 2,
            "context_length": 2048, "feed_forward_length": 128}
    for key, value in {**base, **numbers}.items():
        (w.add_int32 if value < 0 else w.add_uint32)(f"llama.{key.replace('__', '.')}", value)
    w.add_token_list([f"<t{i}>" for i in range(16)])
    w.add_tensor("token_embd.weight", np.zeros((16, 64), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


BAD_GGUF: list[tuple[dict[str, int], tuple[str, ...]]] = [
    ({"attention.head_count_kv": 8}, ("llama.attention.head_count_kv (8)", "llama.attention.head_count (4)")),
    ({"expert_count": 4, "expert_used_count": 6}, ("llama.expert_used_count (6)", "llama.expert_count (4)")),
    ({"attention.head_count": 3, "attention.head_count_kv": 1},
     ("llama.embedding_length (64)", "llama.attention.head_count (3)", "llama.attention.key_length")),
    ({"block_count": -1}, ("llama.block_count is -1", "1 to 10,000")),
]


@pytest.mark.parametrize(("numbers", "words"), BAD_GGUF, ids=["kv-over-heads", "used-over-experts",
                                                              "heads-do-not-divide", "negative-layers"])
def test_a_gguf_header_with_impossible_numbers_names_the_key_and_the_value(tmp_path, numbers, words):
    path = write_gguf(tmp_path / "m.gguf", **numbers)
    with pytest.raises(ModelImportError) as err:
        bounded(lambda: read_gguf(path))
    assert err.value.kind is ImportErrorKind.MALFORMED and err.value.path == str(path)
    assert_one_clear_line(str(err.value), words)
    models, errors = bounded(lambda: scan_path(tmp_path))
    assert models == [] and [e.message for e in errors] == [err.value.message]


def test_a_gguf_whose_heads_do_not_divide_the_width_is_fine_with_a_key_length(tmp_path):
    arch = read_gguf(write_gguf(tmp_path / "m.gguf", **{"attention.head_count": 3, "attention.head_count_kv": 1,
                                                       "attention.key_length": 32})).architecture
    assert (arch["hidden_size"], arch["heads"], arch["kv_heads"], arch["head_dim"]) == (64, 3, 1, 32)
    good = read_gguf(write_gguf(tmp_path / "good.gguf")).architecture
    assert (good["layers"], good["heads"], good["kv_heads"], good["head_dim"]) == (2, 4, 2, 16)


# --------------------------------------------------------------------------------------------- CLI


def modeldeck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.parametrize(("change", "key"), [
    ({"num_hidden_layers": 1_000_000_000}, "num_hidden_layers is 1,000,000,000"),
    ({"num_key_value_heads": 64}, "num_key_value_heads (64) is more than num_attention_heads (32)"),
    ({"num_attention_heads": 3, "num_key_value_heads": 1}, "hidden_size (4,096) is not divisible by"),
], ids=["layers", "kv-heads", "head-width"])
def test_plan_path_prints_one_error_line_naming_the_key(tmp_path, change, key):
    folder = config_folder(tmp_path, {**LLAMA, **change})
    out = modeldeck("plan", str(folder), "--simulate", "rtx3060")
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("modeldeck: error: "), out.stderr
    assert key in lines[0] and "does not state the number of layers" not in lines[0]


def test_scan_prints_the_gguf_contradiction_as_the_skipped_files_reason(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", **{"attention.head_count_kv": 8})
    out = modeldeck("scan", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    skipped = [line for line in out.stderr.splitlines() if line.startswith("modeldeck: skipped ")]
    assert len(skipped) == 1 and str(path) in skipped[0]
    assert "llama.attention.head_count_kv (8) is more than llama.attention.head_count (4)" in skipped[0]
