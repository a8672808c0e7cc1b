"""QuantizationStrategy: which levels a model can be loaded at, what each costs, and which fits.

Each candidate carries its estimate (a breakdown in bytes) and a short quality note. Selection
takes the highest quality that fits the target device with the configured headroom, else the best
partial offload (GPU layers), else the CPU, and says which. A preferred level is validated: one
that will not fit comes back with the bytes needed and available, never silently accepted.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

from app.core.estimation import (
    EstimateTerm,
    MemoryEstimate,
    QuantSpec,
    UnknownQuantizationError,
    estimate_embedding,
    resolve_quantization,
    runtime_overhead_bytes,
)
from app.core.hardware.snapshot import HardwareProfile
from app.core.model_spec import ModelMetadata, ModelType
from app.core.pipelines import estimate_diffusion_pipeline, estimate_speech_pipeline, estimate_stages, with_vision
from app.core.runtime_estimate import estimate_llm_run
from app.core.runtime_profile import RuntimeProfile, level_suits
from app.core.runtime_profile import resolve as resolve_profile
from app.core.units import GiB, format_gib, gib

__all__ = [
    "file_level",
    "QuantizationLevel",
    "QuantizationConfig",
    "QuantizationPlan",
    "QuantizationStrategy",
    "PlacementError",
    "Candidate",
    "candidate_levels",
    "estimate_model",
    "quality_of",
    "level_name",
]

_log = logging.getLogger(__name__)


class QuantizationLevel(str, Enum):
    """Levels a model can be loaded at: the seed's six, plus format-specific ones."""

    NONE = "none"
    FLOAT16 = "fp16"
    BFLOAT16 = "bf16"
    INT8 = "8bit"
    INT4 = "4bit"
    INT2 = "2bit"
    FP8 = "fp8"
    NF4 = "nf4"
    GPTQ_INT4 = "gptq-int4"
    AWQ_INT4 = "awq-int4"
    GGUF_F16 = "F16"
    GGUF_Q8_0 = "Q8_0"
    GGUF_Q6_K = "Q6_K"
    GGUF_Q5_K_M = "Q5_K_M"
    GGUF_Q5_K_S = "Q5_K_S"
    GGUF_Q4_K_M = "Q4_K_M"
    GGUF_Q4_K_S = "Q4_K_S"
    GGUF_Q4_0 = "Q4_0"
    GGUF_IQ4_XS = "IQ4_XS"
    GGUF_Q3_K_L = "Q3_K_L"
    GGUF_Q3_K_M = "Q3_K_M"
    GGUF_Q3_K_S = "Q3_K_S"
    GGUF_IQ3_M = "IQ3_M"
    GGUF_IQ3_XXS = "IQ3_XXS"
    GGUF_Q2_K = "Q2_K"
    GGUF_IQ2_M = "IQ2_M"
    GGUF_IQ2_XXS = "IQ2_XXS"
    GGUF_IQ1_M = "IQ1_M"

    @classmethod
    def parse(cls, name: str | QuantizationLevel) -> QuantizationLevel | str:
        """A level from any accepted name (``4bit``, ``int4``, ``q4_k_m`` …); an accepted name
        with no enum member (``IQ4_NL``, ``Q5_1`` …) comes back as its canonical text."""
        if isinstance(name, QuantizationLevel):
            return name
        spec = resolve_quantization(str(name))  # raises UnknownQuantizationError with the valid names
        return _BY_SPEC.get(spec.name, spec.name)

    @property
    def spec(self) -> QuantSpec:
        return resolve_quantization(self.value)


_BY_SPEC: dict[str, QuantizationLevel] = {}
for _level in QuantizationLevel:
    _BY_SPEC.setdefault(resolve_quantization(_level.value).name, _level)


def _spec(level: QuantizationLevel | str | QuantSpec) -> QuantSpec:
    if isinstance(level, QuantSpec):
        return level
    if isinstance(level, QuantizationLevel):
        return level.spec
    return resolve_quantization(level)


# ------------------------------------------------------------------------------------------------
# Quality
# ------------------------------------------------------------------------------------------------

