"""The runtime-profile and architecture flags shared by `modeldeck plan` and `modeldeck estimate`.

Parsing only: the numbers go into a :class:`~app.core.runtime_profile.RuntimeProfile` (or an
``Architecture``); every bad value is refused by argparse with one line saying what was wrong and what
to give instead. Building the parser imports no Qt and no estimator module beyond the profile's.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_runtime_flags", "profile_from", "add_architecture_flags", "ARCH_FLAGS"]


def _runtime(text: str) -> str:
    from app.core.runtime_profile import runtime_name

    try:
        return runtime_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cache_type(text: str) -> str:
    from app.core.runtime_profile import CACHE_TYPES

    low = text.strip().lower()
    if low not in CACHE_TYPES:
        raise argparse.ArgumentTypeError(f"unknown cache type {text!r}; use one of: {', '.join(CACHE_TYPES)}")
    return low


def _component_level(text: str) -> tuple[str, str]:
    from app.core.estimation import UnknownQuantizationError, resolve_quantization

    name, sep, level = text.partition("=")
    if not sep or not name.strip() or not level.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write PART=LEVEL, e.g. text_encoder_3=int8")
    try:
        return name.strip(), resolve_quantization(level.strip()).name
    except UnknownQuantizationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _resolution(text: str) -> tuple[int, int]:
    from app.core.runtime_profile import parse_resolution

    try:
        return parse_resolution(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_runtime_flags(parser: argparse.ArgumentParser, in_range: Any, *, batch_default: int | None = None) -> None:
    """The runtime profile's flags (see ARCHITECTURE.md's CLI contract)."""
    from app.core.runtime_profile import BACKENDS, MAX_PARALLEL, RUNTIMES

    g = parser.add_argument_group("runtime (defaults: the runtime's own, see `--runtime`)")
    g.add_argument("--runtime", type=_runtime, metavar="R",
                   help=f"the runtime that will load it: {', '.join(RUNTIMES)} (default: by level and model type)")
    g.add_argument("--backend", type=str.lower, choices=BACKENDS, default=None,
                   help="the GPU backend (default cuda)")
    fa = g.add_mutually_exclusive_group()
    fa.add_argument("--flash-attention", dest="flash_attention", action="store_const", const=True, default=None,
                    help="size the compute buffers with flash attention")
    fa.add_argument("--no-flash-attention", dest="flash_attention", action="store_const", const=False,
                    help="size them without it (attention scores held in memory)")
    g.add_argument("--parallel", type=in_range(int, 1, MAX_PARALLEL, "a number of parallel sequences"), metavar="N",
                   help="sequences served at once (llama-server slots, OLLAMA_NUM_PARALLEL)")
    g.add_argument("--batch", type=in_range(int, 1, 1 << 20, "a batch"), default=batch_default, metavar="N",
                   help="tokens per batch for LLMs, images at once for image and video models")
    g.add_argument("--ubatch", type=in_range(int, 1, 1 << 20, "a micro-batch in tokens"), metavar="N",
                   help="llama.cpp's micro-batch (default 512)")
    g.add_argument("--resolution", type=_resolution, metavar="WxH", help="image or video size, e.g. 1024x1024")
    g.add_argument("--frames", type=in_range(int, 1, 1 << 16, "a frame count"), metavar="N", help="video frames")
    g.add_argument("--beams", type=in_range(int, 1, MAX_PARALLEL, "a beam count"), metavar="N",
                   help="beam search width (speech)")
    g.add_argument("--cache-type-k", type=_cache_type, metavar="T", help="K cache type: f16, q8_0, q4_0 …")
    g.add_argument("--cache-type-v", type=_cache_type, metavar="T", help="V cache type: f16, q8_0, q4_0 …")
    g.add_argument("--no-kv-offload", action="store_true", help="keep the KV cache in RAM")
    g.add_argument("--offload-components", action="store_true",
                   help="one pipeline component on the GPU at a time (diffusers' enable_model_cpu_offload)")
    g.add_argument("--text-encoders-on-cpu", action="store_true", help="keep a pipeline's text encoders in RAM")
    g.add_argument("--vae-tiling", action="store_true", help="decode images in 512-pixel tiles")
    g.add_argument("--vae-slicing", action="store_true", help="decode the batch one image at a time")
    g.add_argument("--component-level", type=_component_level, action="append", metavar="PART=LEVEL",
                   help="a pipeline part's own level, e.g. text_encoder_3=int8 (repeatable)")


def profile_from(args: argparse.Namespace, kv_dtype: str | None = None) -> Any:
    """The RuntimeProfile the flags describe (``--kv-dtype`` fills both cache types unless they are given)."""
    from app.core.runtime_profile import RuntimeProfile

    width, height = args.resolution if args.resolution else (None, None)
    kv = kv_dtype if kv_dtype and kv_dtype != "f16" else None
    return RuntimeProfile(
        runtime=args.runtime, backend=args.backend, flash_attention=args.flash_attention, parallel=args.parallel,
        batch=args.batch, ubatch=args.ubatch, cache_type_k=args.cache_type_k or kv,
        cache_type_v=args.cache_type_v or kv,
        kv_offload=not args.no_kv_offload, width=width, height=height, frames=args.frames, beams=args.beams,
        offload="model" if args.offload_components else "none",
        text_encoder_device="cpu" if args.text_encoders_on_cpu else "gpu", vae_tiling=args.vae_tiling,
        vae_slicing=args.vae_slicing, component_levels=tuple(dict(args.component_level or ()).items()))


#: estimate's architecture flags beyond layers/hidden/heads/kv-heads/head-dim/vocab/intermediate.
ARCH_FLAGS = ("experts", "active_experts", "expert_intermediate", "shared_experts", "sliding_window",
              "sliding_window_pattern", "kv_lora_rank", "qk_rope_head_dim")


def add_architecture_flags(parser: argparse.ArgumentParser, in_range: Any) -> None:
    """MoE, tying, MLP kind, attention bias, sliding windows and MLA: each flag independent."""
    from app.core.estimation import ARCHITECTURE_LIMITS as L

    g = parser.add_argument_group("architecture beyond the basics")
    g.add_argument("--experts", type=in_range(int, 1, L["experts"], "an expert count"), metavar="E",
                   help="routed experts per layer (MoE)")
    g.add_argument("--active-experts", type=in_range(int, 1, L["active_experts"], "an active expert count"),
                   metavar="K", help="experts each token uses (MoE)")
    g.add_argument("--expert-intermediate",
                   type=in_range(int, 1, L["expert_intermediate_size"], "an expert FFN width"), metavar="F",
                   help="FFN width of one expert (default --intermediate)")
    g.add_argument("--shared-experts", type=in_range(int, 1, L["experts"], "a shared expert count"),
                   metavar="S", help="experts every token passes through (DeepSeek, Qwen-MoE)")
    tie = g.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_const", const=True, default=None,
                     help="the output layer shares the token embeddings")
    tie.add_argument("--untied", dest="tied", action="store_const", const=False, help="it has its own (default)")
    g.add_argument("--mlp", type=str.lower, choices=("gated", "plain"), default=None,
                   help="gated: gate, up and down (Llama, default); plain: up and down only (GPT-2, phi-2)")
    g.add_argument("--attention-bias", action="store_true", help="Q/K/V projections have biases (Qwen2, phi-2)")
    g.add_argument("--sliding-window", type=in_range(int, 1, L["sliding_window"], "a window in tokens"),
                   metavar="W", help="tokens a sliding-window layer attends to")
    g.add_argument("--sliding-window-pattern", type=in_range(int, 1, L["sliding_window_pattern"], "a layer pattern"),
                   metavar="N", help="every Nth layer is global (Gemma 2: 2, Gemma 3: 6)")
    g.add_argument("--kv-lora-rank", type=in_range(int, 1, L["kv_lora_rank"], "an MLA rank"), metavar="R",
                   help="MLA's compressed KV width (DeepSeek V2/V3)")
    g.add_argument("--qk-rope-head-dim", type=in_range(int, 1, L["qk_rope_head_dim"], "a RoPE key width"),
                   metavar="D", help="MLA's RoPE key width")
