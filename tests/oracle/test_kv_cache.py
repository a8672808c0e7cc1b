"""KV cache: ModelDeck's estimate equals llama.cpp's cache to the byte.

For every tiny model, context (256, 512, 1000, 2048: 1000 is padded to 1024) and K/V type (f16 with
and without flash attention; q8_0 and q4_0 need flash attention) three things must agree exactly:
- llama.cpp's cells: ``llama_n_ctx`` and the cell and layer counts of each cache in its log
  (``llama_kv_cache: size = … (N cells, L layers, …)``), against llama.cpp's rules as
  tests/oracle/_oracle.py states them (padding to 256, Gemma's two caches);
- the bytes those cells hold (cells × layers × ggml_row_size of K and of V) against ModelDeck's estimate
  (``estimate_llm`` with the preset, context, KV type and batch), so a single row more or less fails;
- the KV buffer llama.cpp reports (MiB with 2 decimals, per cache) against those bytes, at that resolution.
"""

from __future__ import annotations

import pytest

from app.core.estimation import estimate_llm
from tests.oracle._models import MODELS
from tests.oracle._oracle import CONTEXTS, KV_MODES, KV_PRESET, LLAMA_CPP_SWA_PATTERN, cache_bytes, expected_caches, pad

SWA_MODELS = [n for n, m in MODELS.items() if m.arch in LLAMA_CPP_SWA_PATTERN]


def _check(oracle, name, n_ctx, kv, flash, ubatch=512, swa_full=False):
    m = MODELS[name]
    measured = oracle.context(name, n_ctx, n_ubatch=ubatch, flash_attention=flash, type_k=kv, type_v=kv,
                              swa_full=swa_full)
    rules = expected_caches(m, n_ctx, ubatch, swa_full=swa_full)
    assert measured.n_ctx == pad(n_ctx), "llama_n_ctx: the context is padded to 256"
    assert [(c.cells, c.layers) for c in measured.kv_caches] == rules, "cells per cache differ from llama.cpp's rules"
    assert all((c.type_k, c.type_v) == (kv, kv) for c in measured.kv_caches)
    exact = cache_bytes(m, rules, kv, kv)
    est = estimate_llm(KV_PRESET, architecture=m.architecture(), context=n_ctx, kv_dtype=kv, batch=ubatch,
                       flash_attention=flash, swa_full=swa_full)
    assert est.kv_cache_bytes == exact, f"estimate {est.kv_cache_bytes:,} B, llama.cpp's cells hold {exact:,} B"
    assert measured.kv is not None and measured.kv.covers(exact), (
        f"llama.cpp reports {measured.kv.bytes:,} B (± {measured.kv.resolution:,}), the cells hold {exact:,} B")


@pytest.mark.parametrize(("kv", "flash"), KV_MODES, ids=[f"{k}-{'fa' if f else 'nofa'}" for k, f in KV_MODES])
@pytest.mark.parametrize("n_ctx", CONTEXTS)
@pytest.mark.parametrize("name", list(MODELS))
def test_kv_cache_is_byte_exact(oracle, name, n_ctx, kv, flash):
    if kv != "f16" and MODELS[name].head_dim % 32:
        pytest.skip("quantized K/V needs head_dim divisible by 32")
    _check(oracle, name, n_ctx, kv, flash)


@pytest.mark.parametrize("ubatch", [128, 256])
@pytest.mark.parametrize("n_ctx", [1000, 2048])
@pytest.mark.parametrize("name", SWA_MODELS)
def test_sliding_window_cache_follows_the_micro_batch(oracle, name, n_ctx, ubatch):
    """The sliding-window layers cache the window plus one micro-batch (n_ubatch), padded to 256."""
    _check(oracle, name, n_ctx, "f16", True, ubatch=ubatch)


@pytest.mark.parametrize("n_ctx", [1000, 2048])
@pytest.mark.parametrize("name", SWA_MODELS)
def test_swa_full_caches_the_whole_context_in_every_layer(oracle, name, n_ctx):
    """llama.cpp's library default (and so llama-cpp-python's Llama unless told swa_full=False): every layer
    caches the whole context. ModelDeck models it with swa_full=True; without it, the window."""
    _check(oracle, name, n_ctx, "f16", True, swa_full=True)
    windowed = estimate_llm(KV_PRESET, architecture=MODELS[name].architecture(), context=n_ctx)
    full = estimate_llm(KV_PRESET, architecture=MODELS[name].architecture(), context=n_ctx, swa_full=True)
    assert windowed.kv_cache_bytes < full.kv_cache_bytes


def test_a_window_llama_cpp_does_not_use_is_not_estimated():
    """Phi-3 names a sliding window (written into its file, as convert_hf_to_gguf does); llama.cpp caches the
    whole context anyway, and so must the estimate (checked against llama.cpp by the tests above)."""
    m = MODELS["phi3"]
    assert m.sliding_window and m.sliding_window < 2048
    est = estimate_llm(KV_PRESET, architecture=m.architecture(), context=2048)
    assert est.kv_cache_bytes == cache_bytes(m, [(2048, m.layers)], "f16", "f16")


def test_quantized_v_cache_needs_flash_attention(oracle):
    with pytest.raises(RuntimeError, match="requires flash_attn"):
        oracle.context("llama", 512, flash_attention=False, type_k="q8_0", type_v="q8_0")
