"""A broken settings.json is one SettingsError that names the file, the field, what is allowed and what
to do; the file is never rewritten; nothing the user writes there hangs, crashes or is silently clamped."""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

from app.core.settings import (
    MAX_KEEP_ALIVE_S,
    MAX_RESERVE_MIB,
    SettingsError,
    UserSettings,
    load_settings,
)


def write(tmp_path, content: str | bytes):
    path = tmp_path / "settings.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _bytes(path) -> bytes | None:
    if not path.is_file():
        return None
    with open(path, "rb") as f:  # not Path.open, which a test may deny
        return f.read()


def refused(path, *words: str) -> str:
    before = _bytes(path)
    start = time.monotonic()
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, (word, message)
    if before is not None:
        assert _bytes(path) == before  # left untouched
    return message


@pytest.mark.parametrize(("content", "words"), [
    ('{"gpu_reserve_mib": 1000000000000}', ["gpu_reserve_mib", str(MAX_RESERVE_MIB), "1 TiB"]),
    ('{"ram_reserve_mib": 1000000000000}', ["ram_reserve_mib", "1 TiB"]),
    ('{"keep_alive_s": 1e300}', ["keep_alive_s", str(MAX_KEEP_ALIVE_S), "-1"]),
    ('{"keep_alive_s": -0.5}', ["keep_alive_s", "-1"]),  # once accepted: neither "forever" nor seconds
    ('{"keep_alive_s": 1e400}', ["keep_alive_s"]),
    ('{"max_loaded_models": 1000000000}', ["max_loaded_models", "256"]),
    ('{"schema_version": 99}', ["schema_version"]),
    ('{"gpu_reserve_mib": true}', ["gpu_reserve_mib", "true"]),  # once read as 1 MiB
    ('{"pressure_elevated": 0.95, "pressure_high": 0.9}', ["pressure_elevated", "pressure_high", "0.95"]),
    ('{"pressure_high": 0.99, "pressure_critical": 0.98}', ["pressure_high", "pressure_critical"]),
    ('{"preload": [["llama3.2:1b", "Q9_banana"]]}', ["preload", "Q9_banana", "Q4_K_M"]),
    ('{"preload": [""]}', ["preload"]),
    (json.dumps({"preload": ["llama3.2:1b"] * 65}), ["preload", "64"]),
    ('{"keep_alive_s": 60, "keep_alive_s": 600}', ["keep_alive_s", "twice"]),
    ('[1, 2]', ["JSON object"]),
    ('{"gpu_reserve_mib": ' + "9" * 5000 + "}", ["not valid JSON"]),
])
def test_out_of_range_or_inconsistent_settings_are_refused(tmp_path, content, words):
    refused(write(tmp_path, content), *words, "fix or remove")


def test_bad_utf8(tmp_path):
    refused(write(tmp_path, b'{"keep_alive_s": "\xff"}'), "UTF-8")


def test_a_byte_order_mark_is_fine(tmp_path):
    path = write(tmp_path, b'\xef\xbb\xbf{"keep_alive_s": 60}')
    assert load_settings(path).keep_alive_s == 60


def test_deep_nesting_is_refused_quickly(tmp_path):
    refused(write(tmp_path, "[" * 200_000 + "]" * 200_000), "nested")


def test_nesting_inside_a_field(tmp_path):
    refused(write(tmp_path, '{"preload": ' + "[" * 200_000 + "]" * 200_000 + "}"), "nested")


def test_a_huge_file_is_not_read_whole(tmp_path):
    refused(write(tmp_path, '{"preload": [' + ", ".join(['"x"'] * 400_000) + "]}"), "larger than")


def test_the_path_is_a_directory(tmp_path):
    path = tmp_path / "settings.json"
    path.mkdir()
    refused(path, "folder")
    assert path.is_dir()


def test_no_read_permission(tmp_path, monkeypatch):
    path = write(tmp_path, '{"keep_alive_s": 60}')
    real_open = pathlib.Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", deny)
    refused(path, "cannot read", "Permission denied", "chmod")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_no_read_permission_for_real(tmp_path):
    path = write(tmp_path, '{"keep_alive_s": 60}')
    path.chmod(0)
    try:
        with pytest.raises(SettingsError, match="cannot read"):
            load_settings(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("content", [
    '{"keep_alive_s": -1}',
    json.dumps({"keep_alive_s": MAX_KEEP_ALIVE_S, "max_loaded_models": 256, "gpu_reserve_mib": MAX_RESERVE_MIB,
                "ram_reserve_mib": 0, "pressure_elevated": 0.5, "pressure_high": 0.6, "pressure_critical": 1.0,
                "preload": ["llama3.2:1b", ["openai/whisper-small", "int8"], ["llama3.1:8b", "q4_k_m"]]}),
])
def test_settings_at_the_edges_of_their_ranges_are_accepted(tmp_path, content):
    settings = load_settings(write(tmp_path, content))
    settings.manager_settings()  # and the manager takes them


def test_defaults_are_valid_and_ordered():
    s = UserSettings()
    assert 0 < s.pressure_elevated < s.pressure_high < s.pressure_critical <= 1
