"""Static checks are part of the suite: ruff over the code, mypy over the GUI-free core.

Both run from the test environment (``python -m ruff`` / ``python -m mypy``) with the
configuration in ``pyproject.toml``; a failure shows the tool's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF_PATHS = ("app", "tests", "benchmarks", "packaging")


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_ruff_finds_nothing():
    out = _run("ruff", "check", "--no-cache", "--output-format", "concise", *RUFF_PATHS, timeout=120)
    if out.returncode != 0:
        pytest.fail(f"ruff check {' '.join(RUFF_PATHS)} failed:\n{out.stdout}{out.stderr}", pytrace=False)


@pytest.mark.mypy
def test_mypy_passes_on_core():
    """Slow (tens of seconds on a cold cache): mypy over app/core, as configured in pyproject.toml."""
    out = _run("mypy", "app/core", timeout=600)
    if out.returncode != 0:
        pytest.fail(f"mypy app/core failed:\n{out.stdout}{out.stderr}", pytrace=False)
