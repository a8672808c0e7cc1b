"""ModelRegistry: the models ModelDeck knows, what they need, and where they came from.

Built-in models come from a data file (``app/core/data/catalog.json``, every entry with its
source); user models are persisted atomically in the user data directory; scanned models come
from GGUF / safetensors headers. The seed's API (``ModelMetadata``, ``ModelProvider``,
``ModelType``, ``get_model``, ``list_models``, ``register_model``) keeps working.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.events import Signal

# The model description types live in app.core.model_spec (below this module and the
# quantization strategy); they are re-exported here, where the seed's API has always had them.
from app.core.model_spec import (
    ModelArchitecture,
    ModelMetadata,
    ModelProvider,
    ModelType,
    Origin,
    normalize_alias,
)
from app.core.quantization_strategy import EstimateUnavailable, QuantizationStrategy, fill_requirements

__all__ = [
    "ModelProvider",
    "ModelType",
    "ModelArchitecture",
    "ModelMetadata",
    "ModelRegistry",
    "RegistryError",
    "UserModelStore",
    "normalize_alias",
    "Origin",
]

_log = logging.getLogger(__name__)

USER_FILE_VERSION = 1


class RegistryError(Exception):
    """A registry operation that cannot be done, with what to do instead."""


# ------------------------------------------------------------------------------------------------
# User models on disk
# ------------------------------------------------------------------------------------------------


def default_user_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("modeldeck", appauthor=False)) / "models.json"


class UserModelStore:
    """The user's models as a versioned JSON file, written atomically.

    Writes go to a temporary file in the same folder, are fsynced, then renamed over the old
    file, so a crash leaves either the old file or the new one. A file that cannot be read is
    moved aside as a backup (never deleted) and reported; entries that fail validation are kept
    verbatim in the file's ``invalid`` list, so nothing a user saved is dropped.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.problems: list[str] = []
        self._invalid: list[Any] = []

    def load(self) -> list[ModelMetadata]:
        self.problems = []
        self._invalid = []
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
                raise ValueError("expected an object with a 'models' list")
            version = raw.get("version")
            if not isinstance(version, int) or version > USER_FILE_VERSION:
                raise ValueError(f"unsupported version {version!r} (this ModelDeck reads up to {USER_FILE_VERSION})")
        except (OSError, ValueError) as err:
            backup = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(self.path, backup)
                where = f"it was kept as {backup}"
            except OSError as move_err:
                where = f"it could not be moved aside ({move_err}); it was left in place"
            message = f"your model list {self.path} could not be read ({err}); {where}. Built-in models still load."
            self.problems.append(message)
            _log.error("%s", message)
            return []
        models: list[ModelMetadata] = []
        self._invalid = list(raw.get("invalid", []))
        for i, entry in enumerate(raw["models"]):
            try:
                models.append(ModelMetadata.model_validate(entry))
            except ValidationError as err:
                self._invalid.append(entry)
                first = err.errors()[0]
                field = ".".join(str(p) for p in first.get("loc", ())) or "entry"
                message = f"model #{i} in {self.path} is invalid ({field}: {first.get('msg')}); it is kept in the file"
                self.problems.append(message)
                _log.warning("%s", message)
        return models

    def save(self, models: Iterable[ModelMetadata]) -> None:
        doc = {
            "version": USER_FILE_VERSION,
            "models": [m.model_dump(mode="json", exclude_none=True) for m in models],
            "invalid": self._invalid,
        }
        data = json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------
# Catalog
# ------------------------------------------------------------------------------------------------


def _catalog_entry(entry: dict[str, Any]) -> ModelMetadata:
    params = entry.get("parameters")
    return ModelMetadata(
        name=entry["name"],
        provider=entry.get("provider") or "other",
        model_type=entry["model_type"],
        size_gb=round(params / 1e9, 3) if params else entry.get("size_gb"),
        supports_quantization=entry.get("model_type") != "text_to_speech",
        huggingface_id=entry["id"],
        model_id=entry["id"],
        runtime_backend=entry.get("runtime"),
        preferred_runtime_format=(
            "gguf" if entry.get("model_type") == "llm" and "gguf" in entry.get("formats", ()) else None
        ),
        aliases=tuple(entry.get("aliases") or ()),
        parameters=params,
        parameters_exact=bool(entry.get("parameters_exact")),
        architecture=entry.get("architecture"),
        native_dtype=entry.get("native_dtype"),
        formats=tuple(entry.get("formats") or ()),
        default_resolution=entry.get("default_resolution"),
        quality_note=entry.get("quality_note"),
        source=entry.get("source"),
        license=entry.get("license"),
        origin="builtin",
    )


