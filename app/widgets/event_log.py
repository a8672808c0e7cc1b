"""EventLog: every decision the manager made, with its reason, newest last; a flood is one line.

Evictions (manual or automatic) with why, state changes, pressure changes and re-quantization
proposals arrive through the bridge; messages from other views can be appended too. Repeats are
grouped: the same message again within :attr:`EventLog.GROUP_S` (10 min) does not add a line but
moves its line to the bottom with a count and the time it spans ("… ×3 in 2 min"), and a device's
pressure going back and forth is one line ("cuda:0 memory pressure ok ↔ elevated ×12 in 3 min, now
ok"). The log keeps the last 2,000 lines.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from app.core.manager.lifecycle import ModelState
from app.core.memory_allocator import PressureLevel

if TYPE_CHECKING:
    from app.widgets.bridge import CoreBridge

__all__ = ["EventLog"]

_LEVEL_ORDER = ("ok", "elevated", "high", "critical")


@dataclass(eq=False)  # a line is itself: two alike are still two lines
class _Group:
    """One line of the log: a message, or a run of the same news, and when it happened."""

    key: str
    text: str
    first: float
    last: float
    count: int = 1
    #: For a device's pressure line: every level it was at in this run.
    levels: set[str] = field(default_factory=set)
    device: str = ""

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.last))
        if self.count == 1:
            return f"{stamp}  {self.text}"
        span = _span(self.last - self.first)
        if self.levels:
            seen = " ↔ ".join(lv for lv in _LEVEL_ORDER if lv in self.levels) or self.text
            return f"{stamp}  {self.device} memory pressure {seen} ×{self.count} in {span}, now {self.text}"
        return f"{stamp}  {self.text} ×{self.count} in {span}"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EventLog(QWidget):
    """A read-only, timestamped list of what happened and why, repeats grouped into one line."""

    MAX_LINES = 2000
    #: A repeat later than this after its line's last occurrence starts a new line.
    GROUP_S = 600.0

    def __init__(self, bridge: CoreBridge | None = None, *, clock: Callable[[], float] = time.time,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._clock = clock
        self._groups: deque[_Group] = deque(maxlen=self.MAX_LINES)
        self._latest: dict[str, _Group] = {}
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(self.MAX_LINES)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("Loads, evictions and their reasons appear here.")
        self.text.setToolTip("What the manager did and why, newest last; repeats are one line with a count")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.text)
        if bridge is not None:
            bridge.sigEvicted.connect(lambda mid, why: self.append(f"{mid} {why}"))
            bridge.sigModelStateChanged.connect(self._on_state)
            bridge.sigPressureChanged.connect(self.append_pressure)
            bridge.sigQuantizationProposed.connect(
                lambda p: self.append(f"suggestion: {p.model_id} {p.current} → {p.proposed}: {p.reason}"))

    def _on_state(self, model_id: str, old: ModelState | str, new: ModelState | str) -> None:
        new_value = getattr(new, "value", new)
        if new_value in ("loaded", "failed", "offloaded", "unloaded"):
            self.append(f"{model_id} is {new_value}")

    def append(self, message: str) -> None:
        """Log ``message``; the same message again soon after is counted on its line."""
        text = " · ".join(part for part in str(message).splitlines() if part.strip())
        self._add(text, text)

    def append_pressure(self, device: str, level: PressureLevel | str) -> None:
        """A device's new pressure level; its changes within :attr:`GROUP_S` share one line."""
        value = str(getattr(level, "value", level))
        group = self._add(f"pressure {device}", value, first_text=f"{device} memory pressure is now {value}")
        group.levels.add(value)
        group.device = device
        self._render(group)

    def lines(self) -> list[str]:
        return self.text.toPlainText().splitlines()

    # --- internals -------------------------------------------------------------------------------
    def _add(self, key: str, text: str, first_text: str | None = None) -> _Group:
        now = self._clock()
        group = self._latest.get(key)
        if group is not None and now - group.last <= self.GROUP_S and group in self._groups:
            group.count += 1
            group.last = now
            group.text = text
            self._render(group)
            return group
        group = _Group(key, first_text or text, now, now)
        self._latest[key] = group
        if len(self._groups) == self._groups.maxlen:
            dropped = self._groups[0]
            if self._latest.get(dropped.key) is dropped:
                del self._latest[dropped.key]
        self._groups.append(group)
        self.text.appendPlainText(group.line())
        return group

    def _render(self, group: _Group) -> None:
        """Rewrite ``group``'s line, moved to the bottom: the log stays newest last."""
        index = self._groups.index(group)
        doc = self.text.document()
        if index != len(self._groups) - 1:
            cursor = QTextCursor(doc.findBlockByNumber(index))
            cursor.movePosition(QTextCursor.MoveOperation.NextBlock, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()
            del self._groups[index]
            self._groups.append(group)
            self.text.appendPlainText(group.line())
            return
        cursor = QTextCursor(doc.lastBlock())
        cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(group.line())
