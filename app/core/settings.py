"""User settings: a small validated JSON file in the user's configuration directory.

Example ``~/.config/modeldeck/settings.json``::

    {"keep_alive_s": 600, "max_loaded_models": 3, "preload": ["llama3.1:8b", ["openai/whisper-small", "int8"]],
     "gpu_reserve_mib": 512, "ram_reserve_mib": 2048}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.core.memory_allocator import AllocatorSettings
from app.core.storage import atomic_write
from app.core.units import MiB

__all__ = ["UserSettings", "SettingsError", "default_settings_path", "load_settings", "save_settings",
           "validate_settings"]

_log = logging.getLogger(__name__)

#: Bounds, so that a typo cannot become a setting: a reserve larger than any real device (1 TiB),
#: a keep-alive beyond 30 days (use -1 for "until unloaded"), more models than anyone loads at once.
MAX_RESERVE_MIB = 1 << 20  # 1 TiB
MAX_KEEP_ALIVE_S = 30 * 24 * 3600
MAX_LOADED_MODELS = 256
MAX_PRELOAD = 64
MAX_SETTINGS_BYTES = 1 << 20
SCHEMA_VERSION = 1

_PRESSURE = "a fraction above 0 and at most 1, with pressure_elevated < pressure_high < pressure_critical"
#: What each field accepts, for the error message.
ALLOWED: dict[str, str] = {
    "schema_version": f"{SCHEMA_VERSION} (this ModelDeck's format; a newer one wrote this file)",
    "keep_alive_s": f"-1 (keep models loaded until unloaded) or 0 to {MAX_KEEP_ALIVE_S} seconds (30 days)",
    "max_loaded_models": f"1 to {MAX_LOADED_MODELS}, or null for no limit",
    "auto_swap": "true or false",
    "preload": f"a list of up to {MAX_PRELOAD} model ids or [model id, level] pairs with a known level "
               "(e.g. \"llama3.1:8b\" or [\"openai/whisper-small\", \"int8\"])",
    "gpu_reserve_mib": f"0 to {MAX_RESERVE_MIB} MiB (1 TiB)",
    "ram_reserve_mib": f"0 to {MAX_RESERVE_MIB} MiB (1 TiB)",
    "pressure_elevated": _PRESSURE,
    "pressure_high": _PRESSURE,
    "pressure_critical": _PRESSURE,
}


class SettingsError(ValueError):
    """The settings file exists but is not valid; the message names the field."""


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: int = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    keep_alive_s: float = Field(default=300.0, ge=-1, le=MAX_KEEP_ALIVE_S)
    max_loaded_models: int | None = Field(default=None, ge=1, le=MAX_LOADED_MODELS)
    auto_swap: bool = True
    preload: list[str | tuple[str, str]] = Field(default_factory=list, max_length=MAX_PRELOAD)
    gpu_reserve_mib: int = Field(default=457, ge=0, le=MAX_RESERVE_MIB)
    ram_reserve_mib: int = Field(default=2048, ge=0, le=MAX_RESERVE_MIB)
    pressure_elevated: float = Field(default=0.80, gt=0, le=1)
    pressure_high: float = Field(default=0.90, gt=0, le=1)
    pressure_critical: float = Field(default=0.97, gt=0, le=1)

    @field_validator("schema_version", "keep_alive_s", "max_loaded_models", "gpu_reserve_mib", "ram_reserve_mib",
                     "pressure_elevated", "pressure_high", "pressure_critical", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        if isinstance(value, bool):  # JSON true is not the number 1 here
            raise ValueError(f"{str(value).lower()} is not a number")
        return value

    @field_validator("keep_alive_s")
    @classmethod
    def _keep_alive(cls, value: float) -> float:
        if value < 0 and value != -1:
            raise ValueError(f"{value:g} is neither -1 (keep loaded) nor a number of seconds")
        return value

    @field_validator("preload")
    @classmethod
    def _preload_entries(cls, entries: list[str | tuple[str, str]]) -> list[str | tuple[str, str]]:
        from app.core.estimation import UnknownQuantizationError
        from app.core.quantization_strategy import level_name

        for i, entry in enumerate(entries):
            model, level = (entry, None) if isinstance(entry, str) else entry
            if not model.strip() or len(model) > 300:
                raise ValueError(f"entry {i} must name a model (1 to 300 characters), got {model[:40]!r}")
            if level is not None:
                try:
                    level_name(level)
                except UnknownQuantizationError:
                    raise ValueError(f"entry {i} ({model[:60]!r}) has the unknown level {level[:40]!r}; use one "
                                     "of fp16, bf16, int8, int4, nf4 or a GGUF type such as Q4_K_M") from None
        return entries

    @model_validator(mode="after")
    def _pressure_order(self) -> UserSettings:
        e, h, c = self.pressure_elevated, self.pressure_high, self.pressure_critical
        if not e < h < c:
            worst = "pressure_elevated" if not e < h else "pressure_high"
            raise ValueError(f"{worst}: the thresholds must rise: pressure_elevated ({e:g}) < pressure_high ({h:g}) "
                             f"< pressure_critical ({c:g})")
        return self

    def manager_settings(self):  # -> ManagerSettings (imported lazily: the manager imports much)
        from app.core.model_resource_manager import ManagerSettings

        return ManagerSettings(
            keep_alive_s=self.keep_alive_s,
            max_loaded_models=self.max_loaded_models,
            auto_swap=self.auto_swap,
            preload=tuple(p if isinstance(p, str) else (p[0], p[1]) for p in self.preload),
            allocator=AllocatorSettings(
                gpu_reserve_bytes=self.gpu_reserve_mib * MiB, cpu_reserve_bytes=self.ram_reserve_mib * MiB,
                elevated=self.pressure_elevated, high=self.pressure_high, critical=self.pressure_critical),
        )


def default_settings_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("modeldeck", appauthor=False)) / "settings.json"


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"{key!r} is given twice")
        out[key] = value
    return out


def _read(path: Path) -> object:
    """The file's JSON value; every way it can fail is a SettingsError that says what to do."""
    fix = "fix or remove it (ModelDeck never rewrites it)"
    try:
        if path.is_dir():
            raise SettingsError(f"{path} is a folder, not a settings file; move it away or put settings.json there")
        if not path.is_file():
            raise SettingsError(f"{path} is not a regular file; remove it or replace it with a JSON file")
        with path.open("rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError as err:
        raise SettingsError(f"cannot read {path}: {err.strerror or err}; "
                            "make it readable (chmod u+r) or remove it") from err
    if len(raw) > MAX_SETTINGS_BYTES:
        raise SettingsError(f"{path} is larger than {MAX_SETTINGS_BYTES:,} bytes, far more than settings need; {fix}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SettingsError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8 JSON or remove it") from err
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise SettingsError(f"{path} is not valid JSON ({err}); {fix}") from err
    except RecursionError as err:
        raise SettingsError(f"{path} is nested too deeply to be settings (one JSON object is expected); {fix}") from err
    except _DuplicateKey as err:
        raise SettingsError(f"{path}: {err}, so which one counts is unclear; keep one and {fix}") from err
    except ValueError as err:  # e.g. an integer with thousands of digits
        raise SettingsError(f"{path} is not valid JSON ({err}); {fix}") from err


def load_settings(path: Path | str | None = None) -> UserSettings:
    """The user's settings, or the defaults when there is no file. A broken file is an error that says
    which field is wrong, what it accepts and what to do; the file is left untouched."""
    path = Path(path) if path is not None else default_settings_path()
    try:
        missing = not path.exists() and not path.is_symlink()
    except OSError as err:
        raise SettingsError(f"cannot read {path}: {err.strerror or err}; make its folder readable") from err
    if missing:
        return UserSettings()
    data = _read(path)
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold one JSON object such as {{\"keep_alive_s\": 600}}, "
                            f"not a {type(data).__name__}; fix or remove it")
    try:
        return UserSettings.model_validate(data)
    except ValidationError as err:
        where, msg, allowed = _describe(err)
        hint = f" (allowed: {allowed})" if allowed else ""
        raise SettingsError(f"{path}: {where}: {msg}{hint}; fix or remove it") from err


def _describe(err: ValidationError) -> tuple[str, str, str | None]:
    """The first problem as (field, what is wrong, what the field accepts)."""
    first = err.errors()[0]
    loc = first.get("loc", ())
    field = str(loc[0]) if loc else "settings"
    where = f"{field}[{loc[1]}]" if len(loc) > 1 and isinstance(loc[1], int) else field
    msg = str(first.get("msg", "")).removeprefix("Value error, ")
    if not loc and ":" in msg:  # a check across fields names its field first
        field, msg = msg.split(":", 1)
        where, msg = field, msg.strip()
    allowed = ALLOWED.get(field)
    if first.get("type") == "extra_forbidden":
        allowed = f"the known fields: {', '.join(ALLOWED)}"
    return where, msg, allowed


def validate_settings(data: dict[str, Any]) -> UserSettings:
    """Settings from ``data`` (a settings dialog's fields over the current ones), or a SettingsError of one
    line that names the field, what is wrong and what it accepts (``args[1]`` is the field's name)."""
    try:
        return UserSettings.model_validate(data)
    except ValidationError as err:
        where, msg, allowed = _describe(err)
        hint = f" (allowed: {allowed})" if allowed else ""
        raise SettingsError(f"{where}: {msg}{hint}", where) from err


def save_settings(settings: UserSettings, path: Path | str | None = None) -> Path:
    """Write ``settings`` as the user's settings file, atomically: a crash leaves the old file or the
    new one, never half of either. Returns the path; an OSError says why it could not be written."""
    path = Path(path) if path is not None else default_settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.model_dump(mode="json"), indent=2) + "\n"
    atomic_write(path, text.encode("utf-8"))
    return path
