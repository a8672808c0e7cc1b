"""User settings: validated, never rewritten; their preload list is what `status` shows as held."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.settings import SettingsError, UserSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_a_file(tmp_path):
    assert load_settings(tmp_path / "none.json") == UserSettings()


@pytest.mark.parametrize(("content", "field"), [
    ('{"keep_alive_s": -5}', "keep_alive_s"),
    ('{"max_loaded_models": 0}', "max_loaded_models"),
    ('{"colour": "blue"}', "colour"),
    ('{"preload": 3}', "preload"),
])
def test_bad_settings_name_the_field_and_leave_the_file(tmp_path, content, field):
    path = tmp_path / "settings.json"
    path.write_text(content)
    with pytest.raises(SettingsError, match=field):
        load_settings(path)
    assert path.read_text() == content


def test_settings_become_manager_settings(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"keep_alive_s": 60, "max_loaded_models": 2, "gpu_reserve_mib": 256,
                                "preload": ["llama3.2:1b", ["openai/whisper-small", "int8"]]}))
    ms = load_settings(path).manager_settings()
    assert ms.keep_alive_s == 60 and ms.max_loaded_models == 2
    assert ms.allocator.gpu_reserve_bytes == 256 << 20
    assert ms.preload == ("llama3.2:1b", ("openai/whisper-small", "int8"))


def test_status_lists_the_models_the_manager_holds(tmp_path):
    cfg = tmp_path / "config" / "modeldeck"
    cfg.mkdir(parents=True)
    (cfg / "settings.json").write_text(json.dumps({"preload": ["llama3.2:1b"]}))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "app", "status", "--json", "--simulate", "rtx3060"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    models = json.loads(out.stdout)["models"]
    assert [(m["model_id"], m["state"], m["device"]) for m in models] == [
        ("meta-llama/Llama-3.2-1B-Instruct", "loaded", "cuda:0")]
    assert models[0]["reserved_bytes"] > 1 << 30
