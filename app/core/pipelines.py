"""Models made of parts: diffusion pipelines, speech encoder–decoders, multi-stage TTS.

A pipeline's memory is its components' weights (each at its own level, on its own device) plus the
working memory of the phase that needs most, not the sum of every phase: a diffusion pipeline encodes
the prompt, denoises, then decodes with the VAE, one after the other. With ``offload="model"``
(diffusers' ``enable_model_cpu_offload``) only the running component is on the GPU, so the peak is
the largest phase's weights plus its working memory.

Where the numbers come from:
- denoising activations: per latent pixel per pass, measured in diffusers for SDXL and FLUX.1
  (``_MEASURED_PER_LATENT_PIXEL``), else ComfyUI's ``memory_required`` rule (comfy/model_base.py) scaled by
  diffusers' measured ratio to it; classifier-free guidance runs the conditional and unconditional passes
  as one batch (SD 1.5, SDXL, SD 3; FLUX.1 and HunyuanVideo are guidance-distilled and run one pass).
- VAE decode: the decoder's last blocks run at full resolution with 256 channels going into 128 (the
  AutoencoderKL of SD, SDXL, SD 3 and FLUX.1: block_out_channels 128, 256, 512, 512). A ResNet block
  keeps its input, its normalised copy and the activation alive at once: 3 × 256 channels per pixel per
  image. SDXL's VAE is upcast to fp32 for decoding (its config has force_upcast: true), so 4 bytes per value
  and a second copy of its weights in fp32. VAE tiling decodes 512-pixel tiles (diffusers' tile size).
- Whisper: a 30 s window is 1,500 encoder frames; the decoder holds cross-attention keys and values for the
  1,500 frames (once per beam where the runtime repeats the encoder output) and a self-attention cache
  (see ``estimate_speech_pipeline``); faster-whisper's benchmark (large-v2, 1 and 8 windows at once) puts
  the memory per extra window at the cross-attention term within 5%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.core.estimation import (
    Architecture,
    ComponentEstimate,
    EstimateTerm,
    MemoryEstimate,
    PhaseEstimate,
    QuantSpec,
    _check_parameters,
    resolve_quantization,
)
from app.core.runtime_estimate import device_overhead
from app.core.runtime_profile import RuntimeProfile
from app.core.units import MiB, format_gib

__all__ = ["Part", "role_of", "with_vision", "estimate_diffusion_pipeline", "estimate_speech_pipeline",
           "estimate_stages", "DIFFUSION_FACTORS", "GUIDANCE_DISTILLED"]

#: ComfyUI's memory_usage_factor per family (comfy/supported_models.py): SD 1.5 1.0, SDXL 0.8, Flux 2.8,
#: HunyuanVideo 1.8, Wan 0.9; SD 3 1.2; the rest ComfyUI's base value 2.0.
DIFFUSION_FACTORS = {"sd15": 1.0, "sdxl": 0.8, "sd3": 1.2, "flux": 2.8, "hunyuan": 1.8, "wan": 0.9}
#: Families that run one denoising pass per step (guidance distilled), not two.
GUIDANCE_DISTILLED = frozenset({"flux", "hunyuan"})
#: Channels alive per pixel at the VAE decoder's peak (3 × 256), and diffusers' VAE tile in pixels.
_VAE_LIVE_CHANNELS = 3 * 256
_VAE_TILE = 512


#: Working memory of the denoiser per latent pixel per pass at 16 bits, measured in diffusers: SDXL from the
#: Hugging Face SDXL blog (fp16, 4 images at 1024², VAE slicing: 15.40 GB peak less 6.94 GB of weights over
#: 8 × 128² latent pixels); FLUX.1-dev from the diffusers quantization blog (bf16, 1024²: 38.83 GB peak
#: less 33.77 GB of weights over 128² latent pixels). Other families: ComfyUI's rule (2 B × 0.01 ×
#: memory_usage_factor MiB), times 3.85 for UNets (the ratio of diffusers' measured SDXL figure to ComfyUI's SDXL
#: rule); transformer families patchify the latent and keep the rule as it is.
_MEASURED_PER_LATENT_PIXEL = {
    "sdxl": (64_550, "measured in diffusers, SDXL blog"),
    "flux": (309_264, "measured in diffusers, FLUX.1-dev quantization blog"),
}
_DIFFUSERS_OVER_COMFY = 3.85


#: UNet families, whose working memory in diffusers scales from ComfyUI's rule as SDXL's measured figure does.
#: Transformer (DiT) families patchify the latent and scale differently: ComfyUI's rule as it is.
_UNET_FAMILIES = frozenset({"sd15", "sd2", "sdxl"})


def denoise_bytes_per_latent_pixel(family: str) -> tuple[int, str]:
    """(bytes, source) of denoising working memory per latent pixel per pass, at 16 bits."""
    if family in _MEASURED_PER_LATENT_PIXEL:
        return _MEASURED_PER_LATENT_PIXEL[family]
    factor = DIFFUSION_FACTORS.get(family, 2.0)
    if family in _UNET_FAMILIES:
        return (int(2 * 0.01 * factor * MiB * _DIFFUSERS_OVER_COMFY),
                f"ComfyUI's rule × {_DIFFUSERS_OVER_COMFY}, as measured for SDXL")
    return int(2 * 0.01 * factor * MiB), "ComfyUI's rule"


def role_of(name: str) -> str:
    """What a component does, from its folder name."""
    key = name.lower()
    for prefix, role in (("unet", "denoiser"), ("transformer", "denoiser"), ("denoiser", "denoiser"),
                         ("text_encoder", "text encoder"), ("vae", "VAE"), ("vision", "vision encoder"),
                         ("encoder", "encoder"), ("decoder", "decoder"), ("codec", "codec"), ("hifigan", "vocoder")):
        if key.startswith(prefix):
            return role
    return "stage"


@dataclass(frozen=True, slots=True)
class Part:
    """A component as estimation sees it."""

    name: str
    parameters: int
    level: QuantSpec
    device: str

    @property
    def bytes(self) -> int:
        return int(self.parameters * _bits(self.level) / 8)

    def estimate(self) -> ComponentEstimate:
        return ComponentEstimate(self.name, role_of(self.name), self.parameters, self.level.name, self.device,
                                 self.bytes)


def _bits(q: QuantSpec) -> float:
    if q.kind in ("float", "linear"):
        return q.bits
    return q.bits + 0.5 if q.bits < 16 else q.bits  # GGUF presets keep some tensors at higher precision


_SIXTEEN = resolve_quantization("fp16")


def _parts(components: dict[str, int] | None, parameters: int, level: QuantSpec, *, main: str,
           text_device: str, levels: tuple[tuple[str, str], ...] = ()) -> list[Part]:
    """The components at their levels: the main part (the denoiser) at ``level``; text encoders and the VAE
    at 16 bits unless the level is a float level (then they follow it), text encoders on ``text_device``;
    ``levels`` names a component's own level (a T5 encoder loaded in 8 bits)."""
    _check_parameters(parameters)
    comps = dict(components or {})
    if not comps:
        comps = {main: parameters}
    follow = level if level.kind == "float" else _SIXTEEN
    own = {name: resolve_quantization(lv) for name, lv in levels}
    out = []
    for name, n in comps.items():
        role = role_of(name)
        lv = own.get(name) or (level if role in ("denoiser", "stage", "encoder", "decoder") else follow)
        device = text_device if role == "text encoder" else "gpu"
        out.append(Part(name, int(n), lv, device))
    return out


