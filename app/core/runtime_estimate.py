"""A language model's memory under one runtime's settings and placement rules.

:func:`estimate_llm` (app.core.estimation) gives the terms llama.cpp allocates for one sequence with the
whole model on one device. This module applies a :class:`RuntimeProfile` on top of the same functions:

- llama.cpp and Ollama keep the token embedding matrix in RAM (the input layer is always on the CPU;
  llama.cpp's log calls it ``CPU_Mapped model buffer``), with the input and output buffers of a batch
  (``CUDA_Host compute buffer``, ``CPU output buffer``). Tied embeddings are copied: the output layer on
  the GPU keeps its own copy.
- Ollama's ``num_ctx`` is per parallel request (its runner's context is num_ctx × parallel); llama.cpp's
  ``--ctx-size`` is shared by its slots, which each keep their own sliding window.
- ``--no-kv-offload`` keeps the KV cache in RAM; separate K and V types; flash attention on or off.
- The runtime context per device: CUDA and ROCm 457 MiB (Ollama's measured minimum, discover/gpu.go),
  Metal 512 MiB (Ollama's reserve on Apple GPUs); on Apple's unified memory there is no separate RAM:
  what llama.cpp keeps "on the CPU" is in the same memory, so it counts in the device's total.
- transformers (PyTorch) holds every weight on the GPU, a KV cache per sequence, and activations for
  the whole prompt at once (its prefill), with logits for the last token only.
- ``offload_graph_bytes``: with layers left in RAM, llama.cpp computes large batches on the GPU by
  copying those layers' weights there, the output matrix included, so the GPU's compute buffer grows by
  about the output matrix (Ollama's ``graphPartialOffload`` adds the same term).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from app.core.estimation import (
    Architecture,
    EstimateTerm,
    MemoryEstimate,
    QuantSpec,
    embedding_bytes,
    estimate_llm,
    kv_cache_bytes,
    resolve_quantization,
)
from app.core.runtime_profile import RuntimeProfile
from app.core.units import MiB, format_gib

__all__ = ["estimate_llm_run", "device_overhead"]

#: Runtime context per GPU backend (bytes, explanation).
_BACKEND_OVERHEAD = {
    "cuda": (457 * MiB, "CUDA context and runtime (457 MiB per GPU, Ollama's measured minimum)"),
    "rocm": (457 * MiB, "ROCm context and runtime (457 MiB per GPU, Ollama's ROCm minimum)"),
    "vulkan": (457 * MiB, "Vulkan context and runtime (457 MiB per GPU, taken as CUDA's)"),
    "metal": (512 * MiB, "Metal runtime reserve (512 MiB, Ollama's figure for Apple GPUs)"),
}
_CPU_FOOTPRINT = (150 * MiB, "runtime footprint on the CPU (150 MiB, gguf-parser's platform figure)")


#: CTranslate2 on CUDA holds more than the CUDA context: its caching allocator keeps freed blocks, and
#: cuBLAS its workspace. faster-whisper's benchmark (large-v2, fp16, one window, beam 5: 4,525 MiB on the
#: device) less the weights and the modelled working memory leaves 1.21 GiB, which also covers what the
#: benchmark's desktop GPU showed as used before the run.
_CT2_CUDA = (1239 * MiB, "CTranslate2's CUDA context, cuBLAS workspace and cached blocks (1.21 GiB, measured "
                         "with faster-whisper's benchmark)")
#: In RAM, a Python process with PyTorch (or CTranslate2 with its math libraries) holds its libraries and
#: allocator arenas: faster-whisper's CPU benchmark (small, fp32) grew RAM by 2,335 MiB with openai-whisper
#: and 2,257 MiB with CTranslate2, of which the weights are 922 MiB and the working memory about 100 MiB.
_PYTHON_CPU = (1300 * MiB, "the Python runtime's libraries and allocator in RAM (1.27 GiB, measured with "
                           "faster-whisper's CPU benchmark)")


def device_overhead(profile: RuntimeProfile, device_kind: str) -> tuple[int, str]:
    """The runtime's own context on the target device."""
    kind = profile.defaults.kind
    if device_kind == "cpu" or profile.device_backend == "cpu":
        return _PYTHON_CPU if kind in ("python", "ctranslate2") else _CPU_FOOTPRINT
    if kind == "ctranslate2" and profile.device_backend == "cuda":
        return _CT2_CUDA
    return _BACKEND_OVERHEAD[profile.device_backend]