#: Perplexity increase over 16-bit, where published. GGUF figures: llama.cpp's quantize tool
#: (tools/quantize/quantize.cpp, QUANT_OPTIONS, measured on Llama-3-8B; F16 on Mistral-7B).
_PUBLISHED_PPL = {
    "Q8_0": 0.0026, "Q6_K": 0.0217, "Q5_K_M": 0.0569, "Q5_K_S": 0.1049, "Q5_1": 0.1062, "Q5_0": 0.1316,
    "Q4_K_M": 0.1754, "Q4_K_S": 0.2689, "Q4_1": 0.4511, "Q4_0": 0.4685, "Q3_K_L": 0.5562, "Q3_K_M": 0.6569,
    "Q3_K_S": 1.6321, "Q2_K_S": 3.1836, "Q2_K": 3.5199, "F16": 0.0020, "BF16": -0.0050,
}
#: Ordering estimates where no delta is published (bits per weight between published neighbours).
_ORDERING_PPL = {
    "fp32": 0.0, "fp16": 0.0, "bf16": 0.0, "F32": 0.0,
    "fp8": 0.01, "int8": 0.01,
    "gptq-int4": 0.22, "awq-int4": 0.2, "nf4": 0.25, "nf4-dq": 0.26, "int4": 0.25, "fp4": 0.35,
    "IQ4_NL": 0.25, "IQ4_XS": 0.27, "IQ3_M": 0.8, "IQ3_S": 0.9, "IQ3_XS": 1.1, "IQ3_XXS": 1.4,
    "IQ2_M": 2.4, "IQ2_S": 2.9, "IQ2_XS": 3.6, "IQ2_XXS": 4.6, "IQ1_M": 7.0, "IQ1_S": 10.0,
    "int2": 5.0, "TQ2_0": 6.0, "TQ1_0": 8.0, "MXFP4_MOE": 0.2,
}


def quality_of(level: QuantizationLevel | str | QuantSpec) -> tuple[float, str]:
    """(perplexity increase over 16-bit — lower is better, a one-line note with its source)."""
    return _quality(_spec(level).name)


@lru_cache(maxsize=256)
def _quality(name: str) -> tuple[float, str]:
    if name in _PUBLISHED_PPL:
        model = "Mistral-7B" if name in ("F16", "BF16") else "Llama-3-8B"
        # Deltas within measurement noise of 16-bit (BF16's -0.005) rank as no loss.
        note = f"{_PUBLISHED_PPL[name]:+.4f} perplexity on {model} (llama.cpp quantize table)"
        return max(0.0, _PUBLISHED_PPL[name]), note
    if name in _ORDERING_PPL:
        value = _ORDERING_PPL[name]
        notes = {
            "fp32": "full precision", "fp16": "the reference: no loss", "bf16": "the reference: no loss",
            "F32": "full precision",
            "fp8": "near-lossless on recent GPUs (FP8 E4M3 needs compute capability 8.9+ for speed)",
            "int8": "LLM.int8(): no measurable loss at 6.7B+ (Dettmers et al. 2022)",
            "nf4": "NF4 matches 16-bit fine-tuning quality (QLoRA, Dettmers et al. 2023); some loss at inference",
            "int4": "bitsandbytes NF4: some loss, similar to a good 4-bit GGUF",
        }
        return value, notes.get(name, "no published delta; ordered by bits per weight")
    return 50.0, "quality unknown"


# ------------------------------------------------------------------------------------------------
# Candidates and estimates
# ------------------------------------------------------------------------------------------------

_GGUF_CANDIDATES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_M", "Q2_K", "IQ2_M")
_TRANSFORMERS_CANDIDATES = ("bf16", "fp8", "int8", "nf4", "nf4-dq")
_DIFFUSION_CANDIDATES = ("fp16", "bf16", "fp8")
_SPEECH_CANDIDATES = ("fp16", "int8", "fp32")


def candidate_levels(metadata: ModelMetadata) -> tuple[str, ...]:
    """The levels this model's runtime can load, best quality first (memoised per metadata)."""
    cache = metadata.estimate_cache
    levels = cache.get("levels")
    if levels is None:
        levels = cache["levels"] = _candidate_levels(metadata)
    return levels


