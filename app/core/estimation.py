"""Memory estimation: pure functions, bytes in and bytes out, each term with a one-line explanation.

Where each number comes from:
- GGML block sizes: ggml's type traits (the same table the `gguf` package ships as
  ``GGML_QUANT_SIZES``; a test keeps the two equal). Kept here so estimating does not pay for
  importing `gguf` (about 130 ms).
- GGUF presets (Q4_K_M, …) are mixtures: the per-tensor rules follow llama.cpp's
  ``llama_tensor_get_type`` (src/llama-quant.cpp), modelled per tensor group from the architecture.
- KV cache: 2 × layers × context × KV heads × head dim × bytes per element, with sliding-window
  layers caching only their window and MLA caching its compressed latent.
- LLM compute buffer: Ollama's graph-size formula for llama-like models (fs/ggml/ggml.go,
  ``GraphSize``); with flash attention the attention scores are not materialised and the output
  logits dominate: 4 × batch × (hidden + vocab) bytes; the FFN's working set (MoE experts) where larger.
- Weights, KV cache and compute are checked against llama.cpp itself by tests/oracle
  (``python -m tests.oracle.report`` prints the comparison).
- Per-GPU runtime overhead: 457 MiB, Ollama's CUDA minimum (discover/gpu.go ``CudaMinimumMemory``).

What a runtime's settings change (app.core.runtime_estimate) and models made of parts — diffusion,
speech, staged TTS (app.core.pipelines) — build on these functions.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from functools import cache, lru_cache
from typing import Any

from app.core.units import MiB, format_gib

__all__ = [
    "Architecture",
    "EstimateTerm",
    "MemoryEstimate",
    "QuantSpec",
    "UnknownQuantizationError",
    "ARCHITECTURE_LIMITS",
    "MAX_PARAMETERS",
    "GGML_TYPES",
    "KV_TYPES",
    "resolve_quantization",
    "quantization_names",
    "weight_bytes",
    "embedding_bytes",
    "ComponentEstimate",
    "PhaseEstimate",
    "kv_cache_bytes",
    "llm_compute_bytes",
    "runtime_overhead_bytes",
    "estimate_llm",
    "estimate_embedding",
]

# --------------------------------------------------------------------------------------------
# Storage types
# --------------------------------------------------------------------------------------------

#: ggml type -> (elements per block, bytes per block).
GGML_TYPES: dict[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "F64": (1, 8),
    "I8": (1, 1), "I16": (1, 2), "I32": (1, 4), "I64": (1, 8),
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
    "Q8_0": (32, 34), "Q8_1": (32, 40),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176),
    "Q6_K": (256, 210), "Q8_K": (256, 292),
    "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74), "IQ2_S": (256, 82),
    "IQ3_XXS": (256, 98), "IQ3_S": (256, 110),
    "IQ1_S": (256, 50), "IQ1_M": (256, 56),
    "IQ4_NL": (32, 18), "IQ4_XS": (256, 136),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66),
    "MXFP4": (32, 17),
}

#: KV-cache element types llama.cpp accepts for --cache-type-k/-v, as (block, bytes).
KV_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
    "iq4_nl": (32, 18),
}


def _row_bytes(ggml_type: str, ncols: int) -> int:
    block, size = GGML_TYPES[ggml_type]
    return (ncols // block) * size


# A k-quant needs rows whose length is a multiple of 256; llama.cpp falls back otherwise
# (``tensor_type_fallback`` in src/llama-quant.cpp: Q2_K and Q3_K to Q4_0, which older versions
# labelled IQ4_NL, the same 18 bytes per 32 weights).
_FALLBACK = {
    "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL",
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "Q2_K": "Q4_0", "Q3_K": "Q4_0", "IQ4_XS": "IQ4_NL",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
}


def _compatible(ggml_type: str, ncols: int) -> str:
    if ncols % GGML_TYPES[ggml_type][0] == 0:
        return ggml_type
    fb = _FALLBACK.get(ggml_type, "F16")
    return fb if ncols % GGML_TYPES[fb][0] == 0 else "F16"


# --------------------------------------------------------------------------------------------
# Quantization names
# --------------------------------------------------------------------------------------------


class UnknownQuantizationError(ValueError):
    """A quantization name ModelDeck does not know; the message lists the ones it does."""


@dataclass(frozen=True, slots=True)
class QuantSpec:
    """How a quantization level stores weights.

    ``kind``: "float" (every weight at ``bits``), "linear" (linear layers quantized with per-block
    scales, embeddings and output head kept at 16 bits, as bitsandbytes/GPTQ/AWQ do), "gguf"
    (a llama.cpp file-type preset, modelled per tensor), or "ggml" (one ggml type for every matrix).
    """

    name: str
    kind: str
    #: Effective bits per weight of the quantized tensors, scales included.
    bits: float
    description: str
    runtime: str
    #: The preset's base ggml type (gguf/ggml kinds).
    ggml_type: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("gguf", "ggml")


def _q(name: str, kind: str, bits: float, description: str, runtime: str, ggml: str | None = None) -> QuantSpec:
    return QuantSpec(name, kind, bits, description, runtime, ggml)


# bitsandbytes 4-bit: one fp32 absmax per block of 64 (+0.5 bit); with double quantization the
# absmax is 8-bit with an fp32 second-level scale per 256 blocks (+0.127 bit). bitsandbytes docs.
# GPTQ/AWQ: fp16 scale and 4-bit zero per group of 128 (+0.156 bit). LLM.int8: fp32 scale per row.
_BASE_LEVELS: tuple[QuantSpec, ...] = (
    _q("fp32", "float", 32, "full precision (FP32)", "transformers"),
    _q("fp16", "float", 16, "half precision (FP16)", "transformers"),
    _q("bf16", "float", 16, "brain float 16 (BF16)", "transformers"),
    _q("fp8", "float", 8, "8-bit float (FP8 E4M3) weights", "transformers"),
    _q("int8", "linear", 8, "8-bit bitsandbytes (LLM.int8), 16-bit embeddings", "transformers"),
    _q("nf4", "linear", 4 + 32 / 64, "4-bit NormalFloat (bitsandbytes), absmax per 64 weights", "transformers"),
    _q("nf4-dq", "linear", 4 + 8 / 64 + 32 / (64 * 256), "4-bit NormalFloat with double quantization",
       "transformers"),
    _q("fp4", "linear", 4 + 32 / 64, "4-bit float (bitsandbytes), absmax per 64 weights", "transformers"),
    _q("int4", "linear", 4 + 32 / 64, "4-bit (bitsandbytes NF4)", "transformers"),
    _q("gptq-int4", "linear", 4 + 16 / 128 + 4 / 128, "GPTQ 4-bit, group size 128", "transformers"),
    _q("awq-int4", "linear", 4 + 16 / 128 + 4 / 128, "AWQ 4-bit, group size 128", "transformers"),
    _q("int2", "linear", 2 + 32 / 64, "2-bit with fp16 scale and zero per 64 weights (HQQ-style)", "transformers"),
)

# llama.cpp file types -> base ggml type (llama_model_quantize_impl).
_GGUF_PRESETS: dict[str, str] = {
    "F32": "F32", "F16": "F16", "BF16": "BF16",
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
    "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "IQ2_S": "IQ2_XS",
    "IQ2_M": "IQ2_S", "IQ3_XXS": "IQ3_XXS", "IQ3_XS": "IQ3_S", "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S",
    "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS", "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "MXFP4_MOE": "MXFP4",
}
# llama-quantize accepts these short names for the _M presets.
_GGUF_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "MXFP4": "MXFP4_MOE"}

_SEED_ALIASES = {"none": "fp32", "float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                 "8bit": "int8", "4bit": "int4", "2bit": "int2", "gptq": "gptq-int4", "awq": "awq-int4",
                 "bnb-nf4": "nf4", "bnb-int8": "int8", "fp8_e4m3": "fp8"}


def _gguf_spec(preset: str) -> QuantSpec:
    base = _GGUF_PRESETS[preset]
    block, size = GGML_TYPES[base]
    return QuantSpec(preset, "gguf", size * 8 / block, f"GGUF {preset} (llama.cpp preset, base {base})",
                     "llama.cpp", base)


@cache
def _quant_table() -> dict[str, QuantSpec]:
    """Base levels by lower-case name, GGUF presets by upper-case name (so ``bf16`` is the
    transformers level and ``F16``/``gguf:BF16`` the llama.cpp presets)."""
    table: dict[str, QuantSpec] = {q.name: q for q in _BASE_LEVELS}
    for preset in _GGUF_PRESETS:
        table[preset] = _gguf_spec(preset)
    return table


def quantization_names() -> list[str]:
    """Every canonical name ``resolve_quantization`` accepts."""
    return list(_quant_table())


@lru_cache(maxsize=512)
def resolve_quantization(name: str) -> QuantSpec:
    """A quantization by name, case-insensitively: ``fp16``, ``int4``, ``4bit``, ``Q4_K_M``, ``IQ4_XS`` …

    Where a base level and a GGUF preset share a name (``bf16``, ``fp32``/``F32``), the base level
    wins; prefix ``gguf:`` for the preset.
    """
    key = str(name).strip().replace(" ", "")
    table = _quant_table()
    lower = key.lower()
    if lower.startswith("gguf:"):
        key = key[5:]
    else:
        lower = _SEED_ALIASES.get(lower, lower)
        if lower in table:
            return table[lower]
    upper = key.upper()
    upper = _GGUF_ALIASES.get(upper, upper)
    if upper in _GGUF_PRESETS:
        return table[upper]
    if upper in GGML_TYPES:  # a bare ggml type such as Q6_K or IQ4_NL: every matrix in that type
        block, size = GGML_TYPES[upper]
        return QuantSpec(upper, "ggml", size * 8 / block, f"every matrix in {upper}", "llama.cpp", upper)
    raise UnknownQuantizationError(
        f"unknown quantization {name!r}; use one of: fp32 fp16 bf16 fp8 int8 int4 nf4 int2, the seed's "
        "none 8bit 4bit 2bit, or a GGUF type such as Q4_K_M, Q8_0, IQ4_XS, F16"
    )


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------

#: Physical ranges of architecture numbers. Every limit is far above any published model (the
#: largest figures known, in brackets) and low enough that nonsense from a corrupt header or a
#: typo (``--layers 1e12``) is refused with a clear ValueError instead of being estimated.
#: Estimation is O(1) in every one of them; the limits are about refusing nonsense, not time.
#: app.core.importers keeps the same table (it may not import this module); a test keeps them equal.
ARCHITECTURE_LIMITS: dict[str, int] = {
    "layers": 10_000,  # [126: Llama 3.1 405B]
    "hidden_size": 1 << 20,  # 1,048,576 [18,432: Nemotron-4 340B, PaLM]
    "intermediate_size": 1 << 22,  # 4,194,304 [73,728: Nemotron-4 340B]
    "expert_intermediate_size": 1 << 22,
    "heads": 100_000,  # [128: DeepSeek-V3, Llama 3.1 405B]
    "kv_heads": 100_000,
    "head_dim": 1 << 16,  # 65,536 [576: DeepSeek MLA key]
    "vocab_size": 10_000_000,  # [262,144: Gemma 3]
    "max_context": 1 << 30,  # 1,073,741,824 tokens [10,485,760: Llama 4 Scout]
    "sliding_window": 1 << 30,
    "sliding_window_pattern": 10_000,  # at most one per layer
    "experts": 1 << 20,  # [384: Kimi K2; 1,048,576 in the PEER paper]
    "active_experts": 1 << 20,
    "kv_lora_rank": 1 << 16,  # [512: DeepSeek-V3]
    "qk_rope_head_dim": 1 << 16,  # [64: DeepSeek-V3]
}
#: Parameters: 10^15, 500 times the largest published model (~2 × 10^12).
MAX_PARAMETERS = 10**15
#: Context, batch and sequences requested of an estimate share the context limit.
MAX_TOKENS = ARCHITECTURE_LIMITS["max_context"]
_REQUIRED = ("layers", "hidden_size", "heads")


def _check_count(name: str, value: Any, limit: int, *, what: str = "") -> int:
    """``value`` as a whole number in 1..limit, or a ValueError that names it and the range."""
    if isinstance(value, bool):
        raise ValueError(f"{what or name} must be a whole number, not {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{what or name} must be a whole number, not {_brief(value)}") from None
    if not 1 <= n <= limit:
        raise ValueError(f"{what or name} is {_brief(n)}: it must be between 1 and {limit:,}")
    return n


def _check_parameters(parameters: Any) -> Any:
    """A parameter count no larger than MAX_PARAMETERS (unchanged), or a clear ValueError."""
    if parameters is not None and not isinstance(parameters, bool) and parameters > MAX_PARAMETERS:
        raise ValueError(f"a parameter count of {_brief(parameters)} is more than any model has "
                         f"(limit {MAX_PARAMETERS:,}); check the number")
    return parameters


def _check_tokens(name: str, value: Any, limit: int = MAX_TOKENS) -> Any:
    """A context length, batch or count no larger than ``limit`` (unchanged), or a clear ValueError."""
    if value is not None and not isinstance(value, bool) and value > limit:
        raise ValueError(f"a {name} of {_brief(value)} is out of range (limit {limit:,})")
    return value


def _brief(value: Any, width: int = 60) -> str:
    """A short, always-printable form of a number or value (huge ints cannot be printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"a {value.bit_length():,}-bit number"
    try:
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    except ValueError:
        text = f"a {type(value).__name__}"
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True, slots=True)
class Architecture:
    """What estimation needs to know about a transformer; None where unknown."""

    layers: int
    hidden_size: int
    heads: int
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    intermediate_size: int | None = None
    family: str | None = None
    max_context: int | None = None
    sliding_window: int | None = None
    #: Every Nth layer is global (Gemma 2: 2, Gemma 3: 6); None with a window means every layer slides.
    sliding_window_pattern: int | None = None
    experts: int | None = None
    active_experts: int | None = None
    expert_intermediate_size: int | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    #: Multi-head latent attention (DeepSeek V2/V3): the cache holds this latent plus the RoPE key.
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    #: Gate, up and down projections (Llama, Mistral, Qwen); False: up and down only (GPT-2, phi-2, Falcon).
    mlp_gated: bool = True
    #: Experts every token passes through besides the routed ones (DeepSeek, Qwen2-MoE), each as wide as
    #: a routed expert.
    shared_experts: int | None = None

    def __post_init__(self) -> None:
        """Refuse numbers outside ARCHITECTURE_LIMITS: a ValueError naming the field and its range."""
        limits = {**ARCHITECTURE_LIMITS, "shared_experts": ARCHITECTURE_LIMITS["experts"]}
        for name, limit in limits.items():
            value = getattr(self, name)
            if value is None and name not in _REQUIRED:
                continue
            n = _check_count(name, value, limit, what=f"architecture {name}")
            if n != value or type(value) is not int:
                object.__setattr__(self, name, n)  # numpy ints and the like become ints

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def n_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.heads

    @property
    def gqa(self) -> int:
        return self.heads // self.n_kv_heads

    @property
    def fused_qkv(self) -> bool:
        """Phi-3 stores Q, K and V as one tensor (attn_qkv), which llama.cpp quantizes by its own rule."""
        return (self.family or "") in ("phi3",)

    @property
    def n_experts(self) -> int:
        return self.experts or 0

    def parameter_count(self) -> int:
        """Parameters of the tensors modelled here (embeddings, attention, FFN/experts, norms)."""
        return sum(n * rows * cols for _, rows, cols, n, _ in _tensor_groups(self))

    def with_parameters(self, parameters: int) -> Architecture:
        """This architecture with the FFN width solved so the modelled count equals ``parameters``
        (for when a config gives the layer shapes but not ``intermediate_size``)."""
        if self.intermediate_size or parameters <= 0:
            return self
        parameters = _check_parameters(parameters)
        probe = replace(self, intermediate_size=1)
        matrices = 3 if self.mlp_gated else 2
        per_unit = matrices * self.layers * self.hidden_size * (max(1, self.n_experts) + (self.shared_experts or 0))
        ff = (parameters - probe.parameter_count() + per_unit) / per_unit
        # Published FFN widths are multiples of 256 (which k-quants also need).
        width = max(256, int(round(ff / 256)) * 256)
        limit = ARCHITECTURE_LIMITS["intermediate_size"]
        if width > limit:
            raise ValueError(f"{parameters:,} parameters do not fit this architecture: they would need an FFN "
                             f"width of {width:,} (limit {limit:,}); check the parameter count and the layer shapes")
        return replace(self, intermediate_size=width)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Architecture | None:
        """From a catalog/config-like mapping; None when the essentials are missing."""
        needed = ("layers", "hidden_size", "heads")
        if any(not data.get(k) for k in needed):
            return None
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and v is not None}
        return cls(**kwargs)


