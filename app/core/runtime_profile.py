"""How a model will be run: the runtime and its settings, an input to every estimate and plan.

The same weights hold very different amounts of memory under different runtimes and settings: flash
attention off multiplies llama.cpp's compute buffer by up to twenty at long contexts; four parallel
slots widen a sliding-window cache fourfold; llama.cpp keeps the token embeddings in RAM while
transformers puts them on the GPU; a diffusion pipeline peaks when its VAE decodes the whole batch.
A :class:`RuntimeProfile` names those settings once; ``None`` in a field means "the runtime's
default", which :func:`resolve` fills in from :data:`RUNTIMES` (each default with its source).

Pure data, no I/O, no Qt. Bytes are not involved here; the estimator reads the profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, Literal

__all__ = [
    "Backend",
    "RuntimeDefaults",
    "RuntimeProfile",
    "RUNTIMES",
    "BACKENDS",
    "CACHE_TYPES",
    "MAX_PARALLEL",
    "MAX_RESOLUTION",
    "parse_resolution",
    "runtime_for",
    "resolve",
    "level_suits",
    "runtimes_for",
    "check_runtime",
    "lighter_settings",
    "runtime_name",
]

Backend = Literal["cuda", "rocm", "metal", "vulkan", "cpu"]
BACKENDS: tuple[str, ...] = ("cuda", "rocm", "metal", "vulkan", "cpu")
#: K and V cache element types llama.cpp accepts (``--cache-type-k/-v``).
CACHE_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
#: Parallel sequences (slots, beams, images) a profile may ask for: far above any real server.
MAX_PARALLEL = 4096
#: Pixels per side of an image or video frame.
MAX_RESOLUTION = 1 << 16


@dataclass(frozen=True, slots=True)
class RuntimeDefaults:
    """One runtime's defaults, each with where it comes from."""

    name: str
    label: str
    kind: Literal["llm", "python", "ctranslate2", "ggml"]
    flash_attention: bool
    parallel: int
    batch: int
    ubatch: int
    beams: int
    #: The runtime keeps the token embedding matrix in RAM even when every layer is on the GPU.
    embeddings_on_cpu: bool
    #: ``--ctx-size`` is per sequence (Ollama's num_ctx) rather than shared by all of them (llama.cpp).
    context_per_sequence: bool
    sources: tuple[str, ...]


