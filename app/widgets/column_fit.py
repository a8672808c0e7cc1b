"""Narrow tables keep their name column readable: the least needed columns step aside first.

In a dock a few hundred pixels wide, a table whose other columns keep their widths squeezes the
name to "Mi…". :func:`keep_readable` hides columns in the given order while the name column would
be narrower than it needs, and shows them again as the table widens. What a hidden column said is
still in the row's detail (the detail pane, the tooltip), so nothing is lost, only folded.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QTableView

__all__ = ["keep_readable"]


class _ColumnFit(QObject):
    def __init__(self, view: QTableView, column: int, min_width: int, drop_order: Sequence[int]) -> None:
        super().__init__(view)
        self._view = view
        self._column = column
        self._min = min_width
        self._order = tuple(drop_order)
        #: Each droppable column's width when last shown (a hidden section reports none).
        self._widths: dict[int, int] = {}

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False

    def fit(self) -> None:
        view, header = self._view, self._view.horizontalHeader()
        width = view.viewport().width()
        if width <= 0:
            return
        shown = [c for c in range(header.count()) if c != self._column and c not in self._order]
        others = sum(self._width_of(c) for c in shown)
        keep = list(self._order)
        # Drop columns from the front of the order until the name has its width (or nothing is left to drop).
        while keep and width - others - sum(self._width_of(c) for c in keep) < self._min:
            keep.pop(0)
        for c in self._order:
            view.setColumnHidden(c, c not in keep)

    def _width_of(self, column: int) -> int:
        header = self._view.horizontalHeader()
        if not header.isSectionHidden(column):
            self._widths[column] = header.sectionSize(column)
        return self._widths.get(column, header.defaultSectionSize())


def keep_readable(view: QTableView, column: int, min_width: int, drop_order: Sequence[int]) -> None:
    """Keep ``column`` at least ``min_width`` px wide by hiding ``drop_order``'s columns, first first."""
    fit = _ColumnFit(view, column, min_width, drop_order)
    view.viewport().installEventFilter(fit)
    fit.fit()
