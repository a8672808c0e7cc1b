"""Shared test settings. Core tests never import Qt; widget tests live in tests/widgets."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real configuration or data."""
    base = tmp_path_factory.mktemp("home")
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(base / var.lower()))
    yield


def pytest_configure(config):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