RUNTIMES: dict[str, RuntimeDefaults] = {
    "llama.cpp": RuntimeDefaults(
        "llama.cpp", "llama.cpp", "ggml", flash_attention=True, parallel=1, batch=2048, ubatch=512, beams=1,
        embeddings_on_cpu=True, context_per_sequence=False,
        sources=(
            "flash attention: `-fa auto` is the default and turns it on where the backend supports it "
            "(common/arg.cpp, llama_context: 'flash_attn auto -> enabled')",
            "batch 2048, micro-batch 512: common/common.h (n_batch, n_ubatch)",
            "one sequence: llama-cli and llama-cpp-python's Llama (n_seq_max 1); llama-server defaults to 4 slots",
            "token embeddings on the CPU: src/llama-model.cpp loads the input layer on the CPU "
            "('the input layer is always on the CPU'); the log shows it as 'CPU_Mapped model buffer'",
        ),
    ),
    "ollama": RuntimeDefaults(
        "ollama", "Ollama", "ggml", flash_attention=False, parallel=1, batch=512, ubatch=512, beams=1,
        embeddings_on_cpu=True, context_per_sequence=True,
        sources=(
            "flash attention off unless OLLAMA_FLASH_ATTENTION=1 (envconfig/config.go)",
            "num_batch 512 (api/types.go DefaultOptions); OLLAMA_NUM_PARALLEL 1 (envconfig)",
            "num_ctx is per parallel request: the runner's context is num_ctx × parallel (llm/server.go)",
        ),
    ),
    "transformers": RuntimeDefaults(
        "transformers", "transformers (PyTorch)", "python", flash_attention=True, parallel=1, batch=1, ubatch=1,
        beams=1, embeddings_on_cpu=False, context_per_sequence=True,
        sources=(
            "attention: scaled_dot_product_attention, whose memory-efficient kernels never hold the score "
            "matrix (transformers' default attn_implementation 'sdpa')",
            "one sequence per generate() call; beams 1 (GenerationConfig num_beams)",
        ),
    ),
    "diffusers": RuntimeDefaults(
        "diffusers", "diffusers (PyTorch)", "python", flash_attention=True, parallel=1, batch=1, ubatch=1, beams=1,
        embeddings_on_cpu=False, context_per_sequence=True,
        sources=(
            "one image per prompt (num_images_per_prompt=1); attention through scaled_dot_product_attention",
            "every component on the GPU after pipe.to('cuda'); enable_model_cpu_offload() keeps one at a time",
        ),
    ),
    "ctranslate2": RuntimeDefaults(
        "ctranslate2", "CTranslate2 (faster-whisper)", "ctranslate2", flash_attention=False, parallel=1, batch=1,
        ubatch=1, beams=5, embeddings_on_cpu=False, context_per_sequence=True,
        sources=("faster-whisper transcribe(): beam_size=5, one 30-second window at a time",),
    ),
    "openai-whisper": RuntimeDefaults(
        "openai-whisper", "openai-whisper (PyTorch)", "python", flash_attention=True, parallel=1, batch=1, ubatch=1,
        beams=5, embeddings_on_cpu=False, context_per_sequence=True,
        sources=("the whisper command line decodes with --beam_size 5 --best_of 5",),
    ),
    "whisper.cpp": RuntimeDefaults(
        "whisper.cpp", "whisper.cpp", "ggml", flash_attention=True, parallel=1, batch=1, ubatch=1, beams=5,
        embeddings_on_cpu=False, context_per_sequence=True,
        sources=("whisper-cli: beam size 5 (whisper_full_default_params, WHISPER_SAMPLING_BEAM_SEARCH), "
                 "flash attention on by default since v1.8",),
    ),
}
_ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama_cpp": "llama.cpp", "gguf": "llama.cpp",
            "hf": "transformers", "pytorch": "transformers", "torch": "transformers", "bitsandbytes": "transformers",
            "faster-whisper": "ctranslate2", "faster_whisper": "ctranslate2", "ct2": "ctranslate2",
            "whisper": "openai-whisper", "whispercpp": "whisper.cpp", "comfyui": "diffusers"}


def runtime_name(text: str) -> str:
    """The canonical runtime name for ``text`` (case-insensitive, common aliases), or a ValueError
    listing the runtimes ModelDeck knows."""
    key = str(text).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in RUNTIMES:
        raise ValueError(f"unknown runtime {text!r}; use one of: {', '.join(RUNTIMES)}")
    return key


