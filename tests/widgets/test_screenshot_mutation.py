"""The screenshot comparison sees what a user would: the REAL views, mutated, fail against the REAL references.

Each case renders a view exactly as its screenshot test does (by running that test's own function
with its own fixtures, the checker replaced by one that keeps the PNG), once as it is and once with
a mutation a user reported passing the old mean-difference check:

- the Loaded models table with every "Booked" figure doubled;
- the quantization dialog and the registry browser with their red "short"/"no" cells turned green.

The unmutated render must match the current reference (so a re-approved reference keeps this
honest) and the mutated one must not. Nothing is written beside the references.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.widgets import _screens
from tests.widgets import test_loaded_models as loaded_models
from tests.widgets import test_quantization_dialog as quantization_dialog
from tests.widgets import test_registry_browser as registry_browser

SCREENSHOT_TESTS = {
    "loaded": (loaded_models, "test_screenshot_loaded_models"),
    "quantization": (quantization_dialog, "test_screenshot_quantization_dialog"),
    "registry": (registry_browser, "test_screenshot_registry_browser"),
}


def _is_fixture(obj) -> bool:
    from _pytest.fixtures import FixtureFunctionDefinition

    return isinstance(obj, FixtureFunctionDefinition)


# The fixtures those modules define (manager, views, browser …) become this module's too, so their
# screenshot tests can run here with exactly the fixtures they have there, whatever they become.
for _module, _ in SCREENSHOT_TESTS.values():
    for _name, _obj in vars(_module).items():
        if _is_fixture(_obj):
            assert globals().get(_name, _obj) is _obj, f"two fixtures named {_name}"
            globals()[_name] = _obj


class _Capture:
    """Stands in for ``image_regression``: keeps what the test would have compared."""

    def __init__(self):
        self.png: bytes | None = None
        self.reference: Path | None = None

    def check(self, image_data: bytes, diff_threshold: float | None = None, *, basename=None, fullpath=None):
        assert self.png is None, "one screenshot per test"
        self.png = image_data
        self.basename, self.fullpath = basename, fullpath


def _render(request, which: str) -> tuple[bytes, Path]:
    """Run the screenshot test ``which`` with its fixtures; its PNG and the reference it is held to."""
    module, name = SCREENSHOT_TESTS[which]
    test = getattr(module, name)
    capture = _Capture()
    kwargs = {p: capture if p == "image_regression" else request.getfixturevalue(p)
              for p in inspect.signature(test).parameters}
    test(**kwargs)
    assert capture.png is not None, f"{name} took no screenshot"
    reference = (Path(capture.fullpath) if capture.fullpath
                 else _screens.reference_for(Path(module.__file__), name, capture.basename))
    assert reference.exists(), f"{reference} is missing: approve {name}'s screenshot first"
    return capture.png, reference


def _doubled(text: str) -> str:
    value, unit = re.fullmatch(r"([0-9.]+) (\w+)", text).groups()
    return f"{2 * float(value):.2f} {unit}"


@pytest.fixture
def booked_doubled(monkeypatch):
    """Every "Booked" cell of the Loaded models table shows twice its figure.

    Patches the ``data`` of each table model in app.widgets.loaded_models_table, keyed on the
    column's header, so it holds however that module names its model or orders its columns.
    """
    from PySide6.QtCore import QAbstractItemModel

    from app.widgets import loaded_models_table

    seen: list[str] = []

    def doubling(data):
        def doubled(self, index, role=Qt.ItemDataRole.DisplayRole):
            value = data(self, index, role)
            if (role == Qt.ItemDataRole.DisplayRole and index.isValid()
                    and self.headerData(index.column(), Qt.Orientation.Horizontal) == "Booked"):
                seen.append(value)
                return _doubled(value)
            return value
        return doubled

    models = [c for c in vars(loaded_models_table).values() if isinstance(c, type)
              and issubclass(c, QAbstractItemModel) and c.__module__ == loaded_models_table.__name__]
    assert models, "no table model in app.widgets.loaded_models_table"
    for cls in models:
        monkeypatch.setattr(cls, "data", doubling(cls.data))
    return seen


@pytest.fixture
def short_turned_green(monkeypatch):
    """The quantization dialog paints "short"/"no" cells in its "fits" green."""
    from app.widgets import quantization_dialog as qd

    monkeypatch.setattr(qd, "_SHORT", qd._FITS)


@pytest.fixture
def no_fit_turned_green(monkeypatch):
    """The registry browser paints its red "no" (does not fit) cells in the "fits" green."""
    from app.widgets.registry_table_model import FIT_LABELS

    monkeypatch.setitem(FIT_LABELS, "none", (FIT_LABELS["none"][0], FIT_LABELS["gpu"][1]))


@pytest.mark.parametrize("which", sorted(SCREENSHOT_TESTS))
def test_the_real_views_match_their_references_unmutated(request, which):
    png, reference = _render(request, which)
    comparison = _screens.compare(reference, png)
    assert comparison.ok, (f"{reference}: {comparison.describe()}\n(the view no longer matches its reference, "
                           "so its own screenshot test fails too: approve or fix that first)")


def test_every_booked_figure_doubled_fails(request, booked_doubled):
    png, reference = _render(request, "loaded")
    assert len(booked_doubled) >= 3 and all(v.endswith("GiB") for v in booked_doubled)
    comparison = _screens.compare(reference, png)
    assert not comparison.ok, "doubling every Booked figure passed the screenshot comparison"
    # the differences lie in the Booked column, not elsewhere
    assert comparison.tiles


def test_a_red_short_cell_turned_green_fails(request, short_turned_green):
    png, reference = _render(request, "quantization")
    comparison = _screens.compare(reference, png)
    assert not comparison.ok, "red 'short' cells painted green passed the screenshot comparison"
    # a changed colour is not anti-aliasing noise: whole tiles move by tens of levels
    assert not comparison.same_size or max(t.mean for t in comparison.tiles) > 10


def test_a_red_no_fit_cell_turned_green_fails(request, no_fit_turned_green):
    png, reference = _render(request, "registry")
    comparison = _screens.compare(reference, png)
    assert not comparison.ok, "red 'no' fit cells painted green passed the screenshot comparison"
    assert not comparison.same_size or max(t.mean for t in comparison.tiles) > 10


def test_the_checker_fails_a_mutated_render_without_touching_the_reference(request, booked_doubled, tmp_path):
    """Through the fixture's own path: a copy of the real reference, the mutated render pending beside it."""
    png, reference = _render(request, "loaded")
    copy = tmp_path / "test_loaded_models" / reference.name
    copy.parent.mkdir()
    copy.write_bytes(reference.read_bytes())
    checker = _screens.ScreenshotChecker(tmp_path / "test_loaded_models.py", reference.stem, root=tmp_path)
    with pytest.raises(pytest.fail.Exception, match="differs from its reference") as failed:
        checker.check(png, diff_threshold=0.001)
    assert copy.read_bytes() == reference.read_bytes()
    assert _screens.pending_path(copy).read_bytes() == png
    assert _screens.diff_path(copy).exists()
    assert "x " in str(failed.value) and "y " in str(failed.value)
