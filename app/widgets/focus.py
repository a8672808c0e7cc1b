"""Focus goes back where it was when a dialog closes, even where no window manager hands it back.

Under a bare X server (or some tiling window managers) closing a window-modal dialog leaves no
window active, so a keyboard user is stranded. Each dialog the dashboard opens is followed with
:func:`return_focus_after`.
"""

from __future__ import annotations

import shiboken6
from PySide6.QtWidgets import QApplication, QDialog, QWidget

__all__ = ["return_focus_after"]


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
