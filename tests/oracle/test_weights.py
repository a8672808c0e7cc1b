"""Weights: ModelDeck's estimate from the architecture alone is byte-exact against llama.cpp's quantizer.

Every tiny model (tests/oracle/_models.py) is quantized by llama.cpp (``llama_model_quantize``) to every
preset it makes without an importance matrix; the estimate (``weight_bytes`` with an ``Architecture``
built from the numbers written, never from the file) must equal, to the byte:
- the quantized file's tensor bytes, read with gguf.GGUFReader, in total and per ggml type;
- ``llama_model_size`` of the loaded model; and llama.cpp's parameter count must equal ModelDeck's.
Presets left out (they need an importance matrix) are listed in ``SKIPPED_PRESETS``.
"""

from __future__ import annotations

import pytest

from app.core.estimation import weight_bytes
from tests.oracle._llama import PRESETS, SKIPPED_PRESETS
from tests.oracle._models import MODELS

#: Presets whose attn_qkv rule changed in llama.cpp (attn_qkv now takes attn_v's rules); Phi-3 only.
QKV_RULE_PRESETS = ("Q2_K", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_M")


def _estimate(name: str, preset: str) -> tuple[int, dict[str, int]]:
    # qkv_as_v: the fused attn_qkv rule of the llama.cpp under test (only Phi-3 has attn_qkv)
    w, by_type, _, approximate = weight_bytes(preset, architecture=MODELS[name].architecture(), qkv_as_v=True)
    assert not approximate
    return w, dict(by_type)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_weights_are_byte_exact(oracle, name, preset):
    measured = oracle.weights(name, preset)
    estimate, by_type = _estimate(name, preset)
    assert measured.model.size == measured.file_bytes, "llama_model_size disagrees with the file's tensors"
    assert by_type == measured.by_type, f"{name} {preset}: bytes per ggml type differ"
    assert estimate == measured.file_bytes == measured.model.size


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count_is_llama_cpps(oracle, name):
    assert MODELS[name].architecture().parameter_count() == oracle.weights(name, "F16").model.n_params


@pytest.mark.parametrize("preset", ["F16", "Q8_0", "Q6_K", "Q4_K_M"])
@pytest.mark.parametrize("name", ["llama", "gemma2", "mixtral"])
def test_model_buffers_in_the_log_hold_the_tensors(oracle, name, preset):
    """The model buffers llama.cpp reports (MiB, 2 decimals) agree with the exact tensor bytes. The CPU
    backend may copy some tensors (Q4_0, Q4_K, Q2_K … with AVX2) into a CPU_REPACK buffer; then the
    mapping leaves out those at its ends and mapping + copies hold at least every tensor."""
    measured = oracle.weights(name, preset)
    mapped = [b for b in measured.model.buffers if b.device == "CPU_Mapped"]
    repack = [b for b in measured.model.buffers if b.device == "CPU_REPACK"]
    assert len(mapped) == 1, measured.model.buffers
    size, m = measured.model.size, mapped[0]
    if not repack:
        assert m.covers(size, slack=64 * 1024)  # tensors are 32-byte aligned in the mapping
    else:
        assert m.bytes - m.resolution <= size + 64 * 1024
        assert m.bytes + sum(b.bytes + b.resolution for b in repack) + m.resolution >= size


def test_phi3_attn_qkv_rule_is_the_current_llama_cpp_one(oracle):
    """llama.cpp now quantizes a fused attn_qkv by attn_v's rules; ModelDeck's default keeps the older rule,
    which the published Phi-3 files were made with (tests/core/test_estimation.py checks those). Both are
    modelled; this shows which one the llama.cpp under test follows."""
    a = MODELS["phi3"].architecture()
    differs = 0
    for preset in QKV_RULE_PRESETS:
        measured = oracle.weights("phi3", preset).file_bytes
        published_rule = weight_bytes(preset, architecture=a)[0]
        assert weight_bytes(preset, architecture=a, qkv_as_v=True)[0] == measured
        differs += published_rule != measured
    assert differs == len(QKV_RULE_PRESETS)
    for preset in set(PRESETS) - set(QKV_RULE_PRESETS):  # the others agree under both rules
        assert weight_bytes(preset, architecture=a)[0] == weight_bytes(preset, architecture=a, qkv_as_v=True)[0]


def test_skipped_presets_need_an_importance_matrix(oracle, tmp_path):
    """IQ2_XXS (one of the skipped presets) is refused without an importance matrix, as llama-quantize does."""
    assert "IQ2_XXS" in SKIPPED_PRESETS and not set(SKIPPED_PRESETS) & set(PRESETS)
    with pytest.raises(RuntimeError, match="importance matrix|imatrix"):
        oracle.llama.quantize(oracle.source("llama"), tmp_path / "iq2.gguf", "IQ2_XXS")
