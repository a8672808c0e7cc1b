"""UsageBar: clamps its value, says it to a screen reader, and repaints only when the fill moves."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication

from app.widgets.usage_bar import UsageBar


class _Paints(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def eventFilter(self, _o: QObject, e: QEvent) -> bool:  # noqa: N802
        if e.type() == QEvent.Type.Paint:
            self.n += 1
        return False


def test_value_is_clamped_and_spoken(qtbot):
    bar = UsageBar()
    qtbot.addWidget(bar)
    bar.setValue(1500)
    assert bar.value() == 1000 and bar.accessibleDescription() == "100 %"
    bar.setValue(-3)
    assert bar.value() == 0 and bar.accessibleDescription() == "0 %"


def test_it_repaints_only_when_the_filled_width_changes(qtbot):
    bar = UsageBar()
    qtbot.addWidget(bar)
    bar.resize(102, 8)  # 100 px of fill: one pixel is 10 per mille
    bar.show()
    qtbot.waitExposed(bar)
    paints = _Paints()
    bar.installEventFilter(paints)
    bar.setValue(500)
    QApplication.processEvents()
    assert paints.n == 1
    bar.setValue(503)  # the same 50 px
    QApplication.processEvents()
    assert paints.n == 1
    bar.setValue(520)
    QApplication.processEvents()
    assert paints.n == 2