def _peak(parts: list[Part], phases: list[tuple[str, tuple[str, ...], int, str]], offload: bool,
          device_kind: str, profile: RuntimeProfile, level: QuantSpec, approximate: bool,
          notes: tuple[str, ...] = ()) -> MemoryEstimate:
    """Weights, the largest phase's working memory, overhead and host RAM from parts and phases."""
    on_device = [p for p in parts if device_kind == "cpu" or p.device == "gpu"]
    host_parts = [] if device_kind == "cpu" else [p for p in parts if p.device != "gpu"]
    phase_rows = []
    for name, uses, working, text in phases:
        # With model offload, accelerate's hook moves the previous component out before the next one runs
        # (diffusers hooks the VAE's decode too, with apply_forward_hook): one component at a time.
        resident = [p for p in on_device if p.name in uses] if offload else on_device
        phase_rows.append(PhaseEstimate(name, uses, working, sum(p.bytes for p in resident) + working, text))
    top = max(phase_rows, key=lambda p: p.peak_bytes) if phase_rows else None
    if offload and top is not None:
        resident = [p for p in on_device if p.name in top.components]
        others = [p for p in on_device if p not in resident]
        host_parts += others
        w = sum(p.bytes for p in resident)
        w_text = (f"{', '.join(p.name for p in resident)} for the {top.name} phase: {format_gib(w, 2)} "
                  "(one component on the GPU at a time)")
    else:
        w = sum(p.bytes for p in on_device)
        w_text = " + ".join(f"{p.name} {format_gib(p.bytes, 2)}" for p in on_device) + \
            (f" at {level.name}" if len({p.level.name for p in on_device}) == 1 else "")
    working = top.working_bytes if top else 0
    c_text = f"the {top.name} phase needs most: {top.explanation}" if top else "no working memory modelled"
    host = sum(p.bytes for p in host_parts)
    h_text = ("; ".join(f"{p.name} {format_gib(p.bytes, 2)} in RAM" for p in host_parts)
              if host_parts else "nothing held in RAM beside the device's share")
    ov = device_overhead(profile, device_kind)
    return MemoryEstimate(
        level.name, EstimateTerm(w, w_text), EstimateTerm(0, "no KV cache between runs"),
        EstimateTerm(working, c_text), EstimateTerm(*ov), ((level.name.upper(), w),), approximate=approximate,
        notes=notes, host=EstimateTerm(host, h_text), components=tuple(p.estimate() for p in parts),
        phases=tuple(phase_rows), runtime=profile.describe(device_kind))


