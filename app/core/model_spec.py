"""What a model is: the description types shared by the registry and the quantization strategy.

``ModelMetadata`` (one model and what it needs), ``ModelType``, ``ModelProvider`` and
``ModelArchitecture`` live here, below both ``app.core.model_registry`` (the catalog, user store
and search) and ``app.core.quantization_strategy`` (levels, estimates and plans), so neither has
to import the other to describe a model. ``app.core.model_registry`` re-exports every name.

This module imports only the estimator's architecture type; never the registry or the strategy.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from app.core.estimation import Architecture

__all__ = [
    "ModelProvider",
    "ModelType",
    "ModelArchitecture",
    "ModelMetadata",
    "Origin",
    "normalize_alias",
]


class ModelProvider(str, Enum):
    """Known model families. A user or scanned model may name one this enum does not know."""

    MISTRAL = "mistral"
    OPENAI = "openai"
    QWEN = "qwen"
    LLAMA = "llama"
    STABLE_DIFFUSION = "stable_diffusion"
    HUNYUAN = "hunyuan"
    WHISPER = "whisper"
    BARK = "bark"
    GEMMA = "gemma"
    PHI = "phi"
    DEEPSEEK = "deepseek"
    FLUX = "flux"
    KOKORO = "kokoro"
    COQUI = "coqui"
    LTX = "ltx"
    WAN = "wan"
    SENTENCE_TRANSFORMERS = "sentence_transformers"
    BAAI = "baai"
    NOMIC = "nomic"
    OTHER = "other"


class ModelType(str, Enum):
    """What a model does."""

    LLM = "llm"
    TEXT_TO_IMAGE = "text_to_image"
    TEXT_TO_SPEECH = "text_to_speech"
    SPEECH_TO_TEXT = "speech_to_text"
    TEXT_TO_VIDEO = "text_to_video"
    EMBEDDING = "embedding"


def normalize_alias(alias: str) -> str:
    """Lower-case letters and digits only: ``Llama-3.1 8B`` and ``llama3.18b`` meet."""
    return "".join(ch for ch in str(alias or "").lower() if ch.isalnum())


#: Families whose MLP is up and down projections only (no gate), when a config does not say.
_PLAIN_MLP_FAMILIES = frozenset({"gpt2", "gpt_neox", "phi", "falcon", "gpt_bigcode", "starcoder", "bloom", "opt",
                                 "whisper", "bert", "xlm-roberta", "nomic_bert", "gptj", "mpt"})


class ModelArchitecture(BaseModel):
    """Published architecture facts (from the model's config)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    family: str | None = None
    layers: int | None = Field(default=None, ge=1)
    encoder_layers: int | None = Field(default=None, ge=1)
    hidden_size: int | None = Field(default=None, ge=1)
    intermediate_size: int | None = Field(default=None, ge=1)
    heads: int | None = Field(default=None, ge=1)
    kv_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    vocab_size: int | None = Field(default=None, ge=1)
    max_context: int | None = Field(default=None, ge=1)
    sliding_window: int | None = Field(default=None, ge=1)
    sliding_window_pattern: int | None = Field(default=None, ge=1)
    experts: int | None = Field(default=None, ge=1)
    active_experts: int | None = Field(default=None, ge=1)
    expert_intermediate_size: int | None = Field(default=None, ge=1)
    tie_word_embeddings: bool | None = None
    kv_lora_rank: int | None = Field(default=None, ge=1)
    qk_rope_head_dim: int | None = Field(default=None, ge=1)
    #: Experts every token passes through besides the routed ones (DeepSeek, Qwen2-MoE).
    shared_experts: int | None = Field(default=None, ge=1)
    #: Q/K/V projections carry biases (Qwen2, phi-2); None: as the family has it.
    attention_bias: bool | None = None
    #: "gated" (gate, up and down projections: Llama, Mistral, Qwen) or "plain" (up and down only:
    #: GPT-2, phi-2, Falcon, StarCoder); None: gated.
    mlp_kind: Literal["gated", "plain"] | None = None
    #: Parameters per part of a pipeline, by the part's folder name: ``unet``/``transformer`` (the
    #: denoiser), ``text_encoder``, ``text_encoder_2``, ``text_encoder_3``, ``vae``; ``encoder``/``decoder``
    #: (speech); ``vision_encoder`` (a VLM's vision tower with its projector); Bark's ``text``, ``coarse``,
    #: ``fine`` and ``codec``; XTTS's ``gpt`` and ``hifigan``.
    components: dict[str, int] | None = None

    def to_estimation(self) -> Architecture | None:
        """The estimator's view; None when layers, hidden size or heads are unknown."""
        if not (self.layers and self.hidden_size and self.heads):
            return None
        attention_bias = (self.attention_bias if self.attention_bias is not None
                          else (self.family or "") in ("qwen2", "qwen2_moe", "qwen2_vl", "phi"))
        mlp_gated = self.mlp_kind != "plain" if self.mlp_kind else (self.family or "") not in _PLAIN_MLP_FAMILIES
        return Architecture(
            layers=self.layers,
            hidden_size=self.hidden_size,
            heads=self.heads,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            vocab_size=self.vocab_size,
            intermediate_size=self.intermediate_size,
            family=self.family,
            max_context=self.max_context,
            sliding_window=self.sliding_window,
            sliding_window_pattern=self.sliding_window_pattern,
            experts=self.experts,
            active_experts=self.active_experts,
            expert_intermediate_size=self.expert_intermediate_size,
            tie_word_embeddings=bool(self.tie_word_embeddings),
            attention_bias=attention_bias,
            kv_lora_rank=self.kv_lora_rank,
            qk_rope_head_dim=self.qk_rope_head_dim,
            mlp_gated=mlp_gated,
            shared_experts=self.shared_experts,
        )


Origin = Literal["builtin", "user", "scanned"]


class ModelMetadata(BaseModel):
    """One model and what it needs.

    The seed's fields are kept (``size_gb`` is "weight size at 8 bits per parameter", i.e. about
    billions of parameters). Estimates use the exact ``parameters`` and ``architecture`` when
    known; with only ``size_gb``, the entry is marked approximate.
    """

    model_config = ConfigDict(validate_assignment=True, allow_inf_nan=False, use_enum_values=False,
                              protected_namespaces=())

    name: str = Field(min_length=1)
    provider: ModelProvider | str
    model_type: ModelType
    size_gb: float | None = Field(default=None, ge=0)
    min_vram_gb: float | None = Field(default=None, ge=0)
    min_ram_gb: float | None = Field(default=None, ge=0)
    recommended_vram_gb: float | None = Field(default=None, ge=0)
    recommended_ram_gb: float | None = Field(default=None, ge=0)
    supports_quantization: bool = True
    huggingface_id: str = ""
    model_id: str | None = None
    preferred_runtime_format: str | None = None
    preferred_download_repo_id: str | None = None
    preferred_download_filename: str | None = None
    runtime_backend: str | None = None
    aliases: tuple[str, ...] = ()
    compute_capability_min: tuple[int, int] | None = None

    parameters: int | None = Field(default=None, ge=1)
    parameters_exact: bool = False
    architecture: ModelArchitecture | None = None
    native_dtype: str | None = None
    formats: tuple[str, ...] = ()
    default_resolution: int | None = Field(default=None, ge=64)
    quality_note: str | None = None
    source: str | None = None
    license: str | None = None
    origin: Origin = "user"
    #: For files read from disk: where, and their exact weight bytes and storage type.
    path: str | None = None
    weight_bytes: int | None = Field(default=None, ge=0)
    file_type: str | None = None
    weights_exact: bool = False

    _estimates: dict[Any, Any] = PrivateAttr(default_factory=dict)

    @field_validator("provider", mode="before")
    @classmethod
    def _provider(cls, value: Any) -> Any:
        if isinstance(value, ModelProvider):
            return value
        text = str(value or "").strip()
        if not text:
            raise ValueError("provider must not be empty; use 'other' when unknown")
        try:
            return ModelProvider(text.lower())
        except ValueError:
            try:
                return ModelProvider[text.upper()]
            except KeyError:
                return text.lower()  # a provider the enum does not know yet: kept as text

    @field_validator("aliases", "formats", mode="before")
    @classmethod
    def _tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return tuple(value)

    @model_validator(mode="after")
    def _consistent(self) -> ModelMetadata:
        for low, high in (("min_vram_gb", "recommended_vram_gb"), ("min_ram_gb", "recommended_ram_gb")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is above {high} ({hi}); the minimum cannot exceed the recommendation")
        if not (self.model_id or self.huggingface_id):
            raise ValueError("model_id or huggingface_id is required to identify the model")
        return self

    # --- derived -----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.model_id or self.huggingface_id

    @property
    def size_mb(self) -> int:
        """The seed's approximate size in megabytes."""
        return int((self.size_gb or 0.0) * 1024)

    @property
    def parameter_count(self) -> int | None:
        """Exact parameters where known, else ``size_gb`` read as billions (approximate)."""
        if self.parameters:
            return self.parameters
        if self.size_gb:
            return int(self.size_gb * 1e9)
        return None

    @property
    def approximate(self) -> bool:
        return not self.parameters_exact and not self.weights_exact

    @property
    def provider_name(self) -> str:
        return self.provider.value if isinstance(self.provider, ModelProvider) else str(self.provider)

    @property
    def estimation_architecture(self) -> Architecture | None:
        return self.architecture.to_estimation() if self.architecture else None

    @property
    def estimate_cache(self) -> dict[Any, Any]:
        """Memoised estimates for this exact metadata (cleared whenever a field changes)."""
        return self.__pydantic_private__["_estimates"]  # type: ignore[index]  # direct: pydantic's lookup is slow

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_"):
            self._estimates.clear()

    def search_text(self) -> str:
        fields = (self.id, self.name, self.huggingface_id, self.provider_name, *self.aliases)
        return " ".join(normalize_alias(x) for x in fields if x)