def load_catalog(path: Path | str | None = None) -> list[ModelMetadata]:
    """The built-in catalog; a broken entry is a bug in ModelDeck and raises with its id."""
    if path is None:
        text = resources.files("app.core").joinpath("data/catalog.json").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = json.loads(text)
    out = []
    for entry in raw["models"]:
        try:
            out.append(fill_requirements(_catalog_entry(entry)))
        except (ValidationError, KeyError) as err:
            raise RegistryError(f"built-in catalog entry {entry.get('id')!r} is invalid: {err}") from err
    return out


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------

_DEFAULT = object()


class ModelRegistry:
    """Registry of models with hardware requirements.

    Signals:
        registry_changed(): after any registration, update or removal (on the caller's thread).
    """

    def __init__(
        self,
        *,
        catalog: Iterable[ModelMetadata] | Path | str | None = None,
        user_store: UserModelStore | Path | str | None | object = _DEFAULT,
        include_builtin: bool = True,
    ) -> None:
        self.logger = _log
        self._lock = threading.RLock()
        self._models: dict[str, ModelMetadata] = {}
        self._aliases: dict[str, str] = {}
        self._search_cache: list[tuple[str, str]] | None = None
        self._trigrams: tuple[dict[str, set[int]], list[tuple[str, str]]] | None = None
        self.registry_changed: Signal[Callable[[], None]] = Signal("registry_changed")
        if user_store is _DEFAULT:
            user_store = UserModelStore(default_user_path())
        elif isinstance(user_store, (str, Path)):
            user_store = UserModelStore(user_store)
        self._store: UserModelStore | None = user_store  # type: ignore[assignment]
        if include_builtin:
            entries = (catalog if isinstance(catalog, Iterable) and not isinstance(catalog, (str, Path))
                       else load_catalog(catalog))
            for m in entries:
                self._add(m)
        if self._store is not None:
            for m in self._store.load():
                self._add(m)

    # --- seed API ------------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelMetadata]:
        """Canonical entries keyed by model id."""
        with self._lock:
            return dict(self._models)

    @property
    def problems(self) -> list[str]:
        """What went wrong loading the user's models (empty when all is well)."""
        return list(self._store.problems) if self._store else []

    def get_model(self, model_id: str) -> ModelMetadata | None:
        """By id, Hugging Face id, name or alias, exactly or normalized (case and punctuation ignored)."""
        with self._lock:
            if model_id in self._models:
                return self._models[model_id]
            canonical = self._aliases.get(model_id) or self._aliases.get(normalize_alias(model_id))
            return self._models.get(canonical) if canonical else None

    def list_models(
        self,
        provider: ModelProvider | str | None = None,
        model_type: ModelType | str | None = None,
        *,
        fits: Callable[[ModelMetadata], bool] | None = None,
    ) -> list[ModelMetadata]:
        """Models filtered by provider, type and (optionally) a fit predicate."""
        with self._lock:
            models = list(self._models.values())
        if provider is not None:
            want = provider.value if isinstance(provider, ModelProvider) else str(provider).lower()
            models = [m for m in models if m.provider_name == want]
        if model_type is not None:
            mt = model_type if isinstance(model_type, ModelType) else ModelType(str(model_type).lower())
            models = [m for m in models if m.model_type == mt]
        if fits is not None:
            models = [m for m in models if fits(m)]
        return models

    def register_model(self, metadata: ModelMetadata, *, persist: bool = True) -> ModelMetadata:
        """Register (or replace) a model. User and scanned models are saved to the user's file."""
        with self._lock:
            # A user entry for a built-in id overrides it, and is what gets saved.
            self._add(metadata)
            if persist and metadata.origin != "builtin":
                self._save()
        self.logger.info("registered model %s", metadata.id)
        self.registry_changed.emit()
        return metadata

    def update_model(self, model_id: str, **changes: Any) -> ModelMetadata:
        """Change fields of a user or scanned model (validated); built-ins are copied as user entries."""
        with self._lock:
            current = self.get_model(model_id)
            if current is None:
                raise RegistryError(f"no model {model_id!r}; `modeldeck models` lists the known ones")
            data = current.model_dump()
            data.update(changes)
            if current.origin == "builtin":
                data["origin"] = "user"
            updated = ModelMetadata.model_validate(data)
            self._remove(current.id)
            self._add(updated)
            self._save()
        self.registry_changed.emit()
        return updated

    def remove_model(self, model_id: str) -> None:
        """Remove a user or scanned model. Built-in models cannot be removed."""
        with self._lock:
            current = self.get_model(model_id)
            if current is None:
                raise RegistryError(f"no model {model_id!r} to remove")
            if current.origin == "builtin":
                raise RegistryError(
                    f"{current.id} is built in and cannot be removed; register a user entry to override it"
                )
            self._remove(current.id)
            self._save()
        self.registry_changed.emit()

    # --- hardware ------------------------------------------------------------------------------
    def fits(self, metadata: ModelMetadata, hardware: Any, strategy: Any = None) -> bool:
        """True when the model runs whole on GPUs now, on one or split over several (or, on a machine
        without GPUs, in RAM)."""
        strategy = strategy or QuantizationStrategy()
        try:
            plan = strategy.plan(metadata, hardware)
        except EstimateUnavailable:
            return False
        has_gpu = any(not g.lost for g in hardware.gpus)
        return plan.placement in ("gpu", "split") or (not has_gpu and plan.placement == "cpu")

    def select_best_model(
        self,
        provider: ModelProvider | str | None = None,
        model_type: ModelType | str | None = None,
        hardware: Any = None,
        strategy: Any = None,
    ) -> ModelMetadata | None:
        """The largest model of this provider and type that fits the hardware now."""
        if hardware is None:
            from app.core.hardware_profiler import HardwareProfiler

            hardware = HardwareProfiler().get_profile()
        fitting = self.list_models(provider, model_type, fits=lambda m: self.fits(m, hardware, strategy))
        if not fitting:
            return None
        return max(fitting, key=lambda m: (m.parameter_count or 0, m.origin == "builtin"))

    # --- scanned files -------------------------------------------------------------------------
    def register_scanned(self, scanned: Any, *, persist: bool = True) -> ModelMetadata:
        """Register a model read from disk (an ``app.core.importers.ScannedModel``)."""
        metadata = fill_requirements(metadata_from_scan(scanned))
        return self.register_model(metadata, persist=persist)

    # --- search ---------------------------------------------------------------------------------
    def search(self, query: str, limit: int = 20) -> list[ModelMetadata]:
        """Models matching every word of ``query`` (ids, names, aliases, provider), best first;
        when nothing matches, the closest names (typos forgiven)."""
        words = [normalize_alias(w) for w in str(query).split()]
        words = [w for w in words if w]
        if not words:
            return []
        with self._lock:
            if self._search_cache is None:
                self._search_cache = [(m.search_text(), mid) for mid, m in self._models.items()]
            haystack = self._search_cache
            models = self._models
        joined = "".join(words)
        hits: list[tuple[int, str]] = []
        for text, mid in haystack:
            if all(w in text for w in words):
                # Shorter texts and matches at a word start rank first.
                score = len(text) - (50 if text.startswith(joined) or f" {joined}" in text else 0)
                hits.append((score, mid))
        if hits:
            hits.sort()
            return [models[mid] for _, mid in hits[:limit]]
        return [models[mid] for mid in self._fuzzy(joined, limit)]

    def _fuzzy(self, query: str, limit: int) -> list[str]:
        """Ids whose normalized name or id is closest to ``query``: candidates share trigrams with
        it, then difflib ranks the few best (typos such as ``whispr`` still find ``whisper``)."""
        with self._lock:
            if self._trigrams is None:
                index: dict[str, set[int]] = {}
                keys: list[tuple[str, str]] = []
                for mid, m in self._models.items():
                    for text in {normalize_alias(m.name), normalize_alias(mid.split("/")[-1])}:
                        keys.append((text, mid))
                        for i in range(len(text) - 2):
                            index.setdefault(text[i:i + 3], set()).add(len(keys) - 1)
                self._trigrams = (index, keys)
            index, keys = self._trigrams
        counts: dict[int, int] = {}
        for i in range(len(query) - 2):
            for k in index.get(query[i:i + 3], ()):
                counts[k] = counts.get(k, 0) + 1
        if not counts:
            return []
        top = sorted(counts, key=counts.__getitem__, reverse=True)[:50]
        scored = sorted(((difflib.SequenceMatcher(None, query, keys[k][0]).ratio(), keys[k][1]) for k in top),
                        reverse=True)
        out: list[str] = []
        for ratio, mid in scored:
            if ratio >= 0.5 and mid not in out:
                out.append(mid)
        return out[:limit]

    # --- internals ------------------------------------------------------------------------------
    def _add(self, metadata: ModelMetadata) -> None:
        canonical = metadata.id
        self._models[canonical] = metadata
        for alias in (canonical, metadata.name, metadata.huggingface_id, metadata.preferred_download_repo_id,
                      metadata.preferred_download_filename, *metadata.aliases):
            if alias:
                self._aliases[str(alias)] = canonical
                norm = normalize_alias(str(alias))
                # Built-ins never steal a normalized alias another entry already holds; user entries do.
                if norm and (metadata.origin != "builtin" or norm not in self._aliases):
                    self._aliases[norm] = canonical
        self._search_cache = None
        self._trigrams = None

    def _remove(self, canonical: str) -> None:
        self._models.pop(canonical, None)
        self._aliases = {k: v for k, v in self._aliases.items() if v != canonical}
        self._search_cache = None
        self._trigrams = None

    def _save(self) -> None:
        if self._store is None:
            return
        self._store.save(m for m in self._models.values() if m.origin != "builtin")

    def user_models(self) -> list[ModelMetadata]:
        with self._lock:
            return [m for m in self._models.values() if m.origin != "builtin"]


