"""Widget-test settings: deterministic rendering and real core objects on simulated hardware.

Screenshots are only comparable with a fixed font (the bundled DejaVu Sans), the Fusion style,
a light palette, device pixel ratio 1, fixed widget sizes, simulated GPUs and RAM, and a clock
the test advances itself. ``QT_QPA_PLATFORM=offscreen`` is set by tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.widgets._screens import ScreenshotChecker
from tests.widgets._support import make_sampler

os.environ.setdefault("QT_SCALE_FACTOR", "1")
os.environ.setdefault("QT_ENABLE_HIGHDPI_SCALING", "0")

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "fonts"
FONT_FAMILY = "DejaVu Sans"
#: Kept for the call shape ``image_regression.check(png, diff_threshold=DIFF_THRESHOLD)``; ModelDeck's
#: checker (_screens.py) ignores it and fails as soon as one 32×32 px tile differs (TILE_TOLERANCE).
DIFF_THRESHOLD = 0.001


def pytest_addoption(parser):
    parser.getgroup("modeldeck screenshots").addoption(
        "--approve-screenshots", action="store_true", default=False,
        help="write each selected screenshot test's render over its reference where it differs (the test "
             "fails once, saying so); see tests/widgets/README.md. --force-regen does the same.")


@pytest.fixture
def image_regression(request):
    """ModelDeck's screenshot checker in place of pytest-regressions': tile by tile, pending renders
    beside the reference, approval an explicit step (tests/widgets/README.md, _screens.py)."""
    config = request.config
    approve = bool(config.getoption("--approve-screenshots", default=False)
                   or config.getoption("--force-regen", default=False))
    return ScreenshotChecker(request.path, request.node.name, approve=approve, root=config.rootpath)


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


@pytest.fixture
def manager(sampler, registry, clock):
    """A manager on the simulated GPUs and the test's clock; idle models expire after 5 minutes."""
    from app.core.model_resource_manager import ManagerSettings, ModelResourceManager

    return ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock,
                                settings=ManagerSettings(keep_alive_s=300))