@dataclass(frozen=True, slots=True)
class RuntimeProfile:
    """The runtime and its settings. ``None``: the runtime's default (see :data:`RUNTIMES`).

    - ``batch``: tokens per llama.cpp batch for LLMs (``--batch-size``), images at once for diffusion.
    - ``ubatch``: llama.cpp's micro-batch (``--ubatch-size``): the compute buffer is sized by it.
    - ``parallel``: sequences served at once (llama-server slots, Ollama's NUM_PARALLEL, batched requests).
    - ``cache_type_k``/``cache_type_v``: KV-cache element types; ``kv_offload`` False keeps the cache in RAM.
    - ``width``/``height``: image or video size; ``frames``: video length; ``beams``: beam search width.
    - ``offload``: "none" (every component on the device), "model" (one component at a time, diffusers'
      ``enable_model_cpu_offload``); ``text_encoder_device`` "cpu" keeps text encoders in RAM;
      ``vae_tiling`` decodes in 512-pixel tiles.
    """

    runtime: str | None = None
    backend: Backend | None = None
    flash_attention: bool | None = None
    parallel: int | None = None
    batch: int | None = None
    ubatch: int | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    kv_offload: bool = True
    mmap: bool = True
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    beams: int | None = None
    offload: Literal["none", "model"] = "none"
    text_encoder_device: Literal["gpu", "cpu"] = "gpu"
    vae_tiling: bool = False
    #: Decode one image of the batch at a time (diffusers' enable_vae_slicing).
    vae_slicing: bool = False
    #: A pipeline component's own level, e.g. (("text_encoder_3", "int8"),): T5 loaded in 8 bits.
    component_levels: tuple[tuple[str, str], ...] = ()
    #: The hash, computed once (profiles key every estimate cache).
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        if self.runtime is not None:
            object.__setattr__(self, "runtime", runtime_name(self.runtime))
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; use one of: {', '.join(BACKENDS)}")
        for name in ("cache_type_k", "cache_type_v"):
            value = getattr(self, name)
            if value is not None:
                low = str(value).strip().lower()
                if low not in CACHE_TYPES:
                    raise ValueError(f"unknown {name.replace('_', '-')} {value!r}; "
                                     f"use one of: {', '.join(CACHE_TYPES)}")
                object.__setattr__(self, name, low)
        limits = {"parallel": MAX_PARALLEL, "beams": MAX_PARALLEL, "batch": 1 << 20, "ubatch": 1 << 20,
                  "width": MAX_RESOLUTION, "height": MAX_RESOLUTION, "frames": 1 << 16}
        for name, limit in limits.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise ValueError(f"{name} must be a whole number between 1 and {limit:,}, not {value!r}")
        if isinstance(self.component_levels, dict):
            object.__setattr__(self, "component_levels", tuple(sorted(self.component_levels.items())))
        for entry in self.component_levels:
            if not (isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
                raise ValueError(f"component_levels holds (component, level) pairs, not {entry!r}")
        if self.offload not in ("none", "model"):
            raise ValueError(f"offload must be 'none' or 'model', not {self.offload!r}")
        if self.text_encoder_device not in ("gpu", "cpu"):
            raise ValueError(f"text_encoder_device must be 'gpu' or 'cpu', not {self.text_encoder_device!r}")
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare)))

    # --- what the estimator reads (every field resolved) -------------------------------------------
    @property
    def defaults(self) -> RuntimeDefaults:
        return RUNTIMES[self.runtime or "llama.cpp"]

    @property
    def flash(self) -> bool:
        return self.defaults.flash_attention if self.flash_attention is None else self.flash_attention

    @property
    def sequences(self) -> int:
        return self.parallel or self.defaults.parallel

    @property
    def micro_batch(self) -> int:
        """llama.cpp's n_ubatch: at most the batch (``min(n_batch, n_ubatch)`` in llama_context)."""
        d = self.defaults
        return min(self.batch or d.batch, self.ubatch or d.ubatch)

    @property
    def images(self) -> int:
        return self.batch or 1

    @property
    def beam_width(self) -> int:
        return self.beams or self.defaults.beams

    @property
    def k_type(self) -> str:
        return self.cache_type_k or "f16"

    @property
    def v_type(self) -> str:
        return self.cache_type_v or "f16"

    @property
    def device_backend(self) -> Backend:
        return self.backend or "cuda"

    def with_defaults_of(self, runtime: str) -> RuntimeProfile:
        """This profile, for ``runtime`` unless it already names one."""
        return self if self.runtime else replace(self, runtime=runtime)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as it applies (defaults filled in)."""
        d = self.defaults
        return {
            "runtime": d.name, "backend": self.device_backend, "flash_attention": self.flash,
            "parallel": self.sequences, "batch": self.batch or d.batch, "ubatch": self.micro_batch,
            "cache_type_k": self.k_type, "cache_type_v": self.v_type, "kv_offload": self.kv_offload,
            "mmap": self.mmap, "width": self.width, "height": self.height, "frames": self.frames,
            "beams": self.beam_width, "offload": self.offload, "text_encoder_device": self.text_encoder_device,
            "vae_tiling": self.vae_tiling, "vae_slicing": self.vae_slicing,
            "component_levels": dict(self.component_levels),
        }

    def describe(self, device_kind: str = "gpu") -> str:
        """One line: ``llama.cpp on CUDA, flash attention, 4 parallel sequences, K q8_0 / V f16``."""
        return _describe(self, device_kind)

    def _describe(self, device_kind: str) -> str:
        d = self.defaults
        backend = self.device_backend
        where = "the CPU" if device_kind == "cpu" or backend == "cpu" else \
            ("Metal" if backend == "metal" else backend.upper())
        parts = [f"{d.label} on {where}"]
        if d.kind in ("ggml", "llm"):
            parts.append("flash attention" if self.flash else "no flash attention")
        elif not self.flash:
            parts.append("no flash attention (eager attention)")
        if self.sequences > 1:
            parts.append(f"{self.sequences} parallel sequences")
        if self.width and self.height and d.name == "diffusers":
            parts.append(f"{self.width}×{self.height}")
        if self.batch and self.batch > 1 and d.name == "diffusers":
            parts.append(f"{self.batch} images at once")
        if self.beam_width > 1:
            parts.append(f"{self.beam_width} beams")
        if self.cache_type_k or self.cache_type_v:
            parts.append(f"K {self.k_type} / V {self.v_type}")
        if not self.kv_offload:
            parts.append("KV cache in RAM")
        if self.offload == "model":
            parts.append("one component on the GPU at a time")
        if self.text_encoder_device == "cpu":
            parts.append("text encoders on the CPU")
        if self.vae_tiling:
            parts.append("VAE tiling")
        if self.vae_slicing:
            parts.append("VAE slicing")
        for name, level in self.component_levels:
            parts.append(f"{name} at {level}")
        return ", ".join(parts)


@lru_cache(maxsize=1024)
def _describe(profile: RuntimeProfile, device_kind: str) -> str:
    return profile._describe(device_kind)


def parse_resolution(text: str) -> tuple[int, int]:
    """``1024x768`` (or ``1024×768``, ``1024*768``, or one number for a square) as (width, height)."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*(?:[x×*X,]\s*(\d{1,6}))?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a resolution; write it as WIDTHxHEIGHT, e.g. 1024x1024")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    for side in (w, h):
        if not 8 <= side <= MAX_RESOLUTION:
            raise ValueError(f"{text!r}: each side must be between 8 and {MAX_RESOLUTION:,} pixels")
    return w, h


