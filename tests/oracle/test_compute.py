"""Compute and output buffers: ModelDeck's estimate within a stated bound of llama.cpp's.

llama.cpp sizes its compute buffer by allocating the worst-case graph (a full micro-batch against the
whole cache), so the figure depends on its allocator; ``llm_compute_bytes`` models the largest working
set (logits, attention scores, FFN with the mask) and is checked here against the CPU backend's figure
printed with 4 decimals when a context is freed. The output buffer (f32 logits for one token per
sequence) is not a separate term of the estimate: the compute term is compared with compute + output.

Bounds (errors are estimate / llama.cpp - 1; ``python -m tests.oracle.report`` prints them all):
- tiny models, flash attention: -12% .. +20% (the 8-expert model's allocator reuses more than modelled);
- tiny models, no flash attention: -40% .. +5% (Gemma's soft-capped attention keeps more alive);
- published shapes (header-only files, nothing allocated): -25% .. +5%, and -5% .. +5% apart from one
  allocator effect (Phi-3-mini with flash attention at 4096 tokens: -23%, exact again at 8192).
"""

from __future__ import annotations

import pytest

from app.core.estimation import estimate_llm
from tests.oracle._models import MODELS, REAL_MODELS
from tests.oracle._oracle import KV_PRESET, output_bytes

TINY_CASES = [(256, 512), (512, 512), (1000, 512), (2048, 512), (2048, 128), (1000, 256)]  # (context, n_ubatch)
REAL_CASES = [(4096, 512), (8192, 512), (32768, 512), (8192, 2048)]
TINY_BOUNDS = {True: (-0.12, 0.20), False: (-0.40, 0.05)}
REAL_BOUNDS = (-0.25, 0.05)
REAL_TYPICAL = (-0.05, 0.05)
REAL_EXCEPTIONS = {("Phi-3-mini", True, 4096, 512)}


def compute_errors(oracle, name, flash, cases=TINY_CASES, real=False):
    """[(context, n_ubatch, estimate, llama.cpp compute, llama.cpp output, error)]."""
    m = (REAL_MODELS if real else MODELS)[name]
    settings = [{"n_ctx": c, "n_ubatch": u, "flash_attention": flash} for c, u in cases]
    measured = (oracle.real_contexts if real else oracle.contexts)(name, settings)
    rows = []
    for (n_ctx, ubatch), cm in zip(cases, measured, strict=True):
        est = estimate_llm(KV_PRESET, architecture=m.architecture(), context=n_ctx, batch=ubatch,
                           flash_attention=flash).compute_bytes
        compute = cm.compute_best.bytes
        output = cm.output.bytes if cm.output else 0
        rows.append((n_ctx, ubatch, est, compute, output, est / (compute + output) - 1))
    return rows


@pytest.mark.parametrize("flash", [True, False], ids=["fa", "nofa"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compute_within_bounds(oracle, name, flash):
    low, high = TINY_BOUNDS[flash]
    for n_ctx, ubatch, est, compute, output, err in compute_errors(oracle, name, flash):
        assert low <= err <= high, (f"{name} ctx {n_ctx} ubatch {ubatch}: estimate {est:,} B, llama.cpp "
                                    f"{compute:,} + {output:,} B ({err:+.1%})")


@pytest.mark.parametrize("flash", [True, False], ids=["fa", "nofa"])
@pytest.mark.parametrize("name", list(REAL_MODELS))
def test_compute_at_published_sizes(oracle, name, flash):
    for n_ctx, ubatch, est, compute, output, err in compute_errors(oracle, name, flash, REAL_CASES, real=True):
        low, high = REAL_BOUNDS if (name, flash, n_ctx, ubatch) in REAL_EXCEPTIONS else REAL_TYPICAL
        assert low <= err <= high, (f"{name} ctx {n_ctx} ubatch {ubatch}: estimate {est:,} B, llama.cpp "
                                    f"{compute:,} + {output:,} B ({err:+.1%})")


@pytest.mark.parametrize("name", ["llama", "gemma2", "mixtral"])
def test_output_buffer_is_one_row_of_logits(oracle, name):
    cm = oracle.context(name, 512)
    assert cm.output is not None and cm.output.covers(output_bytes(MODELS[name]))


@pytest.mark.parametrize("name", ["Llama-3.1-8B", "Gemma-2-9B"])
def test_output_buffer_at_published_sizes(oracle, name):
    cm = oracle.real_contexts(name, [{"n_ctx": 4096, "n_ubatch": 512, "flash_attention": True}])[0]
    assert cm.output is not None and cm.output.covers(output_bytes(REAL_MODELS[name]))
    assert cm.output.bytes > 0


def test_the_micro_batch_never_exceeds_the_context(oracle):
    """A 256-token context runs 256-token micro-batches even when asked for 512: the estimate caps it too."""
    a = MODELS["llama"].architecture()
    capped = estimate_llm(KV_PRESET, architecture=a, context=256, batch=512).compute_bytes
    assert capped == estimate_llm(KV_PRESET, architecture=a, context=256, batch=256).compute_bytes
    small, large = oracle.contexts("llama", [{"n_ctx": 256, "n_ubatch": 512}, {"n_ctx": 256, "n_ubatch": 256}])
    assert small.compute_best.bytes == large.compute_best.bytes