def _norms_per_layer(a: Architecture) -> int:
    """Hidden-wide norm vectors per layer: attn_norm and ffn_norm, plus Gemma 2/3's post_attention_norm
    and post_ffw_norm (llama.cpp's LLM_ARCH_GEMMA2/GEMMA3 tensor lists)."""
    return 4 if (a.family or "").startswith(("gemma2", "gemma3")) else 2


def _has_qk_norm(a: Architecture) -> bool:
    """Qwen3 and Gemma 3 normalise each head's Q and K: two head_dim-wide vectors per layer."""
    return (a.family or "").startswith(("qwen3", "gemma3"))


def _tensor_groups(a: Architecture) -> list[tuple[str, int, int, int, bool]]:
    """(group, rows, ncols, count, quantizable) for each kind of tensor in a llama-like model.

    ``ncols`` is ggml's ne[0], the row length the block size must divide.
    """
    h, hd = a.hidden_size, a.n_head_dim
    q_dim, kv_dim = a.heads * hd, a.n_kv_heads * hd
    L = a.layers
    vocab = a.vocab_size or 0
    groups: list[tuple[str, int, int, int, bool]] = []
    if vocab:
        groups.append(("token_embd", vocab, h, 1, True))
        if not a.tie_word_embeddings:
            groups.append(("output", vocab, h, 1, True))
    if a.fused_qkv:
        groups.append(("attn_qkv", q_dim + 2 * kv_dim, h, L, True))
    else:
        groups += [("attn_q", q_dim, h, L, True), ("attn_k", kv_dim, h, L, True), ("attn_v", kv_dim, h, L, True)]
    groups.append(("attn_output", h, q_dim, L, True))
    if a.n_experts > 1:
        ff = a.expert_intermediate_size or a.intermediate_size or 4 * h
        e = a.n_experts
        if a.mlp_gated:
            groups.append(("ffn_gate_exps", ff * e, h, L, True))
        groups += [
            ("ffn_up_exps", ff * e, h, L, True),
            ("ffn_down_exps", h * e, ff, L, True),
            ("ffn_gate_inp", e, h, L, False),  # the router stays F32
        ]
        if a.shared_experts:
            sh = ff * a.shared_experts
            if a.mlp_gated:
                groups.append(("ffn_gate_shexp", sh, h, L, True))
            groups += [("ffn_up_shexp", sh, h, L, True), ("ffn_down_shexp", h, sh, L, True)]
    else:
        ff = a.intermediate_size or 4 * h
        if a.mlp_gated:
            groups.append(("ffn_gate", ff, h, L, True))
        groups += [("ffn_up", ff, h, L, True), ("ffn_down", h, ff, L, True)]
        if not a.mlp_gated:  # GPT-2-style MLPs carry biases on both projections
            groups.append(("ffn_bias", 1, ff + h, L, False))
    # 1-D tensors stay F32: two norms per layer (four in Gemma 2 and 3, which add post-attention and
    # post-FFN norms) and the final norm, plus q/k/v biases where present.
    groups.append(("norms", 1, h, _norms_per_layer(a) * L + 1, False))
    if _has_qk_norm(a):  # Qwen3, Gemma 3: per-head RMS norms on Q and K (attn_q_norm, attn_k_norm)
        groups.append(("qk_norms", 1, hd, 2 * L, False))
    if a.attention_bias:
        groups.append(("attn_bias", 1, q_dim + 2 * kv_dim, L, False))
    return groups


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _native_label(native_dtype: str | None) -> str:
    """The 16-bit type unquantized embeddings keep: the checkpoint's own (fp32 checkpoints load as fp16)."""
    return "BF16" if (native_dtype or "bf16").lower() in ("bf16", "bfloat16") else "F16"