def runtime_for(model_type: str, level: str | None = None, backend_hint: str | None = None) -> str:
    """The runtime a model of ``model_type`` at ``level`` runs under when the user names none.

    LLMs: GGUF levels (upper-case names: ``Q4_K_M``, ``F16``) in llama.cpp, or Ollama where the model names
    it; other levels in transformers. Diffusion and video: diffusers. Speech-to-text: the model's own
    runtime where it names one (CTranslate2, whisper.cpp), else transformers; GGUF levels in whisper.cpp.
    The rest: transformers.
    """
    hint = None
    if backend_hint:
        try:
            hint = runtime_name(backend_hint)
        except ValueError:
            hint = None
    gguf = bool(level) and str(level)[:1].isupper()
    if model_type == "llm":
        if gguf:
            return "ollama" if hint == "ollama" else "llama.cpp"
        return "transformers"
    if model_type in ("text_to_image", "text_to_video"):
        return "diffusers"
    if model_type == "speech_to_text":
        if gguf:
            return "whisper.cpp"
        return hint if hint in ("ctranslate2", "openai-whisper", "transformers") else "transformers"
    return "transformers"


_RUNTIMES_BY_TYPE: dict[str, tuple[str, ...]] = {
    "llm": ("llama.cpp", "ollama", "transformers"),
    "text_to_image": ("diffusers",),
    "text_to_video": ("diffusers",),
    "speech_to_text": ("ctranslate2", "openai-whisper", "whisper.cpp", "transformers"),
}


