"""The screenshot tolerance catches what a user would: a figure that changes, a cell that changes colour.

Renders here are deterministic (bundled fonts, Fusion, fixed sizes), so the tolerance only absorbs
anti-aliasing noise; these tests prove it is still far below the smallest change that matters.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageChops
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QTableWidget, QTableWidgetItem

from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD


def _distance(a: bytes, b: bytes) -> float:
    """pytest-regressions' image_regression metric: mean absolute difference, in percent."""
    ia, ib = (Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b))
    diff = np.asarray(ImageChops.difference(ia, ib), dtype=np.float64)
    return float(100.0 * diff.sum() / (3 * ia.size[0] * ia.size[1]) / 255.0)


def _table(qtbot, text: str, color: QColor, size: tuple[int, int]) -> bytes:
    table = QTableWidget(6, 6)
    qtbot.addWidget(table)
    for r in range(6):
        for c in range(6):
            table.setItem(r, c, QTableWidgetItem("fits, 3.2 GiB spare" if c == 5 else f"{r}.{c}0 GiB"))
    table.item(2, 3).setText(text)
    table.item(4, 5).setBackground(QBrush(color))
    return png_of(table, size)


def test_a_changed_figure_fails_the_comparison(qtbot):
    base = _table(qtbot, "5.39 GiB", QColor(22, 163, 74, 60), (1200, 760))
    doubled = _table(qtbot, "10.78 GiB", QColor(22, 163, 74, 60), (1200, 760))
    nudged = _table(qtbot, "5.83 GiB", QColor(22, 163, 74, 60), (1200, 760))
    assert _distance(base, base) == 0.0
    assert _distance(base, doubled) > DIFF_THRESHOLD
    assert _distance(base, nudged) > DIFF_THRESHOLD


def test_a_cell_turning_from_green_to_red_fails_the_comparison(qtbot):
    green = _table(qtbot, "5.39 GiB", QColor(22, 163, 74, 60), (1200, 760))
    red = _table(qtbot, "5.39 GiB", QColor(220, 38, 38, 60), (1200, 760))
    assert _distance(green, red) > DIFF_THRESHOLD