def _more_bits_layers(n: int) -> int:
    """How many of n layers llama.cpp's ``use_more_bits`` upgrades, in closed form (O(1) in n).

    ``use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2``: the first n/8 layers, the
    last n - 7n/8, and every third of the (7n/8 - n/8) layers between them, starting at the third.
    """
    if n <= 0:
        return 0
    first, last = n // 8, 7 * n // 8
    return first + (n - last) + (last - first) // 3


def _split(count: int, rules: Iterable[tuple[int, str]], default: str) -> list[tuple[int, str]]:
    """Distribute ``count`` layers: each (n, type) takes up to n of what is left."""
    out, left = [], count
    for n, t in rules:
        take = max(0, min(n, left))
        if take:
            out.append((take, t))
            left -= take
    if left:
        out.append((left, default))
    return out


def _gguf_group_types(a: Architecture, preset: str, group: str, count: int, base: str,
                      qkv_as_v: bool = False) -> list[tuple[int, str]]:
    """llama.cpp's per-tensor choice for one group: [(how many tensors, ggml type)].

    ``qkv_as_v``: a fused attn_qkv takes attn_v's rules, as llama.cpp's quantizer does since its
    tensor-category refactor (``category_is_attn_v``; the build in llama-cpp-python 0.3.36). Before it,
    and so in the published files (Phi-3, Phi-3.5, Phi-4-mini), attn_qkv had a rule of its own.
    """
    p = preset
    if group == "attn_qkv" and qkv_as_v:
        group = "attn_v"
    L = a.layers
    eight = a.n_experts == 8
    iq_low = p in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
    if group in ("output",) or (group == "token_embd" and a.tie_word_embeddings):
        if p == "MXFP4_MOE":
            return [(count, "Q8_0")]
        if iq_low or p == "IQ3_XXS":
            return [(count, "Q5_K")]
        return [(count, base if base == "Q8_0" else "Q6_K")]
    if p == "MXFP4_MOE":
        return [(count, "MXFP4" if group.endswith("_exps") else "Q8_0")]
    if group == "token_embd":
        if p in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return [(count, "Q2_K")]
        if p in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return [(count, "IQ3_S")]
        if p in ("TQ1_0", "TQ2_0"):
            return [(count, "Q4_K")]
        return [(count, base)]
    if iq_low:
        if group == "attn_v":
            if a.gqa >= 4 or a.n_experts >= 4:
                return [(count, "Q4_K")]
            return [(count, "IQ3_S" if p in ("IQ2_S", "IQ2_M") else "Q2_K")]
        if group == "attn_k" and eight:
            return [(count, "Q4_K")]
        if group.startswith("ffn_down"):
            return _split(count, [(L // 8, "IQ3_S" if p in ("IQ2_S", "IQ2_M") else "Q2_K")], base)
        if group == "attn_output":
            if eight:
                return [(count, "Q5_K")]
            if p in ("IQ1_S", "IQ1_M"):
                return [(count, "IQ2_XXS")]
            if p in ("IQ2_S", "IQ2_M"):
                return [(count, "IQ3_S")]
        return [(count, base)]
    if group == "attn_v":
        big70 = a.layers == 80 and a.hidden_size == 8192  # llama.cpp's LLM_TYPE_70B
        more = _more_bits_layers(L)

        def bump(rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
            if eight:
                return [(count, "Q8_0")]
            if big70:
                return [(n, "Q5_K" if t in ("Q3_K", "Q4_K") else t) for n, t in rows]
            return rows

        if p == "Q2_K":
            return bump([(count, "Q4_K" if a.gqa >= 4 else "Q3_K")])
        if p == "Q2_K_S" and a.gqa >= 4:
            return bump([(count, "Q4_K")])
        if p == "IQ3_XXS":  # I-quants are made with an importance matrix, which keeps IQ3_XXS here
            return bump([(count, "Q4_K" if a.gqa >= 4 else "IQ3_XXS")])
        if p in ("IQ3_XS", "IQ3_S") and a.gqa >= 4:
            return bump([(count, "Q4_K")])
        if p == "IQ3_M":
            return bump([(count, "Q4_K")])
        if p == "Q3_K_M":
            return bump(_split(count, [(2, "Q5_K")], "Q4_K"))
        if p == "Q3_K_L":
            return bump([(count, "Q5_K")])
        if p in ("IQ4_NL", "IQ4_XS") and a.gqa >= 4:
            return bump([(count, "Q5_K")])
        if p in ("Q4_K_M", "Q5_K_M"):
            return bump([(more, "Q6_K"), (count - more, base)])
        if p == "Q4_K_S":
            return bump(_split(count, [(4, "Q5_K")], base))
        return bump([(count, base)])
    if group == "attn_k":
        if eight:
            return [(count, "Q8_0")]
        if p == "IQ3_XS":
            return [(count, "IQ3_XXS")]
        if p == "IQ3_XXS":
            return [(count, "IQ2_S")]
        return [(count, base)]
    if group == "attn_q":
        if p == "IQ3_XS":
            return [(count, "IQ3_XXS")]
        if p == "IQ3_XXS":
            return [(count, "IQ2_S")]
        return [(count, base)]
    if group.startswith("ffn_down"):
        more = _more_bits_layers(L)
        if p == "Q2_K":
            return [(count, "Q3_K")]
        if p == "Q2_K_S":
            return _split(count, [(L // 8, "Q4_K")], base)
        if p == "Q3_K_M":
            return _split(count, [(L // 16, "Q5_K")], "Q4_K")
        if p == "IQ3_M":
            if eight:
                return [(max(more, L // 8), "Q4_K"), (count - max(more, L // 8), base)]
            return _split(count, [(L // 8, "Q4_K")], base)
        if p == "Q3_K_L":
            return [(count, "Q5_K")]
        if p in ("Q4_K_M", "Q5_K_M"):
            return [(more, "Q6_K"), (count - more, base)]
        if p == "Q4_K_S":  # (IQ4_NL/IQ4_XS bump these only without an importance matrix)
            return _split(count, [(L // 8, "Q5_K")], base)
        return [(count, base)]
    if group == "attn_output":
        if eight:
            if p in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                     "IQ3_M", "IQ4_XS"):
                return [(count, "Q5_K")]
            return [(count, base)]
        return [(count, {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
                         "IQ3_M": "Q4_K"}.get(p, base))]
    if group == "attn_qkv":  # the rule of the published files (qkv_as_v=False)
        return [(count, {"Q3_K_M": "Q4_K", "Q3_K_L": "Q4_K", "IQ3_M": "Q4_K", "Q4_K_M": "Q5_K",
                         "Q5_K_M": "Q6_K"}.get(p, base))]
    if group.startswith(("ffn_gate", "ffn_up")) and p == "IQ3_XS":
        mid = max(0, 7 * L // 8 - L // 8)
        return [(mid, "IQ3_XXS"), (count - mid, base)]
    return [(count, base)]


def _group_bytes(a: Architecture, quant: QuantSpec, group: str, rows: int, ncols: int, count: int,
                 quantizable: bool, native: str, qkv_as_v: bool) -> list[tuple[str, int]]:
    """[(storage type, bytes)] of one tensor group at a level."""
    elements = rows * ncols
    if not quantizable:
        return [("F32", elements * count * 4)]
    if quant.kind == "float":
        label = {32: "F32", 16: quant.name.upper(), 8: "FP8"}[int(quant.bits)]
        return [(label, int(elements * count * quant.bits / 8))]
    if quant.kind == "linear":
        if group in ("token_embd", "output"):
            return [(native, elements * count * 2)]
        if quant.name == "int8":
            return [("INT8", (elements + rows * 4) * count)]  # int8 weights + an fp32 scale per row
        return [(quant.name.upper(), math.ceil(elements * quant.bits / 8) * count)]
    if quant.kind == "ggml":
        t = _compatible(quant.ggml_type or "F16", ncols)
        return [(t, _row_bytes(t, ncols) * rows * count)]
    base = quant.ggml_type or "F16"  # a gguf preset
    if base in ("F32", "F16", "BF16"):
        return [(base, _row_bytes(base, ncols) * rows * count)]
    out = []
    for n, t in _gguf_group_types(a, quant.name, group, count, base, qkv_as_v):
        t = _compatible(t, ncols)
        out.append((t, _row_bytes(t, ncols) * rows * n))
    return out


@lru_cache(maxsize=4096)
def _weights_by_type(a: Architecture, quant: QuantSpec, native: str = "BF16",
                     qkv_as_v: bool = False) -> tuple[tuple[str, int], ...]:
    """Bytes per storage type for a whole model. Cached: the architecture and level are immutable."""
    totals: dict[str, int] = {}
    for group, rows, ncols, count, quantizable in _tensor_groups(a):
        for t, n in _group_bytes(a, quant, group, rows, ncols, count, quantizable, native, qkv_as_v):
            if n:
                totals[t] = totals.get(t, 0) + n
    return tuple(sorted(totals.items(), key=lambda kv: -kv[1]))


def embedding_bytes(quant: QuantSpec | str, architecture: Architecture, native_dtype: str | None = None) -> int:
    """Bytes of the token embedding matrix (``token_embd``) at a level; 0 without a vocabulary."""
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    return _embedding_bytes(q, architecture, native_dtype)


@lru_cache(maxsize=4096)
def _embedding_bytes(q: QuantSpec, architecture: Architecture, native_dtype: str | None) -> int:
    for group, rows, ncols, count, quantizable in _tensor_groups(architecture):
        if group == "token_embd":
            return sum(n for _, n in _group_bytes(architecture, q, group, rows, ncols, count, quantizable,
                                                  _native_label(native_dtype), False))
    return 0


@cache
def _reference_bits(quant: QuantSpec) -> float:
    """Effective bits per parameter of a level on a typical model (Llama 3.1 8B's shape).

    Used when only a parameter count is known: better than the base type's bits, since presets
    keep embeddings and some layers at higher precision.
    """
    ref = Architecture(layers=32, hidden_size=4096, heads=32, kv_heads=8, head_dim=128, vocab_size=128256,
                       intermediate_size=14336)
    total = sum(b for _, b in _weights_by_type(ref, quant))
    return total * 8 / ref.parameter_count()


def weight_bytes(
    quant: QuantSpec | str,
    *,
    parameters: int | None = None,
    architecture: Architecture | None = None,
    native_dtype: str | None = None,
    qkv_as_v: bool = False,
) -> tuple[int, tuple[tuple[str, int], ...], str, bool]:
    """(bytes, bytes by storage type, explanation, approximate) for a model's weights.

    With an architecture the bytes are modelled per tensor group; with only a parameter count,
    the level's effective bits on a typical model are used and the result is marked approximate.
    ``qkv_as_v``: model a fused attn_qkv (Phi-3) as current llama.cpp quantizes it (attn_v's rules)
    instead of as the published files were quantized; see ``_gguf_group_types``.
    """
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    _check_parameters(parameters)
    if architecture is not None:
        by_type = _weights_by_type(architecture, q, _native_label(native_dtype), qkv_as_v)
        total = sum(b for _, b in by_type)
        modelled = architecture.parameter_count()
        extra = (parameters or 0) - modelled
        approximate = False
        note = ""
        # Tensors the architecture does not describe (vision towers, shared experts, biases …):
        # counted at the level's effective rate when they are more than 2% of the model.
        if parameters and extra > 0.02 * parameters:
            if q.is_gguf:
                note = f"; {extra / 1e9:.2f} B parameters not modelled (e.g. a vision projector: a separate file)"
            else:
                add = int(extra * (16 if q.kind == "linear" else q.bits) / 8)
                total += add
                by_type = tuple(sorted((*by_type, ("other", add)), key=lambda kv: -kv[1]))
                note = f"; {extra / 1e9:.2f} B parameters outside the text model at 16 bits"
        params_shown = max(parameters or 0, modelled)
        bpw = total * 8 / params_shown if params_shown else 0
        explanation = (
            f"{params_shown / 1e9:.2f} B parameters at {q.name}: {format_gib(total, 2)} "
            f"({bpw:.2f} bits/weight, modelled per tensor group){note}"
        )
        return total, by_type, explanation, approximate
    if not parameters or parameters <= 0:
        raise ValueError("weight_bytes needs a parameter count or an architecture")
    bits = _reference_bits(q)
    total = int(parameters * bits / 8)
    explanation = (
        f"{parameters / 1e9:.2f} B parameters at {q.name} ≈ {bits:.2f} bits/weight "
        f"(typical for this level; give the architecture for an exact mix): {format_gib(total, 2)}"
    )
    return total, ((q.ggml_type or q.name.upper(), total),), explanation, True


# --------------------------------------------------------------------------------------------
# KV cache, compute, overhead
# --------------------------------------------------------------------------------------------


def _kv_bytes_per_element(kv_dtype: str) -> float:
    try:
        block, size = KV_TYPES[kv_dtype.lower()]
    except KeyError:
        raise UnknownQuantizationError(
            f"unknown KV-cache type {kv_dtype!r}; use one of: {', '.join(KV_TYPES)}"
        ) from None
    return size / block


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to if to > 1 else n


#: Families whose config may name a sliding window that llama.cpp does not use: it caches the whole
#: context for every layer. Phi-3: "Phi SWA is currently disabled" (src/llama-model.cpp); llama.cpp's
#: llama (Mistral, Ministral, Mixtral), qwen2 and qwen3 architectures read no window at all.
_FULL_CACHE_FAMILIES = frozenset({"phi3", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe"})


def _cached_window(a: Architecture) -> int | None:
    """The sliding window the KV cache is sized by, or None where every layer caches the whole context."""
    if (a.family or "") in _FULL_CACHE_FAMILIES:
        return None
    return a.sliding_window


def _window_cells(a: Architecture, ctx: int, batch: int, pad_to: int, sequences: int = 1) -> int:
    """Cells of a sliding-window layer's cache: the window (one per sequence) plus one micro-batch,
    padded, at most ctx."""
    window = _cached_window(a) or ctx
    return min(ctx, _pad(window * sequences + (batch if pad_to > 1 else 0), pad_to))


def _layer_split(a: Architecture) -> tuple[int, int]:
    """(global layers, sliding-window layers); every Nth layer is global with a pattern N > 1."""
    if not _cached_window(a):
        return a.layers, 0
    if a.sliding_window_pattern and a.sliding_window_pattern > 1:
        n_global = a.layers // a.sliding_window_pattern
    else:
        n_global = 0
    return n_global, a.layers - n_global


def kv_cache_bytes(
    a: Architecture, context: int, kv_dtype: str = "f16", *, pad_to: int = 1, batch: int = 512, sequences: int = 1,
    swa_full: bool = False, v_dtype: str | None = None, window_sequences: int = 1,
) -> tuple[int, str]:
    """(bytes, explanation) of the K and V cache for ``context`` tokens (× ``sequences``).

    Sliding-window layers cache their window plus one micro-batch (``batch``), padded to 256 under
    llama.cpp (``llama_kv_cache_iswa``: ``GGML_PAD(min(n_ctx, n_swa + n_ubatch), 256)``), as llama-server
    and llama-cli do by default. ``swa_full``: every layer caches the whole context instead, as with
    ``--swa-full`` and with llama.cpp's library default (``llama_context_default_params``, which
    llama-cpp-python's ``Llama`` keeps unless given ``swa_full=False``).
    ``v_dtype``: the V cache's type when it differs from K's (``--cache-type-v``). ``window_sequences``:
    sequences sharing one unified cache (llama-server slots): each keeps its own window
    (``n_swa × n_seq_max + n_ubatch`` cells in ``llama_kv_cache_iswa``).
    """
    _check_tokens("context", context)
    _check_tokens("batch", batch)
    _check_tokens("sequence count", sequences)
    if context <= 0:
        return 0, "no context requested: no KV cache"
    _check_tokens("sequence count", window_sequences)
    per_k = _kv_bytes_per_element(kv_dtype)
    per_v = per_k if v_dtype is None else _kv_bytes_per_element(v_dtype)
    per = (per_k + per_v) / 2  # one K and one V element per width unit below
    if v_dtype is not None and v_dtype.lower() != kv_dtype.lower():
        kv_dtype = f"K {kv_dtype}, V {v_dtype}"
    ctx = _pad(context, pad_to)
    if a.kv_lora_rank:
        width = a.kv_lora_rank + (a.qk_rope_head_dim or 0)
        total = int(a.layers * ctx * width * per) * sequences
        return total, (
            f"MLA latent cache: {a.layers} layers × {ctx} tokens × ({a.kv_lora_rank}+{a.qk_rope_head_dim or 0}) "
            f"× {per:g} B ({kv_dtype}) = {format_gib(total, 2)}"
        )
    width = 2 * a.n_kv_heads * a.n_head_dim  # K and V
    window_size = _cached_window(a)
    if window_size and window_size < ctx and not swa_full:
        n_global, n_local = _layer_split(a)
        window = _window_cells(a, ctx, batch, pad_to, window_sequences)
        tokens = n_global * ctx + n_local * window
        total = int(tokens * width * per) * sequences
        return total, (
            f"2 × {a.n_kv_heads} KV heads × {a.n_head_dim} × {per:g} B ({kv_dtype}) per token: {n_global} global "
            f"layers × {ctx} tokens + {n_local} sliding-window layers × {window} = {format_gib(total, 2)}"
        )
    total = int(a.layers * ctx * width * per) * sequences
    return total, (
        f"2 × {a.layers} layers × {ctx} tokens × {a.n_kv_heads} KV heads × {a.n_head_dim} × {per:g} B "
        f"({kv_dtype}) = {format_gib(total, 2)}"
    )


def llm_compute_bytes(
    a: Architecture, context: int, batch: int = 512, *, flash_attention: bool = True
) -> tuple[int, str]:
    """(bytes, explanation) of llama.cpp's compute buffer for one micro-batch.

    The buffer holds the largest working set of the graph, so the estimate is the largest of its phases
    (checked against llama.cpp's own figures by tests/oracle, which reports the error):
    - output: f32 logits and hidden state for the batch, 4 × batch × (hidden + vocab), which dominates
      models with large vocabularies;
    - attention without flash attention: f32 scores for every head and the mask, batch × context × (heads + 1);
    - FFN: the residual and normed input plus, per active expert (1 for a dense model), gate, up and
      their product (3 × FFN width) and the expert's output (hidden), with the attention mask (f16 under
      flash attention, f32 without) still alive; this dominates MoE models and small vocabularies.
    llama.cpp never runs a micro-batch larger than the context, so the batch is capped at it.
    """
    _check_tokens("context", context)
    _check_tokens("batch", batch)
    b = max(1, batch)
    if context > 0:
        b = min(b, context)
    e, v = a.hidden_size, a.vocab_size or 32000
    ctx = max(context, 1)
    logits = 4 * b * (e + v)
    moe = a.n_experts > 1
    ff = (a.expert_intermediate_size or a.intermediate_size or 4 * e) if moe else (a.intermediate_size or 4 * e)
    active = (a.active_experts or min(2, a.n_experts)) if moe else 1
    n_global, n_local = _layer_split(a)
    mask_cells = (ctx if n_global else 0) + (_window_cells(a, ctx, b, 256) if n_local else 0)
    mask = (2 if flash_attention else 4) * b * mask_cells
    ffn = 4 * b * (2 * e + active * (3 * ff + e)) + mask
    ffn_text = (f"FFN working set for {b} tokens ({active} × {ff}-wide {'experts' if moe else 'FFN'}) "
                f"and the attention mask")
    if flash_attention:
        total = max(logits, 4 * b * (1 + 4 * e), ffn)
        if total == ffn and ffn > logits:
            return total, f"compute buffer (flash attention): {ffn_text}"
        return total, f"compute buffer (flash attention): f32 logits and activations for a {b}-token batch"
    scores = 4 * b * (1 + 4 * e + ctx * (1 + a.heads))
    total = max(scores, logits, ffn)
    if total == ffn and ffn > max(scores, logits):
        return total, f"compute buffer (no flash attention): {ffn_text}"
    return total, (f"compute buffer (no flash attention): attention scores for {b} tokens × {ctx} context "
                   f"× {a.heads} heads")


#: Ollama's CUDA minimum per GPU (discover/gpu.go); gguf-parser's host footprint for the CPU.
GPU_RUNTIME_OVERHEAD = 457 * MiB
CPU_RUNTIME_OVERHEAD = 150 * MiB


def runtime_overhead_bytes(device_kind: str = "gpu") -> tuple[int, str]:
    if device_kind == "cpu":
        return CPU_RUNTIME_OVERHEAD, "runtime footprint on the CPU (150 MiB, gguf-parser's platform figure)"
    return GPU_RUNTIME_OVERHEAD, "CUDA context and runtime (457 MiB per GPU, Ollama's measured minimum)"


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EstimateTerm:
    bytes: int
    explanation: str


@dataclass(frozen=True, slots=True)
class ComponentEstimate:
    """One part of a pipeline (a denoiser, a text encoder, a VAE, a speech encoder, a vision tower):
    its parameters, level, where it sits ("gpu" or "cpu") and its weight bytes."""

    name: str
    role: str
    parameters: int
    level: str
    device: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "parameters": self.parameters, "level": self.level,
                "device": self.device, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class PhaseEstimate:
    """One phase of a run (encode, denoise, decode; prompt, generate): the components it needs on the
    device, its working memory, and the device's peak while it runs (resident weights + working memory)."""

    name: str
    components: tuple[str, ...]
    working_bytes: int
    peak_bytes: int
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "components": list(self.components), "working_bytes": self.working_bytes,
                "peak_bytes": self.peak_bytes, "explanation": self.explanation}


_NO_HOST = EstimateTerm(0, "nothing held in RAM beside the device's share")


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """A memory estimate as a breakdown. Every term is bytes with a one-line reason.

    ``weights``, ``kv_cache``, ``compute`` and ``overhead`` are what the target device holds (their sum is
    ``total_bytes``); ``host`` is what the runtime holds in RAM beside it (llama.cpp's token embeddings, a
    text encoder left on the CPU). ``components`` and ``phases`` break a pipeline down; ``compute`` is then
    the largest phase's working memory, not the sum. ``offload_graph_bytes``: what the device's compute
    buffer grows by when some layers stay in RAM (llama.cpp copies their weights to the GPU per batch).
    """

    quantization: str
    weights: EstimateTerm
    kv_cache: EstimateTerm
    compute: EstimateTerm
    overhead: EstimateTerm
    weights_by_type: tuple[tuple[str, int], ...] = ()
    approximate: bool = False
    notes: tuple[str, ...] = field(default=())
    host: EstimateTerm = _NO_HOST
    components: tuple[ComponentEstimate, ...] = ()
    phases: tuple[PhaseEstimate, ...] = ()
    #: The runtime settings it was made for, in words (RuntimeProfile.describe()).
    runtime: str = ""
    offload_graph_bytes: int = 0

    @property
    def weights_bytes(self) -> int:
        return self.weights.bytes

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache.bytes

    @property
    def compute_bytes(self) -> int:
        return self.compute.bytes

    @property
    def overhead_bytes(self) -> int:
        return self.overhead.bytes

    @property
    def host_bytes(self) -> int:
        return self.host.bytes

    @property
    def total_bytes(self) -> int:
        return self.weights.bytes + self.kv_cache.bytes + self.compute.bytes + self.overhead.bytes

    def without_overhead(self) -> MemoryEstimate:
        return replace(self, overhead=EstimateTerm(0, "runtime overhead counted once per device elsewhere"))

    def to_dict(self) -> dict[str, Any]:
        """The contract's estimate document, plus explanations, RAM beside the device, components and phases."""
        return {
            "quantization": self.quantization,
            "weights_bytes": self.weights.bytes,
            "kv_cache_bytes": self.kv_cache.bytes,
            "compute_bytes": self.compute.bytes,
            "overhead_bytes": self.overhead.bytes,
            "total_bytes": self.total_bytes,
            "host_bytes": self.host.bytes,
            "approximate": self.approximate,
            "runtime": self.runtime,
            "weights_by_type": {t: b for t, b in self.weights_by_type},
            "explanations": {
                "weights": self.weights.explanation,
                "kv_cache": self.kv_cache.explanation,
                "compute": self.compute.explanation,
                "overhead": self.overhead.explanation,
                "host": self.host.explanation,
            },
            "components": [c.to_dict() for c in self.components],
            "phases": [p.to_dict() for p in self.phases],
            "notes": list(self.notes),
        }

    def rows(self) -> list[tuple[str, EstimateTerm]]:
        """(label, term) for each line of the breakdown, host RAM last when there is any."""
        rows = [("weights", self.weights), ("KV cache", self.kv_cache), ("compute", self.compute),
                ("overhead", self.overhead)]
        if self.host.bytes:
            rows.append(("in RAM", self.host))
        return rows

    def explain(self) -> list[str]:
        lines = []
        if self.runtime:
            lines.append(f"runtime   {self.runtime}")
        rows = self.rows()
        lines += [f"{label:<9} {format_gib(t.bytes, 2):>11}  {t.explanation}" for label, t in rows[:4]]
        approx = "  (approximate)" if self.approximate else ""
        lines.append(f"{'total':<9} {format_gib(self.total_bytes, 2):>11}{approx}")
        lines += [f"{label:<9} {format_gib(t.bytes, 2):>11}  {t.explanation}" for label, t in rows[4:]]
        for c in self.components:
            lines.append(f"  part    {format_gib(c.bytes, 2):>11}  {c.name} ({c.role}): {c.parameters / 1e9:.2f} B "
                         f"parameters at {c.level} on the {c.device.upper() if c.device == 'cpu' else 'GPU'}")
        for p in self.phases:
            lines.append(f"  phase   {format_gib(p.peak_bytes, 2):>11}  {p.name}: {p.explanation}")
        return lines


def estimate_llm(
    quant: QuantSpec | str,
    *,
    parameters: int | None = None,
    architecture: Architecture | None = None,
    context: int = 0,
    kv_dtype: str = "f16",
    batch: int = 512,
    flash_attention: bool = True,
    device_kind: str = "gpu",
    native_dtype: str | None = None,
    qkv_as_v: bool = False,
    swa_full: bool = False,
) -> MemoryEstimate:
    """Weights + KV cache + compute buffer + runtime overhead for a language model.

    Raises ValueError (naming the number and its limit) for a parameter count, context or batch
    out of range; an ``Architecture`` refuses out-of-range numbers when it is built.
    ``batch`` is llama.cpp's micro-batch (n_ubatch). ``qkv_as_v`` and ``swa_full``: see
    ``weight_bytes`` and ``kv_cache_bytes``.
    """
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    _check_tokens("context", context)
    _check_tokens("batch", batch)
    w, by_type, w_text, approx = weight_bytes(q, parameters=parameters, architecture=architecture,
                                              native_dtype=native_dtype, qkv_as_v=qkv_as_v)
    notes: list[str] = []
    if architecture is not None:
        pad = 256 if q.is_gguf else 1  # llama.cpp pads the context to 256 (with or without flash attention)
        kv, kv_text = kv_cache_bytes(architecture, context, kv_dtype, pad_to=pad, batch=batch, swa_full=swa_full)
        if context > 0:  # the graph sees the padded cache
            comp, comp_text = llm_compute_bytes(architecture, _pad(context, pad), batch,
                                                flash_attention=flash_attention)
        else:
            comp, comp_text = 0, "no context: no compute buffer"
        if not q.is_gguf and context:  # transformers keeps activations per generated sequence
            comp_text += " (transformers: similar order)"
    else:
        kv, kv_text = 0, "no architecture given: KV cache not estimated (pass layers, KV heads and head dim)"
        comp = 4 * max(1, batch) * 4096 * 5 if context else 0
        comp_text = ("compute buffer assumed for a typical 4096-wide model" if context
                     else "no context: no compute buffer")
        if context:
            notes.append("KV cache needs the architecture; the total is a lower bound")
    ov, ov_text = runtime_overhead_bytes(device_kind)
    return MemoryEstimate(
        quantization=q.name,
        weights=EstimateTerm(w, w_text),
        kv_cache=EstimateTerm(kv, kv_text),
        compute=EstimateTerm(comp, comp_text),
        overhead=EstimateTerm(ov, ov_text),
        weights_by_type=by_type,
        approximate=approx or architecture is None,
        notes=tuple(notes),
    )


def _simple_weights(q: QuantSpec, parameters: int) -> tuple[int, str]:
    _check_parameters(parameters)
    bits = q.bits if q.kind in ("float", "linear") else _reference_bits(q)
    total = int(parameters * bits / 8)
    return total, f"{parameters / 1e9:.2f} B parameters at {q.name} ({bits:.2f} bits/weight): {format_gib(total, 2)}"


def estimate_embedding(quant: QuantSpec | str, *, parameters: int, architecture: Architecture | None = None,
                       batch: int = 32, sequence: int = 512, device_kind: str = "gpu") -> MemoryEstimate:
    """Embedding encoders: weights plus one batch of activations."""
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    w, w_text = _simple_weights(q, parameters)
    _check_tokens("batch", batch)
    _check_tokens("sequence length", sequence)
    d = architecture.hidden_size if architecture else 1024
    heads = architecture.heads if architecture else 16
    act = batch * sequence * (d * 2 * 8 + sequence * heads * 2)
    ov, ov_text = runtime_overhead_bytes(device_kind)
    return MemoryEstimate(q.name, EstimateTerm(w, w_text), EstimateTerm(0, "encoders keep no KV cache"),
                          EstimateTerm(act, f"activations for {batch} × {sequence} tokens"),
                          EstimateTerm(ov, ov_text), ((q.name.upper(), w),), approximate=True)
