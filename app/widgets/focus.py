"""Keyboard focus that goes where a keyboard user expects.

- Focus goes back where it was when a dialog closes, even where no window manager hands it back:
  under a bare X server (or some tiling window managers) closing a window-modal dialog leaves no
  window active, so each dialog the dashboard opens is followed with :func:`return_focus_after`.
- A table reached with Tab has its focused row selected (:func:`select_current_on_focus`), so Enter
  and Delete act on the row the user sees.
"""

from __future__ import annotations

import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QFocusEvent
from PySide6.QtWidgets import QAbstractItemView, QApplication, QDialog, QTableView, QWidget

__all__ = ["return_focus_after", "select_current_on_focus"]


def return_focus_after(dialog: QDialog, fallback: QWidget | None = None) -> None:
    """When ``dialog`` finishes, activate the window that had focus before and focus its widget again."""
    before = QApplication.focusWidget() or fallback
    if before is None:
        return
    widget = before

    def back(_result: int) -> None:
        if not shiboken6.isValid(widget):  # deleted while the dialog was open
            return
        window = widget.window()
        if window.isVisible():
            window.activateWindow()
            widget.setFocus()

    dialog.finished.connect(back)


#: Focus that the keyboard moved (not a click, which selects by itself, nor a window activation).
_KEYBOARD_REASONS = (Qt.FocusReason.TabFocusReason, Qt.FocusReason.BacktabFocusReason,
                     Qt.FocusReason.ShortcutFocusReason)


class _SelectOnFocus(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if (event.type() == QEvent.Type.FocusIn and isinstance(watched, QAbstractItemView)
                and isinstance(event, QFocusEvent) and event.reason() in _KEYBOARD_REASONS):
            model, selection = watched.model(), watched.selectionModel()
            if model is not None and selection is not None and not selection.hasSelection() and model.rowCount():
                current = watched.currentIndex()
                index = current if current.isValid() else model.index(0, 0)
                if isinstance(watched, QTableView):
                    watched.selectRow(index.row())
                else:
                    watched.setCurrentIndex(index)
        return False


def select_current_on_focus(view: QAbstractItemView) -> None:
    """A table reached with the keyboard has a row selected (the current one, else the first), so the
    keys that act on the selection (Enter, Delete) act on the row the user sees focused."""
    view.installEventFilter(_SelectOnFocus(view))
