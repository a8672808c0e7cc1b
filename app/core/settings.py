"""User settings: a small validated JSON file in the user's configuration directory.

Example ``~/.config/modeldeck/settings.json``::

    {"keep_alive_s": 600, "max_loaded_models": 3, "preload": ["llama3.1:8b", ["openai/whisper-small", "int8"]],
     "gpu_reserve_mib": 512, "ram_reserve_mib": 2048}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.memory_allocator import AllocatorSettings
from app.core.units import MiB

__all__ = ["UserSettings", "SettingsError", "default_settings_path", "load_settings"]

_log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """The settings file exists but is not valid; the message names the field."""


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: int = 1
    keep_alive_s: float = Field(default=300.0, ge=-1)
    max_loaded_models: int | None = Field(default=None, ge=1)
    auto_swap: bool = True
    preload: list[str | tuple[str, str]] = Field(default_factory=list)
    gpu_reserve_mib: int = Field(default=457, ge=0)
    ram_reserve_mib: int = Field(default=2048, ge=0)
    pressure_elevated: float = Field(default=0.80, gt=0, le=1)
    pressure_high: float = Field(default=0.90, gt=0, le=1)
    pressure_critical: float = Field(default=0.97, gt=0, le=1)

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


def load_settings(path: Path | str | None = None) -> UserSettings:
    """The user's settings, or the defaults when there is no file. A broken file is an error that says
    which field is wrong; the file is left untouched."""
    path = Path(path) if path is not None else default_settings_path()
    if not path.exists():
        return UserSettings()
    try:
        return UserSettings.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as err:
        raise SettingsError(f"{path} is not valid JSON ({err}); fix or remove it") from err
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise SettingsError(f"{path}: {field}: {first.get('msg')}; fix or remove it") from err