def runtimes_for(model_type: Any) -> tuple[str, ...]:
    """The runtimes (keys of RUNTIMES) that run a model of ``model_type`` (a ModelType or its value)."""
    return _RUNTIMES_BY_TYPE.get(str(getattr(model_type, "value", model_type)), ("transformers",))


def check_runtime(profile: RuntimeProfile, model_type: Any, level: str | None = None) -> None:
    """A ValueError, in words a user can act on, when the profile's runtime does not run this kind of model
    or does not load ``level`` (llama.cpp loads GGUF levels; transformers does not load them as they are)."""
    if profile.runtime is None:
        return
    kind = str(getattr(model_type, "value", model_type))
    words = {"llm": "language", "text_to_image": "image", "text_to_video": "video", "speech_to_text": "speech-to-text",
             "text_to_speech": "text-to-speech", "embedding": "embedding"}.get(kind, kind)
    allowed = runtimes_for(model_type)
    if profile.runtime not in allowed:
        raise ValueError(f"{RUNTIMES[profile.runtime].label} does not run {words} models; use one of: "
                         f"{', '.join(allowed)}, or leave --runtime out")
    if level is not None and kind == "llm" and not level_suits(profile, level):
        want = "a GGUF level such as Q4_K_M or Q8_0" if profile.defaults.kind == "ggml" else \
            "a level such as bf16, fp16, int8 or nf4"
        raise ValueError(f"{RUNTIMES[profile.runtime].label} does not load {level}; choose {want}, or another runtime")


def level_suits(profile: RuntimeProfile, level: str) -> bool:
    """Whether a runtime the user named loads ``level``: ggml runtimes load GGUF levels (upper-case
    names), the others the rest. A profile without a runtime suits every level."""
    if profile.runtime is None:
        return True
    gguf = str(level)[:1].isupper()
    return gguf if profile.defaults.kind == "ggml" else not gguf


@lru_cache(maxsize=4096)
def resolve(profile: RuntimeProfile | None, model_type: str, level: str | None = None,
            backend_hint: str | None = None) -> RuntimeProfile:
    """``profile`` with its runtime filled in for this model and level."""
    runtime = runtime_for(model_type, level, backend_hint)
    if profile is None:
        return RuntimeProfile(runtime=runtime)
    return profile.with_defaults_of(runtime)


def lighter_settings(model_type: Any, base: RuntimeProfile) -> list[tuple[str, RuntimeProfile]]:
    """Settings that hold less than ``base`` for this kind of model, as (words, profile), lightest last:
    a pipeline's VAE tiling, text encoders on the CPU, one component at a time, then all three; an LLM's
    q8_0 KV cache. For refusals' options and the browser's fit: proposals, never applied by themselves."""
    kind = str(getattr(model_type, "value", model_type))
    out: list[tuple[str, RuntimeProfile]] = []
    if kind in ("text_to_image", "text_to_video"):
        if not base.vae_tiling:
            out.append(("with VAE tiling", replace(base, vae_tiling=True)))
        if base.text_encoder_device != "cpu":
            out.append(("with the text encoders on the CPU", replace(base, text_encoder_device="cpu")))
        if base.offload != "model":
            out.append(("with one component on the GPU at a time", replace(base, offload="model")))
        if len(out) > 1:  # all of them at once
            combined = replace(base, vae_tiling=True, text_encoder_device="cpu", offload="model")
            out.append(("with " + ", ".join(label.removeprefix("with ") for label, _ in out), combined))
    elif kind == "llm" and base.cache_type_k is None and base.cache_type_v is None:
        out.append(("with a q8_0 KV cache", replace(base, cache_type_k="q8_0", cache_type_v="q8_0")))
    return out