def _candidate_levels(metadata: ModelMetadata) -> tuple[str, ...]:
    own = file_level(metadata)
    if own is not None:  # a GGUF file loads as it is stored
        return (own,)
    runtime = (metadata.runtime_backend or "").lower()
    fmt = (metadata.preferred_runtime_format or "").lower()
    if metadata.model_type in (ModelType.LLM,):
        llm_levels: list[str] = []
        native = "fp16" if (metadata.native_dtype or "").lower() in ("fp16", "float16", "fp32") else "bf16"
        if runtime == "llama.cpp" or fmt == "gguf" or "gguf" in metadata.formats:
            llm_levels += ["F16", *_GGUF_CANDIDATES]
        if runtime != "llama.cpp":
            llm_levels += [native, *_TRANSFORMERS_CANDIDATES[1:]]
        if not metadata.supports_quantization:
            llm_levels = [lv for lv in llm_levels if lv in ("F16", "fp16", "bf16")]
        return tuple(sorted(dict.fromkeys(llm_levels), key=lambda lv: quality_of(lv)[0]))
    levels: tuple[str, ...]
    if metadata.model_type in (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO):
        levels = _DIFFUSION_CANDIDATES
    elif metadata.model_type in (ModelType.SPEECH_TO_TEXT,):
        levels = _SPEECH_CANDIDATES
    elif metadata.model_type == ModelType.EMBEDDING:
        levels = ("fp16", "fp32", "int8")
    else:
        levels = ("fp16", "fp32")
    # Best quality first; among equals, the smaller first (the list order above).
    return tuple(sorted(levels, key=lambda lv: quality_of(lv)[0]))


def _diffusion_family(metadata: ModelMetadata) -> str:
    text = f"{metadata.id} {metadata.name}".lower()
    for key, fam in (("flux", "flux"), ("pixart", "pixart"), ("xl", "sdxl"), ("3.5", "sd3"),
                     ("stable-diffusion-3", "sd3"), ("sd3", "sd3"),
                     ("v1-5", "sd15"), ("1.5", "sd15"), ("wan", "wan"), ("hunyuan", "hunyuan"), ("ltx", "ltx")):
        if key in text:
            return fam
    return "sdxl"


class EstimateUnavailable(ValueError):
    """A model with neither a parameter count nor a size cannot be estimated."""


_DEFAULT_PROFILE = RuntimeProfile()


def estimate_model(
    metadata: ModelMetadata,
    level: QuantizationLevel | str | QuantSpec,
    *,
    context: int | None = None,
    kv_dtype: str = "f16",
    batch: int | None = None,
    device_kind: str = "gpu",
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    profile: RuntimeProfile | None = None,
) -> MemoryEstimate:
    """The memory a model needs at a level, by model type, under ``profile`` (None: the runtime this
    model and level run under, with its defaults). Context defaults to 4096 tokens (or the model's maximum
    when smaller). ``kv_dtype``, ``batch``, ``width``, ``height`` and ``frames`` fill the profile's fields
    it leaves unset. Results are memoised on the metadata object."""
    spec = _spec(level)
    if profile is None and kv_dtype == "f16" and batch is None and width is None and height is None and frames is None:
        profile = _DEFAULT_PROFILE  # the common call: no merging, and cache keys that hit on identity
    else:
        profile = merged_profile(profile, kv_dtype=kv_dtype, batch=batch, width=width, height=height, frames=frames)
    key = (spec.name, context, device_kind, None if profile is _DEFAULT_PROFILE else profile)
    cache = metadata.estimate_cache
    est = cache.get(key)
    if est is None:
        est = cache[key] = _estimate_model(metadata, spec, context=context, device_kind=device_kind, profile=profile)
    return est


@lru_cache(maxsize=1024)
def merged_profile(profile: RuntimeProfile | None, *, kv_dtype: str = "f16", batch: int | None = None,
                   width: int | None = None, height: int | None = None,
                   frames: int | None = None) -> RuntimeProfile:
    """``profile`` with the older keyword settings filled into the fields it leaves unset (memoised: the same
    settings give the same profile object, so estimate caches hit on identity)."""
    p = profile or _DEFAULT_PROFILE
    updates: dict[str, Any] = {}
    if kv_dtype and kv_dtype != "f16":
        if p.cache_type_k is None:
            updates["cache_type_k"] = kv_dtype
        if p.cache_type_v is None:
            updates["cache_type_v"] = kv_dtype
    for name, value in (("batch", batch), ("width", width), ("height", height), ("frames", frames)):
        if value is not None and getattr(p, name) is None:
            updates[name] = value
    return dataclasses.replace(p, **updates) if updates else p