def estimate_llm_run(
    quant: QuantSpec | str,
    profile: RuntimeProfile,
    *,
    parameters: int | None = None,
    architecture: Architecture | None = None,
    context: int = 0,
    device_kind: str = "gpu",
    native_dtype: str | None = None,
) -> MemoryEstimate:
    """What a language model holds under ``profile`` (its runtime filled in), on ``device_kind``."""
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    d = profile.defaults
    if d.kind == "python":
        return _python_run(q, profile, parameters, architecture, context, device_kind, native_dtype)
    seqs = profile.sequences
    total_ctx = context * seqs if d.context_per_sequence else context
    ub = profile.micro_batch
    base = estimate_llm(q, parameters=parameters, architecture=architecture, context=total_ctx,
                        kv_dtype=profile.k_type, batch=ub, flash_attention=profile.flash, device_kind=device_kind,
                        native_dtype=native_dtype)
    overhead = EstimateTerm(*device_overhead(profile, device_kind))
    runtime = profile.describe(device_kind)
    a = architecture
    if a is None:
        return replace(base, overhead=overhead, runtime=runtime)
    # Each term once, then one MemoryEstimate (replace() per term dominated the cost of a cold plan).
    weights, weights_text = base.weights.bytes, base.weights.explanation
    kv, kv_text = base.kv_cache.bytes, base.kv_cache.explanation
    notes = list(base.notes)
    if total_ctx > 0 and (profile.v_type != profile.k_type or seqs > 1):
        kv, kv_text = kv_cache_bytes(a, total_ctx, profile.k_type, v_dtype=profile.v_type, pad_to=256, batch=ub,
                                     window_sequences=seqs)
        if d.context_per_sequence and seqs > 1:
            kv_text = f"{seqs} sequences × {context} tokens: {kv_text}"
    on_gpu = device_kind == "gpu" and profile.device_backend != "cpu"
    host_parts: list[tuple[int, str]] = []
    graph = 0
    if on_gpu and d.embeddings_on_cpu:
        emb = embedding_bytes(q, a, native_dtype)
        if emb:
            keep_copy = a.tie_word_embeddings  # the output layer on the GPU has its own copy
            if not keep_copy:
                weights -= emb
                weights_text += f"; without the {format_gib(emb, 2)} token embeddings, kept in RAM"
            host_parts.append((emb, f"token embeddings {format_gib(emb, 2)} ({d.label} keeps the input layer "
                                    "on the CPU" + ("; tied, so the GPU's output layer has a copy" if keep_copy
                                                    else "") + ")"))
        if total_ctx > 0:
            io = 4 * ub * a.hidden_size + 4 * (a.vocab_size or 32000) * seqs
            host_parts.append((io, f"input and output buffers {format_gib(io, 2)}"))
        graph = _output_bytes(q, a, native_dtype)
    if on_gpu and not profile.kv_offload and kv:
        host_parts.append((kv, f"KV cache {format_gib(kv, 2)} (--no-kv-offload)"))
        kv, kv_text = 0, f"KV cache kept in RAM (--no-kv-offload): {kv_text}"
    host = base.host
    if host_parts:
        total = sum(n for n, _ in host_parts)
        text = "; ".join(t for _, t in host_parts)
        if profile.device_backend == "metal":  # one memory: what llama.cpp keeps "on the CPU" counts on the device
            weights += total
            weights_text += f"; unified memory also holds the {text}"
            notes.append("Apple unified memory: the GPU's memory is the RAM, so RAM-side buffers count here")
        else:
            host = EstimateTerm(total, text)
    return replace(base, weights=EstimateTerm(weights, weights_text), kv_cache=EstimateTerm(kv, kv_text),
                   overhead=overhead, host=host, runtime=runtime, offload_graph_bytes=graph, notes=tuple(notes))


@lru_cache(maxsize=1024)
def _output_bytes(q: QuantSpec, a: Architecture, native_dtype: str | None) -> int:
    """The output matrix's bytes (the token embeddings' when tied): what a partial offload copies per batch."""
    if not a.vocab_size:
        return 0
    if a.tie_word_embeddings:
        return embedding_bytes(q, a, native_dtype)
    untied = replace(a, tie_word_embeddings=True)  # token_embd then takes the output layer's type
    return embedding_bytes(q, untied, native_dtype)


def _python_run(q: QuantSpec, profile: RuntimeProfile, parameters: int | None, a: Architecture | None,
                context: int, device_kind: str, native_dtype: str | None) -> MemoryEstimate:
    """transformers: weights on the device, a 16-bit KV cache per sequence, prefill activations."""
    seqs = profile.sequences
    base = estimate_llm(q, parameters=parameters, architecture=a, context=context, kv_dtype="f16",
                        batch=max(1, context), flash_attention=True, device_kind=device_kind, native_dtype=native_dtype)
    est = replace(base, overhead=EstimateTerm(*device_overhead(profile, device_kind)),
                  runtime=profile.describe(device_kind))
    if a is None or context <= 0:
        return est
    kv, kv_text = kv_cache_bytes(a, context, "f16", sequences=seqs, swa_full=False)
    if seqs > 1:
        kv_text = f"{seqs} sequences: {kv_text}"
    e = a.hidden_size
    moe = a.n_experts > 1
    ff = (a.expert_intermediate_size or a.intermediate_size or 4 * e) if moe else (a.intermediate_size or 4 * e)
    active = (a.active_experts or 2) if moe else 1
    tokens = context * seqs
    act = 2 * tokens * (2 * e + active * (3 if a.mlp_gated else 2) * ff)
    logits = 4 * seqs * (a.vocab_size or 32000)
    if not profile.flash:
        act = max(act, 2 * seqs * a.heads * context * context)
    comp = act + logits
    text = (f"prefill activations: {tokens} tokens × ({2} × {e} + {active} × {ff}-wide FFN) × 2 B, "
            f"and f32 logits for the last token" + ("" if profile.flash else "; attention scores (eager attention)"))
    return replace(est, kv_cache=EstimateTerm(kv, kv_text), compute=EstimateTerm(comp, text))
