"""ShortcutsDialog: every key the window answers to, read from the window itself.

Menu shortcuts come from the menu bar's actions and Alt+letter keys from the mnemonics of the
visible tabs, buttons and labelled fields, so the list cannot drift from what the keys do. The
keys that act inside a view (Enter in a table …) are declared by each view as ``KEYS``.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMainWindow,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

__all__ = ["ShortcutsDialog", "collect_shortcuts", "mnemonic_of", "GENERAL_KEYS"]

#: Keys Qt gives every window, which the dashboard relies on.
GENERAL_KEYS: tuple[tuple[str, str], ...] = (
    ("Tab / Shift+Tab", "Move to the next / previous control (tables pass it on)"),
    ("Ctrl+Tab / Ctrl+Shift+Tab", "Next / previous tab"),
    ("Esc", "Close a dialog without acting"),
)


def mnemonic_of(text: str) -> str | None:
    """The letter after a single '&' ("Loa&ded" → "D"); None without one."""
    i = 0
    while (i := text.find("&", i)) >= 0 and i + 1 < len(text):
        if text[i + 1] != "&":
            return text[i + 1].upper()
        i += 2
    return None


def _plain(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…").rstrip(":").strip()


def _menu_keys(window: QMainWindow) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []

    def walk(actions: list[QAction], path: str) -> None:
        for action in actions:
            menu = action.menu()
            name = f"{path} › {_plain(action.text())}" if path else _plain(action.text())
            if menu is not None:
                letter = mnemonic_of(action.text())
                if not path and letter:
                    rows.append((f"Alt+{letter}", f"{name} menu"))
                walk(menu.actions(), name)
            elif not action.isSeparator() and not action.shortcut().isEmpty():  # the primary key only
                rows.append((action.shortcut().toString(QKeySequence.SequenceFormat.NativeText), name))
    walk(window.menuBar().actions(), "")
    return rows


def _mnemonic_keys(root: QWidget) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for tabs in root.findChildren(QTabWidget):
        for i in range(tabs.count()):
            letter = mnemonic_of(tabs.tabText(i))
            if letter and tabs.isVisibleTo(root):
                rows.append((f"Alt+{letter}", f"{_plain(tabs.tabText(i))} tab"))
    for button in root.findChildren(QAbstractButton):
        letter = mnemonic_of(button.text())
        if letter and button.isVisibleTo(root):
            rows.append((f"Alt+{letter}", _plain(button.text())))
    for label in root.findChildren(QLabel):
        letter = mnemonic_of(label.text())
        if letter and label.buddy() is not None and label.isVisibleTo(root):
            rows.append((f"Alt+{letter}", f"Go to {_plain(label.text())}"))
    return rows


def _view_keys(root: QWidget) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for widget in [root, *root.findChildren(QWidget)]:
        for key, what in getattr(type(widget), "KEYS", ()):
            if (key, what) not in rows:
                rows.append((key, what))
    return rows


def collect_shortcuts(window: QMainWindow) -> list[tuple[str, str]]:
    """(key, what it does) for the menus, the mnemonics in view, each view's keys and Qt's general keys."""
    central = window.centralWidget() or window
    return _menu_keys(window) + _mnemonic_keys(central) + _view_keys(central) + list(GENERAL_KEYS)


class ShortcutsDialog(QDialog):
    """A read-only table of :func:`collect_shortcuts`."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        self.rows = collect_shortcuts(window)
        self.table = QTableWidget(len(self.rows), 2)
        self.table.setHorizontalHeaderLabels(["Key", "Does"])
        self.table.setAccessibleName("Keyboard shortcuts")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)
        for r, (key, what) in enumerate(self.rows):
            self.table.setItem(r, 0, QTableWidgetItem(key))
            self.table.setItem(r, 1, QTableWidgetItem(what))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(520, 460)
