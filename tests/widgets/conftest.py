"""Widget-test settings: deterministic rendering and real core objects on simulated hardware.

Screenshots are only comparable with a fixed font (the bundled DejaVu Sans), the Fusion style,
a light palette, device pixel ratio 1, fixed widget sizes, simulated GPUs and RAM, and a clock
the test advances itself. ``QT_QPA_PLATFORM=offscreen`` is set by tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.widgets._support import make_sampler

os.environ.setdefault("QT_SCALE_FACTOR", "1")
os.environ.setdefault("QT_ENABLE_HIGHDPI_SCALING", "0")

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "fonts"
FONT_FAMILY = "DejaVu Sans"
#: Mean per-pixel difference (percent of 255) a screenshot may show before it fails. Renders are
#: deterministic here (bundled fonts, Fusion, fixed sizes: unchanged views differ by 0.000), and one
#: changed figure in a 1200×760 panel moves it by about 0.003, so the bar sits below that
#: (test_screenshot_threshold.py proves a changed figure or a red cell turning green fails).
DIFF_THRESHOLD = 0.001


@pytest.fixture(scope="session", autouse=True)
def _deterministic_qt(qapp):
    from PySide6.QtGui import QFont, QFontDatabase

    families: list[str] = []
    for ttf in sorted(RESOURCES.glob("*.ttf")):
        font_id = QFontDatabase.addApplicationFont(str(ttf))
        assert font_id >= 0, f"cannot load bundled font {ttf}"
        families += QFontDatabase.applicationFontFamilies(font_id)
    assert FONT_FAMILY in families
    qapp.setStyle("Fusion")
    qapp.setPalette(qapp.style().standardPalette())
    font = QFont(FONT_FAMILY)
    font.setPointSizeF(9.0)
    qapp.setFont(font)
    yield


@pytest.fixture
def clock():
    from app.demo import ManualClock

    return ManualClock()


@pytest.fixture
def sampler(clock):
    return make_sampler(clock)


@pytest.fixture
def registry(tmp_path):
    from app.core.model_registry import ModelRegistry

    return ModelRegistry(user_store=tmp_path / "models.json")


@pytest.fixture
def strategy():
    from app.core.quantization_strategy import QuantizationStrategy

    return QuantizationStrategy()