def estimate_diffusion_pipeline(
    quant: QuantSpec | str, profile: RuntimeProfile, *, parameters: int, components: dict[str, int] | None,
    family: str, width: int, height: int, frames: int = 1, device_kind: str = "gpu",
) -> MemoryEstimate:
    """A text-to-image or text-to-video pipeline: encode, denoise, decode."""
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    images = profile.images
    parts = _parts(components, parameters, q, main="denoiser", text_device=profile.text_encoder_device,
                   levels=profile.component_levels)
    dtype = 4 if q.bits > 16 else 2
    # Video VAEs compress time 4× and space 8× (Wan, HunyuanVideo); LTX-Video's 8× and 32× (its paper's 1:192).
    t_down, s_down = (8, 32) if family == "ltx" else (4, 8)
    latent_frames = (max(1, frames) - 1) // t_down + 1
    passes = 1 if family in GUIDANCE_DISTILLED else 2
    lh, lw = max(1, height // s_down), max(1, width // s_down)
    area = images * passes * latent_frames * lh * lw
    per_px, source = denoise_bytes_per_latent_pixel(family)
    denoise = int(area * per_px * dtype / 2)
    scores = 0
    if not profile.flash:  # eager attention holds each layer's scores: 10 heads over the first attention level
        tokens = max(1, lh * lw * latent_frames // (1 if family in ("sd15", "ltx") else 4))
        scores = images * passes * 10 * tokens * tokens * dtype
        denoise += scores
    denoise_text = (f"latent {lw}×{lh}" + (f"×{latent_frames}" if latent_frames > 1 else "")
                    + f" × {images} image{'s' if images > 1 else ''}"
                    + (" × 2 (guidance pass)" if passes == 2 else "")
                    + f" × {per_px * dtype / 2 / 1024:.0f} KiB ({source})"
                    + (f" + {format_gib(scores, 2)} of attention scores (eager attention)" if scores else ""))
    upcast = family == "sdxl" and q.bits <= 16
    vae_dtype = 4 if upcast or q.bits > 16 else 2
    tile = min(_VAE_TILE, width), min(_VAE_TILE, height)
    px = (tile[0] * tile[1]) if profile.vae_tiling else width * height
    decoded_frames = min(frames, 4) if frames > 1 else 1  # video VAEs decode a few frames at a time
    decoded = 1 if profile.vae_slicing else images
    decode = _VAE_LIVE_CHANNELS * vae_dtype * px * decoded * decoded_frames
    vae = [p for p in parts if role_of(p.name) == "VAE"]
    if upcast and vae:
        decode += vae[0].parameters * 2  # the fp32 copy beside the fp16 weights
    decode_text = (f"VAE decode: 3 × 256 channels × {vae_dtype} B × "
                   + (f"{tile[0]}×{tile[1]} tiles" if profile.vae_tiling else f"{width}×{height}")
                   + f" × {decoded} image{'s' if decoded > 1 else ''}"
                   + (" (one at a time: VAE slicing)" if profile.vae_slicing and images > 1 else "")
                   + (f" × {decoded_frames} frames" if decoded_frames > 1 else "")
                   + (" (SDXL's VAE decodes in fp32)" if upcast else ""))
    text_names = tuple(p.name for p in parts if role_of(p.name) == "text encoder")
    seq = 512 if any(p.parameters > 1_000_000_000 for p in parts if p.name in text_names) else 77
    encode = images * seq * 4096 * 2 * 16 if text_names else 0
    phases: list[tuple[str, tuple[str, ...], int, str]] = []
    if text_names:
        phases.append(("encode", text_names, encode, f"text encoders' activations for {seq} tokens (small)"))
    den = tuple(p.name for p in parts if role_of(p.name) in ("denoiser", "stage"))
    phases.append(("denoise", den, denoise, denoise_text))
    if vae:
        phases.append(("decode", tuple(p.name for p in vae), decode, decode_text))
    notes = () if components else ("the pipeline's parts are not known separately: all parameters are counted "
                                   "as the denoiser, and the VAE decode is not modelled",)
    return _peak(parts, phases, profile.offload == "model", device_kind, profile, q, True, notes)


#: Tokens a decoder generates for a 30-second window of speech: about 150 words a minute is ~100 tokens
#: (Whisper's limit is 448). Runtimes that grow their self-attention cache hold this many positions.
_SPEECH_TOKENS = 100
#: Runtimes that repeat the encoder output for every beam, so the cross-attention keys and values are held
#: once per beam: openai-whisper (``audio_features.repeat_interleave``) and transformers (generate's
#: ``_expand_inputs_for_generation``). CTranslate2 and whisper.cpp keep them once per audio window.
_CROSS_PER_BEAM = frozenset({"openai-whisper", "transformers"})


def estimate_speech_pipeline(
    quant: QuantSpec | str, profile: RuntimeProfile, *, parameters: int, architecture: Architecture | None,
    components: dict[str, int] | None, encoder_layers: int | None, device_kind: str = "gpu",
) -> MemoryEstimate:
    """A Whisper-style encoder–decoder: encode a 30 s window (1,500 frames), then decode with beams.

    The decoder holds cross-attention keys and values over the 1,500 frames (per beam where the runtime
    repeats the encoder output) and a self-attention cache: whisper.cpp allocates Whisper's full 448
    positions per beam up front; the others grow theirs to the tokens generated (about 100 per window).
    """
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    a = architecture
    comps = dict(components or {})
    if not comps and a is not None and parameters:
        d, dec_l = a.hidden_size, a.layers
        enc_l = encoder_layers or dec_l
        enc, dec = 12 * d * d * enc_l, 16 * d * d * dec_l + (a.vocab_size or 0) * d
        comps = {"encoder": parameters * enc // (enc + dec), "decoder": parameters - parameters * enc // (enc + dec)}
    parts = _parts(comps, parameters, q, main="model", text_device="gpu")
    batch, beams = profile.images, profile.beam_width
    runtime = profile.defaults.name
    phases: list[tuple[str, tuple[str, ...], int, str]] = []
    if a is not None:
        d, heads = a.hidden_size, a.heads
        dtype = 4 if q.bits > 16 else 2  # int8 runtimes compute in 16 bits
        scores = 0 if profile.flash else batch * heads * 1500 * 1500 * dtype
        enc = batch * 1500 * d * dtype * 8 + scores
        phases.append(("encode", tuple(n for n in comps if role_of(n) == "encoder") or tuple(comps), enc,
                       f"1,500 frames × {d} × {dtype} B working set"
                       + (f" + 1,500² attention scores × {heads} heads" if scores else "")))
        cross_copies = beams if runtime in _CROSS_PER_BEAM else 1
        tokens = 448 if runtime == "whisper.cpp" else _SPEECH_TOKENS
        if runtime == "whisper.cpp":
            dtype = 2  # ggml keeps whisper.cpp's caches in f16 whatever the weights
        cross = 2 * a.layers * 1500 * d * dtype * batch * cross_copies
        self_kv = 2 * a.layers * tokens * d * dtype * batch * beams
        phases.append(("decode", tuple(n for n in comps if role_of(n) == "decoder") or tuple(comps), cross + self_kv,
                       f"cross-attention K and V: 2 × {a.layers} layers × 1,500 frames × {d} × {dtype} B × "
                       f"{batch * cross_copies} ({format_gib(cross, 2)}); self-attention cache for {tokens} tokens × "
                       f"{batch * beams} beam{'s' if batch * beams > 1 else ''} ({format_gib(self_kv, 2)})"))
    notes = () if a is not None else ("no architecture: only the weights are estimated",)
    return _peak(parts, phases, False, device_kind, profile, q, True, notes)


def estimate_stages(
    quant: QuantSpec | str, profile: RuntimeProfile, *, parameters: int, components: dict[str, int] | None,
    device_kind: str = "gpu",
) -> MemoryEstimate:
    """A model run as stages one after another (Bark's text, coarse and fine models and codec; XTTS's GPT
    and vocoder): all weights resident, and each stage's working memory a quarter of its weights, at
    least 256 MiB (a rule of thumb for autoregressive stages with short caches)."""
    q = resolve_quantization(quant) if isinstance(quant, str) else quant
    parts = _parts(components, parameters, q, main="model", text_device="gpu")
    phases: list[tuple[str, tuple[str, ...], int, str]] = [
        (p.name, (p.name,), max(256 * MiB, p.bytes // 4), "a quarter of its weights, at least 256 MiB (rule of thumb)")
        for p in parts]
    return _peak(parts, phases, profile.offload == "model", device_kind, profile, q, True)


def vision_tokens(width: int, height: int, patch: int = 14) -> int:
    """Patches of an image for a ViT with ``patch``-pixel patches."""
    return math.ceil(width / patch) * math.ceil(height / patch)


#: A typical vision transformer in a VLM (Qwen2-VL's and LLaVA's CLIP/SigLIP towers): 14-pixel patches,
#: 16 heads, 1,280 wide; the image is assumed 1024×1024 unless the profile gives a resolution.
_VIT_PATCH, _VIT_HEADS, _VIT_WIDTH = 14, 16, 1280


def with_vision(est: MemoryEstimate, parameters: int, profile: RuntimeProfile, device_kind: str) -> MemoryEstimate:
    """A language model's estimate with its vision tower (the projector file, mmproj) added: 16-bit weights
    and the tower's compute buffer for one image, which llama.cpp keeps allocated beside the LLM's."""
    from dataclasses import replace

    part = Part("vision_encoder", parameters, _SIXTEEN, "gpu")
    w, h = profile.width or 1024, profile.height or 1024
    n = vision_tokens(w, h, _VIT_PATCH)
    act = 4 * n * _VIT_WIDTH * 8
    scores = 0 if profile.flash else 4 * n * n * _VIT_HEADS
    work = act + scores
    text = (f"{n:,} patches of a {w}×{h} image × {_VIT_WIDTH} × 8 f32 values"
            + (f" + {n:,}² attention scores × {_VIT_HEADS} heads (no flash attention)" if scores else ""))
    comps = (ComponentEstimate("language model", "language model", 0, est.quantization, "gpu", est.weights.bytes),
             part.estimate())
    phase = PhaseEstimate("encode image", ("vision_encoder",), work, est.total_bytes + part.bytes + work, text)
    return replace(
        est,
        weights=EstimateTerm(est.weights.bytes + part.bytes,
                             f"{est.weights.explanation}; vision tower {format_gib(part.bytes, 2)} (16-bit)"),
        compute=EstimateTerm(est.compute.bytes + work, f"{est.compute.explanation}; vision: {text}"),
        components=comps, phases=(phase,))