_FAMILY_PROVIDERS = {
    "llama": "llama", "mistral": "mistral", "mixtral": "mistral", "qwen": "qwen", "gemma": "gemma", "phi": "phi",
    "gpt_oss": "openai", "gpt-oss": "openai", "deepseek": "deepseek", "whisper": "whisper", "bert": "other",
}
_EMBEDDING_FAMILIES = ("bert", "xlm-roberta", "xlm_roberta", "nomic_bert", "nomic-bert")


def metadata_from_scan(scanned: Any) -> ModelMetadata:
    """ModelMetadata for a scanned file: exact weight bytes from its header (file size for pickles)."""
    arch = {k: v for k, v in (scanned.architecture or {}).items() if v is not None}
    family = str(arch.get("family") or "").lower()
    provider = next((p for key, p in _FAMILY_PROVIDERS.items() if family.startswith(key)), "other")
    if family.startswith("whisper"):
        model_type = ModelType.SPEECH_TO_TEXT
    elif family.startswith(_EMBEDDING_FAMILIES):
        model_type = ModelType.EMBEDDING
    elif arch.get("layers") or scanned.format in ("gguf",):
        model_type = ModelType.LLM
    else:
        name = f"{scanned.name} {scanned.path}".lower()
        diffusion = any(w in name for w in ("diffusion", "sdxl", "sd15", "sd_xl", "flux", "unet", "vae"))
        model_type = ModelType.TEXT_TO_IMAGE if diffusion else ModelType.LLM
    params = scanned.parameters
    size_gb = round(params / 1e9, 3) if params else round(scanned.weight_bytes / 2 / 1e9, 3)  # pickles: ~16-bit
    runtime = "llama.cpp" if scanned.format == "gguf" or str(scanned.path).endswith(".gguf") else "transformers"
    return ModelMetadata(
        name=scanned.name or Path(scanned.path).name,
        provider=provider,
        model_type=model_type,
        size_gb=size_gb,
        huggingface_id=scanned.huggingface_id or "",
        model_id=scanned.huggingface_id if scanned.format == "hf-cache" and runtime != "llama.cpp"
        else f"file:{Path(scanned.path).resolve()}",
        runtime_backend=runtime,
        preferred_runtime_format="gguf" if runtime == "llama.cpp" else "safetensors",
        parameters=params,
        parameters_exact=bool(params and scanned.exact),
        architecture=arch or None,
        formats=(scanned.format,),
        origin="scanned",
        path=str(Path(scanned.path).resolve()),
        weight_bytes=scanned.weight_bytes,
        file_type=scanned.file_type,
        weights_exact=bool(scanned.exact),
        source=str(Path(scanned.path).resolve()),
        quality_note="; ".join(scanned.notes) or None,
    )