def _estimate_model(metadata: ModelMetadata, spec: QuantSpec, *, context: int | None, device_kind: str,
                    profile: RuntimeProfile) -> MemoryEstimate:
    params = metadata.parameter_count
    cache = metadata.estimate_cache
    arch = cache.get("arch", False)
    if arch is False:  # built (and validated) once per metadata; the cache is cleared when a field changes
        arch = cache["arch"] = metadata.estimation_architecture
    if params is None and arch is None:
        raise EstimateUnavailable(
            f"{metadata.name} ({metadata.id}) cannot be estimated: it has no parameter count or size; add its "
            "parameter count (from the model card) to the model, or scan its weights with `modeldeck scan PATH`")
    mt = metadata.model_type
    rp = resolve_profile(profile, mt.value, spec.name, metadata.runtime_backend)
    components = metadata.architecture.components if metadata.architecture else None
    if mt == ModelType.LLM:
        ctx = 4096 if context is None else context
        if arch is not None and arch.max_context:
            ctx = min(ctx, arch.max_context)
        est = estimate_llm_run(spec, rp, parameters=params, architecture=arch, context=ctx, device_kind=device_kind,
                               native_dtype=metadata.native_dtype)
        if components and components.get("vision_encoder"):
            est = with_vision(est, components["vision_encoder"], rp, device_kind)
    elif mt in (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO):
        video = mt == ModelType.TEXT_TO_VIDEO
        short = metadata.default_resolution or (480 if video else 1024)
        w = rp.width or ((short * 16 // 9 // 16 * 16) if video else short)
        h = rp.height or short
        est = estimate_diffusion_pipeline(spec, rp, parameters=params or 0, components=components,
                                          family=_diffusion_family(metadata), width=w, height=h,
                                          frames=(rp.frames or 81) if video else 1, device_kind=device_kind)
    elif mt == ModelType.SPEECH_TO_TEXT:
        est = estimate_speech_pipeline(spec, rp, parameters=params or 0, architecture=arch, components=components,
                                       encoder_layers=metadata.architecture.encoder_layers if metadata.architecture
                                       else None, device_kind=device_kind)
    elif mt == ModelType.EMBEDDING:
        est = estimate_embedding(spec, parameters=params or 0, architecture=arch, batch=rp.batch or 32,
                                 device_kind=device_kind)
        est = dataclasses.replace(est, runtime=rp.describe(device_kind))
    else:
        est = estimate_stages(spec, rp, parameters=params or 0, components=components, device_kind=device_kind)
    # A file read from disk at this very level: its header bytes are exact.
    if metadata.weight_bytes is not None and metadata.file_type and _same_level(metadata.file_type, spec):
        est = _with_exact_weights(est, metadata)
    if metadata.approximate and not est.approximate:
        est = dataclasses.replace(est, approximate=True)
    return est


def file_level(metadata: ModelMetadata) -> str | None:
    """The level a model's GGUF file is stored at (a runtime loads it as it is); None for a catalog
    model or a format that is quantized at load time."""
    if not metadata.path or not metadata.file_type or metadata.preferred_runtime_format != "gguf":
        return None
    try:
        return resolve_quantization(metadata.file_type).name
    except UnknownQuantizationError:
        return None


def _same_level(file_type: str, spec: QuantSpec) -> bool:
    try:
        return resolve_quantization(file_type).name == spec.name
    except UnknownQuantizationError:
        return False


def _with_exact_weights(est: MemoryEstimate, metadata: ModelMetadata) -> MemoryEstimate:
    """The file's own weight bytes, less what the runtime keeps in RAM (as modelled) where it does."""
    w = metadata.weight_bytes or 0
    modelled = sum(b for _, b in est.weights_by_type)
    elsewhere = max(0, modelled - est.weights.bytes) if modelled else 0
    text = f"{format_gib(w, 2)} read from the file header{'' if metadata.weights_exact else ' (file size)'}"
    if elsewhere:
        text += f"; {format_gib(elsewhere, 2)} of it kept in RAM"
    return dataclasses.replace(est, weights=EstimateTerm(max(0, w - elsewhere), text),
                               approximate=not metadata.weights_exact)


# ------------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------------


class PlacementError(ValueError):
    """A preferred level that does not fit: carries what was needed and what was available."""

    def __init__(self, message: str, *, needed_bytes: int, available_bytes: int, level: str, device: str) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        self.level = level
        self.device = device


@dataclass(frozen=True, slots=True)
class Candidate:
    """One level with its estimate and whether it fits."""

    quantization: str
    estimate: MemoryEstimate
    fits: bool
    quality_ppl: float
    quality_note: str


@dataclass(frozen=True, slots=True)
class QuantizationPlan:
    """Where and how a model would load, and the alternatives considered."""

    model_id: str
    quantization: str
    estimate: MemoryEstimate
    device: str
    #: "gpu" (all on one device), "split" (layers across several GPUs), "partial" (gpu_layers on
    #: the GPU, the rest in RAM), "cpu", "none".
    placement: str
    fits: bool
    gpu_layers: int | None
    available_bytes: int
    needed_bytes: int
    headroom_bytes: int
    reason: str
    alternatives: tuple[Candidate, ...] = field(default=())
    #: For a split: how many layers go on each GPU, e.g. (("cuda:0", 46), ("cuda:1", 34)).
    layer_split: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The contract's plan document."""
        return {
            "model_id": self.model_id,
            "quantization": self.quantization,
            "estimate": self.estimate.to_dict(),
            "device": self.device,
            "placement": self.placement,
            "fits": self.fits,
            "gpu_layers": self.gpu_layers,
            "headroom_bytes": self.headroom_bytes,
            "available_bytes": self.available_bytes,
            "needed_bytes": self.needed_bytes,
            "reason": self.reason,
            "layer_split": {device: n for device, n in self.layer_split},
            "alternatives": [
                {"quantization": c.quantization, "total_bytes": c.estimate.total_bytes, "fits": c.fits,
                 "weights_bytes": c.estimate.weights_bytes, "quality_note": c.quality_note}
                for c in self.alternatives
            ],
        }


@dataclass(frozen=True, slots=True)
class QuantizationConfig:
    """The seed's result type: a level, a description and its estimated memory in GiB."""

    level: QuantizationLevel | str
    description: str
    estimated_memory_gb: float
    requires_calibration: bool = False
    estimate: MemoryEstimate | None = None
    plan: QuantizationPlan | None = None


class QuantizationStrategy:
    """Selects the level and placement for a model on the current hardware.

    ``gpu_headroom_bytes`` is kept free on a GPU (llama.cpp's ``--fit`` aims for a 1 GiB margin);
    ``ram_headroom_bytes`` is left to the operating system and other programs.
    """

    def __init__(self, *, gpu_headroom_bytes: int = 1 * GiB, ram_headroom_bytes: int = 2 * GiB) -> None:
        self.gpu_headroom_bytes = gpu_headroom_bytes
        self.ram_headroom_bytes = ram_headroom_bytes
        self.logger = _log

    def usable_bytes(self, hardware: HardwareProfile, model_id: str | None = None) -> dict[str, int]:
        """Bytes a model may use per device now: free minus the headroom kept back."""
        out = {g.device_id: max(0, g.free_bytes - self.gpu_headroom_bytes)
               for g in hardware.gpus if not g.lost and g.mig_parent is None}
        out["cpu"] = max(0, hardware.host.available_bytes - self.ram_headroom_bytes)
        return out

    # --- the seed's entry point ----------------------------------------------------------------
    def select_quantization(
        self,
        model_size_gb: float | ModelMetadata,
        hardware: HardwareProfile,
        preferred_level: QuantizationLevel | str | None = None,
        **kw: Any,
    ) -> QuantizationConfig:
        """The seed's call: a size in GiB-ish billions (or a ``ModelMetadata``) and a profile.

        A preferred level that does not fit raises :class:`PlacementError` with the bytes
        needed and available.
        """
        if isinstance(model_size_gb, ModelMetadata):
            metadata = model_size_gb
        else:
            metadata = ModelMetadata(name=f"{model_size_gb:g} B model", provider="other", model_type=ModelType.LLM,
                                     size_gb=float(model_size_gb), model_id=f"size:{model_size_gb:g}",
                                     runtime_backend="transformers", origin="user")
        plan = self.plan(metadata, hardware, preferred=preferred_level, **kw)
        level = QuantizationLevel.parse(plan.quantization)
        spec = resolve_quantization(plan.quantization)
        return QuantizationConfig(
            level=level,
            description=f"{spec.description}: {plan.reason}",
            estimated_memory_gb=gib(plan.estimate.total_bytes),
            requires_calibration=spec.name in ("int2", "gptq-int4", "awq-int4"),
            estimate=plan.estimate,
            plan=plan,
        )

    # --- planning ------------------------------------------------------------------------------
    def plan(
        self,
        metadata: ModelMetadata,
        hardware: HardwareProfile,
        *,
        preferred: QuantizationLevel | str | None = None,
        device: str | None = None,
        context: int | None = None,
        kv_dtype: str = "f16",
        batch: int | None = None,
        free_overrides: dict[str, int] | None = None,
        headroom: bool = True,
        profile: RuntimeProfile | None = None,
    ) -> QuantizationPlan:
        """Choose level and placement. ``device`` is ``cuda:N``, ``cpu`` or None (best GPU).

        ``free_overrides`` replaces a device's free bytes (the allocator passes what its ledger
        says is really available); with ``headroom=False`` nothing more is kept back (the ledger
        already subtracted its safety reserve).
        """
        gpus = [g for g in hardware.gpus if not g.lost and g.mig_parent is None]
        if metadata.compute_capability_min:
            gpus = [g for g in gpus if g.compute_capability and g.compute_capability >= metadata.compute_capability_min]
        overrides = free_overrides or {}

        def free_of(dev: str) -> int:
            if dev in overrides:
                return overrides[dev]
            if dev == "cpu":
                return hardware.host.available_bytes
            for g in gpus:
                if g.device_id == dev:
                    return g.free_bytes
            return 0

        gpu_keep = self.gpu_headroom_bytes if headroom else 0
        ram_avail = max(0, free_of("cpu") - (self.ram_headroom_bytes if headroom else 0))
        if device is not None and device != "cpu" and device not in {g.device_id for g in gpus}:
            known = ", ".join([g.device_id for g in gpus] + ["cpu"])
            raise PlacementError(f"no usable device {device!r}; choose one of: {known}", needed_bytes=0,
                                 available_bytes=0, level=str(preferred or ""), device=device)
        targets = [device] if device else sorted((g.device_id for g in gpus), key=free_of, reverse=True)[:1]
        target = targets[0] if targets else "cpu"
        on_cpu = target == "cpu"
        avail = ram_avail if on_cpu else max(0, free_of(target) - gpu_keep)
        device_kind = "cpu" if on_cpu else "gpu"

        levels = candidate_levels(metadata)
        if profile is not None:
            levels = tuple(lv for lv in levels if level_suits(profile, lv)) or levels
        target_gpu = next((g for g in gpus if g.device_id == target), None)
        if target_gpu is None or (target_gpu.compute_capability or (0, 0)) < (8, 9):
            levels = tuple(lv for lv in levels if lv != "fp8")  # FP8 kernels need Ada/Hopper or newer
        if preferred is not None:
            pref = _spec(preferred if not isinstance(preferred, QuantizationLevel) else preferred.value).name
            if pref not in levels:
                levels = (pref, *levels)
        cache = metadata.estimate_cache
        estimates = {}
        plain = profile is None and kv_dtype == "f16" and batch is None  # the cache key estimate_model uses then
        for lv in levels:
            est = cache.get((lv, context, device_kind, None)) if plain else None
            estimates[lv] = est if est is not None else estimate_model(
                metadata, lv, device_kind=device_kind, context=context, kv_dtype=kv_dtype, batch=batch, profile=profile)
        cands = tuple(
            Candidate(lv, est, est.total_bytes <= avail, *_quality(lv)) for lv, est in estimates.items()
        )

        def finish(level: str, placement: str, dev: str, gpu_layers: int | None, needed: int, available: int,
                   reason: str) -> QuantizationPlan:
            return QuantizationPlan(
                model_id=metadata.id, quantization=level, estimate=estimates[level], device=dev,
                placement=placement, fits=placement in ("gpu", "cpu", "split"), gpu_layers=gpu_layers,
                available_bytes=available, needed_bytes=needed, headroom_bytes=available - needed,
                reason=reason, alternatives=cands,
            )

        arch = cache.get("arch", False)
        if arch is False:
            arch = cache["arch"] = metadata.estimation_architecture
        layers: int | None = arch.layers if arch else None
        full_layers = None if on_cpu else layers

        if preferred is not None:
            est = estimates[pref]
            if est.total_bytes <= avail:
                return finish(pref, "cpu" if on_cpu else "gpu", target, 0 if on_cpu and layers else full_layers,
                              est.total_bytes, avail, f"{pref} fits on {target} as requested")
            raise PlacementError(
                f"{metadata.id} at {pref} needs {format_gib(est.total_bytes, 2)} but {target} has "
                f"{format_gib(avail, 2)} available"
                + (f" (after keeping {format_gib(self.ram_headroom_bytes if on_cpu else gpu_keep)} free)"
                   if headroom else "")
                + "; "
                "choose a smaller level, a shorter context, or free memory",
                needed_bytes=est.total_bytes, available_bytes=avail, level=pref, device=target,
            )

        # Best quality first: whole on the target device, or else spread over several GPUs
        # (llama.cpp's --tensor-split: each GPU holds its layers plus its own compute buffer and
        # runtime) — a better level split across two cards beats a worse one on one card.
        can_split = device is None and bool(layers) and len(gpus) > 1
        rooms = {d: max(0, free_of(d) - gpu_keep)
                 for d in sorted((g.device_id for g in gpus), key=free_of, reverse=True)} if can_split else {}
        for c in cands:
            if c.fits:
                spare = format_gib(avail - c.estimate.total_bytes)
                reason = (f"runs on the CPU: {c.quantization} is the best level that fits in RAM with {spare} to spare"
                          if on_cpu
                          else f"{c.quantization} is the best level that fits on {target} with {spare} to spare")
                return finish(c.quantization, "cpu" if on_cpu else "gpu", target,
                              0 if on_cpu and layers else full_layers, c.estimate.total_bytes, avail, reason)
            split = self._split_layers(c.estimate, layers, rooms) if can_split and layers else ()
            if split:
                used = [d for d, _ in split]
                extra = (len(used) - 1) * (c.estimate.compute_bytes + c.estimate.overhead_bytes)
                shares = ", ".join(f"{n} on {d}" for d, n in split)
                plan = finish(c.quantization, "split", "+".join(used), layers, c.estimate.total_bytes + extra,
                              sum(rooms[d] for d in used),
                              f"{c.quantization} is the best level that fits across {len(used)} GPUs: "
                              f"{shares} of {layers} layers")
                return dataclasses.replace(plan, layer_split=split)

        # Nothing fits whole on the GPU: split layers between GPU and RAM where the model has layers.
        if not on_cpu and layers:
            # The best quality that keeps at least half the layers on the GPU; failing that, the most
            # layers at a good level (perplexity +0.3 or better); failing that, the most layers.
            options = []
            for c in cands:
                n = self._gpu_layers(c.estimate, layers, avail)
                if n > 0 and self._cpu_share(c.estimate, layers, n) <= ram_avail:
                    options.append((c, n))
            best: tuple[str, int] | None = None
            half = [(c, n) for c, n in options if n >= layers / 2]
            good = [(c, n) for c, n in options if c.quality_ppl <= 0.3]
            if half:
                best = (half[0][0].quantization, half[0][1])
            elif options:
                c, n = max(good or options, key=lambda o: o[1])
                best = (c.quantization, n)
            if best is not None:
                level, n = best
                est = estimates[level]
                return finish(level, "partial", f"{target}+cpu", n, est.total_bytes, avail + ram_avail,
                              f"{level} does not fit {target} whole: {n} of {layers} layers on the GPU, "
                              f"the rest in RAM (slower)")
        # Then the CPU alone.
        cpu_est = {lv: estimate_model(metadata, lv, device_kind="cpu", context=context, kv_dtype=kv_dtype,
                                      batch=batch, profile=profile)
                   for lv in levels}
        for c in cands:
            est = cpu_est[c.quantization]
            if est.total_bytes <= ram_avail:
                estimates[c.quantization] = est
                return QuantizationPlan(
                    model_id=metadata.id, quantization=c.quantization, estimate=est, device="cpu", placement="cpu",
                    fits=True, gpu_layers=0 if layers else None, available_bytes=ram_avail,
                    needed_bytes=est.total_bytes, headroom_bytes=ram_avail - est.total_bytes,
                    reason=(f"no GPU has room; {c.quantization} runs on the CPU from RAM" if gpus or on_cpu
                            else f"no GPU; {c.quantization} runs on the CPU from RAM"),
                    alternatives=cands,
                )
        smallest = cands[-1]
        return finish(smallest.quantization, "none", target, 0 if layers else None, smallest.estimate.total_bytes,
                      avail, f"does not fit: even {smallest.quantization} needs "
                             f"{format_gib(smallest.estimate.total_bytes, 2)}; {target} has {format_gib(avail, 2)} "
                             f"and RAM {format_gib(ram_avail, 2)} available")

    def _split_layers(self, est: MemoryEstimate, layers: int, rooms: dict[str, int]) -> tuple[tuple[str, int], ...]:
        """Layers per GPU, roomiest first, using as few GPUs as possible; () when they don't fit."""
        per = self._per_layer(est, layers)
        fixed = est.compute_bytes + est.overhead_bytes
        out: list[tuple[str, int]] = []
        left = layers
        for device, room in rooms.items():
            if left <= 0:
                break
            n = min(left, max(0, (room - fixed) // per)) if per > 0 else left
            if n > 0:
                out.append((device, int(n)))
                left -= n
        return tuple(out) if left <= 0 and len(out) > 1 else ()

    @staticmethod
    def _per_layer(est: MemoryEstimate, layers: int) -> int:
        return (est.weights_bytes + est.kv_cache_bytes) // max(1, layers)

    def _gpu_layers(self, est: MemoryEstimate, layers: int, avail: int) -> int:
        fixed = est.compute_bytes + est.overhead_bytes
        per = self._per_layer(est, layers)
        if per <= 0:
            return layers
        return max(0, min(layers, (avail - fixed) // per))

    def _cpu_share(self, est: MemoryEstimate, layers: int, gpu_layers: int) -> int:
        return self._per_layer(est, layers) * (layers - gpu_layers) + runtime_overhead_bytes("cpu")[0]



def _min_level(metadata: ModelMetadata, levels: tuple[str, ...]) -> str:
    """The smallest level still worth running: a good 4-bit for LLMs, else the smallest candidate."""
    for good in ("Q4_K_M", "nf4", "int8", "fp8"):
        if good in levels:
            return good
    return levels[-1]


def fill_requirements(metadata: ModelMetadata) -> ModelMetadata:
    """The seed's GiB requirement fields, from estimates (4096-token context for LLMs).

    min_vram_gb: the total at the smallest good level; recommended_vram_gb: at the best level;
    RAM figures: the weights at those levels plus the CPU runtime footprint. Fields already set
    are kept.
    """
    if metadata.parameter_count is None:
        return metadata
    levels = candidate_levels(metadata)
    if not metadata.supports_quantization:
        levels = levels[:1]
    best, low = levels[0], _min_level(metadata, levels)
    lo_est, hi_est = estimate_model(metadata, low), estimate_model(metadata, best)
    lo_est, hi_est = (lo_est, hi_est) if lo_est.total_bytes <= hi_est.total_bytes else (hi_est, lo_est)
    cpu = runtime_overhead_bytes("cpu")[0]
    values = {
        "min_vram_gb": _gib_up(lo_est.total_bytes),
        "recommended_vram_gb": _gib_up(hi_est.total_bytes),
        "min_ram_gb": _gib_up(lo_est.weights_bytes + cpu),
        "recommended_ram_gb": _gib_up(hi_est.weights_bytes + cpu),
    }
    update = {k: v for k, v in values.items() if getattr(metadata, k) is None}
    return metadata.model_copy(update=update) if update else metadata


def _gib_up(n_bytes: int) -> float:
    return float(f"{gib(n_bytes) + 0.005:.2f}")


def level_name(level: QuantizationLevel | str | QuantSpec) -> str:
    """The one canonical name of a level, whatever name it was given by (``4bit``, ``int4``,
    ``q4_k_m``, ``QuantizationLevel.INT4``, ``Q5_1`` …); raises UnknownQuantizationError."""
    return _spec(level).name
