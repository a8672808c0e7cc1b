"""The tile comparison catches what a user would: a figure that changes, a cell that changes colour.

Renders here are deterministic (bundled fonts, Fusion, fixed sizes), so the tile tolerance only
absorbs rounding noise; these tests prove it is far below the smallest change that matters, however
large the view, and that a failing screenshot leaves its render pending beside the reference for an
explicit approval (tests/widgets/README.md). test_screenshot_mutation.py does the same on the real views.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QTableWidget, QTableWidgetItem

from tests.widgets import _screens
from tests.widgets._screens import TILE, ScreenshotChecker, compare
from tests.widgets._support import png_of

GREEN, RED = QColor(22, 163, 74, 60), QColor(220, 38, 38, 60)


def _table(qtbot, text: str, color: QColor, size: tuple[int, int] = (1200, 760)) -> bytes:
    table = QTableWidget(6, 6)
    qtbot.addWidget(table)
    for r in range(6):
        for c in range(6):
            table.setItem(r, c, QTableWidgetItem("fits, 3.2 GiB spare" if c == 5 else f"{r}.{c}0 GiB"))
    table.item(2, 3).setText(text)
    table.item(4, 5).setBackground(QBrush(color))
    return png_of(table, size)


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _cell_box(qtbot, row: int, col: int) -> tuple[int, int, int, int]:
    """Where cell (row, col) of the synthetic table lies in its screenshot, in pixels."""
    table = QTableWidget(6, 6)
    qtbot.addWidget(table)
    table.resize(1200, 760)
    table.show()
    rect = table.visualRect(table.model().index(row, col))
    origin = table.viewport().mapTo(table, rect.topLeft())
    return origin.x(), origin.y(), origin.x() + rect.width(), origin.y() + rect.height()


def _overlaps(tile, box) -> bool:
    x0, y0, x1, y1 = box
    return tile.x0 < x1 and x0 < tile.x1 and tile.y0 < y1 and y0 < tile.y1


def test_identical_renders_pass_and_are_deterministic(qtbot):
    a = _table(qtbot, "5.39 GiB", GREEN)
    b = _table(qtbot, "5.39 GiB", GREEN)
    comparison = compare(a, b)
    assert comparison.ok and comparison.tiles == []
    assert int(comparison.pixel_diff.max()) == 0  # not merely within the tolerance: equal


@pytest.mark.parametrize("text", ["10.78 GiB", "5.83 GiB", "5.38 GiB"])
def test_a_changed_figure_fails_in_the_tiles_of_its_cell(qtbot, text):
    base = _table(qtbot, "5.39 GiB", GREEN)
    changed = _table(qtbot, text, GREEN)
    comparison = compare(base, changed)
    assert not comparison.ok
    cell = _cell_box(qtbot, 2, 3)
    assert all(_overlaps(t, cell) for t in comparison.tiles), comparison.describe()
    # it is named with coordinates, inside the cell
    assert f"y {comparison.regions()[0].y0}–" in comparison.describe()


def test_a_cell_turning_from_green_to_red_fails_in_its_tiles(qtbot):
    green = _table(qtbot, "5.39 GiB", GREEN)
    red = _table(qtbot, "5.39 GiB", RED)
    comparison = compare(green, red)
    assert not comparison.ok
    cell = _cell_box(qtbot, 4, 5)
    assert all(_overlaps(t, cell) for t in comparison.tiles)
    assert max(t.mean for t in comparison.tiles) > 10  # a colour, not noise


def test_rounding_noise_passes_but_one_changed_pixel_fails():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 250, size=(200, 300, 3))
    noisy = base.copy()
    flips = rng.random(base.shape) < 0.05  # one level off in 5% of the channel values
    noisy[flips] += 1
    assert compare(_png(base), _png(noisy)).ok
    one = base.copy()
    one[150, 250] = (255, 255, 255) if base[150, 250].sum() < 300 else (0, 0, 0)
    comparison = compare(_png(base), _png(one))
    assert [(t.x0, t.y0) for t in comparison.tiles] == [(250 // TILE * TILE, 150 // TILE * TILE)]


def test_a_different_size_fails():
    a = np.zeros((100, 100, 3))
    assert not compare(_png(a), _png(np.zeros((100, 101, 3)))).ok


@pytest.fixture
def checker(tmp_path):
    """A checker for tests/…/test_views.py::test_screenshot_view, its references under ``tmp_path``."""
    return lambda approve=False: ScreenshotChecker(tmp_path / "test_views.py", "test_screenshot_view",
                                                   approve=approve, root=tmp_path)


def _reference(tmp_path, png: bytes | None = None):
    """The checker fixture's reference path, holding ``png`` if given."""
    reference = tmp_path / "test_views" / "test_screenshot_view.png"
    if png is not None:
        reference.parent.mkdir()
        reference.write_bytes(png)
    return reference


def test_a_new_screenshot_waits_for_approval(qtbot, tmp_path, checker):
    png = _table(qtbot, "5.39 GiB", GREEN)
    reference = _reference(tmp_path)
    with pytest.raises(pytest.fail.Exception, match="no reference yet"):
        checker().check(png, diff_threshold=0.001)
    assert not reference.exists()
    assert _screens.pending_path(reference).read_bytes() == png
    assert _screens.main(["--list", "--root", str(tmp_path)]) == 0
    assert _screens.pending_path(reference).exists()  # listing moves nothing
    assert _screens.main(["--root", str(tmp_path), "test_screenshot_view"]) == 0
    assert reference.read_bytes() == png and not _screens.pending_path(reference).exists()
    assert checker().check(png) is not None  # approved: passes


def test_a_changed_screenshot_never_overwrites_the_reference(qtbot, tmp_path, checker):
    before = _table(qtbot, "5.39 GiB", GREEN)
    after = _table(qtbot, "5.39 GiB", RED)
    reference = _reference(tmp_path, before)
    with pytest.raises(pytest.fail.Exception, match=r"differs from its reference(.|\n)*x \d+–\d+, y \d+–\d+"):
        checker().check(after, diff_threshold=0.001)
    assert reference.read_bytes() == before
    pending, diff = _screens.pending_path(reference), _screens.diff_path(reference)
    assert pending.read_bytes() == after
    with Image.open(diff) as image:
        assert image.size == (1200, 760)
    # rejecting deletes the pending render and its diff; the reference stays
    assert _screens.main(["--reject", "--root", str(tmp_path)]) == 0
    assert not pending.exists() and not diff.exists() and reference.read_bytes() == before
    # a name that matches nothing pending is an error
    assert _screens.main(["--root", str(tmp_path), "no_such_test"]) == 1
    # a render equal to the reference again passes and clears what an earlier run left pending
    pending.write_bytes(after)
    checker().check(before)
    assert not pending.exists()


def test_approving_from_pytest_replaces_the_reference_and_fails_once(qtbot, tmp_path, checker):
    before = _table(qtbot, "5.39 GiB", GREEN)
    after = _table(qtbot, "10.78 GiB", GREEN)
    reference = _reference(tmp_path, before)
    with pytest.raises(pytest.fail.Exception, match="replaced"):
        checker(approve=True).check(after)
    assert reference.read_bytes() == after
    assert not _screens.pending_path(reference).exists()
    checker().check(after)
