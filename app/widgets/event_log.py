"""EventLog: every decision the manager made, with its reason, newest last.

Evictions (manual or automatic) with why, state changes, pressure changes and re-quantization
proposals arrive through the bridge; messages from other views can be appended too. The log keeps
the last 2,000 lines.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

__all__ = ["EventLog"]


class EventLog(QWidget):
    """A read-only, timestamped list of what happened and why."""

    MAX_LINES = 2000

    def __init__(self, bridge: Any = None, *, clock: Callable[[], float] = time.time,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._clock = clock
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(self.MAX_LINES)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("Loads, evictions and their reasons appear here.")
        self.text.setToolTip("What the manager did and why, newest last")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.text)
        if bridge is not None:
            bridge.sigEvicted.connect(lambda mid, why: self.append(f"{mid} {why}"))
            bridge.sigModelStateChanged.connect(self._on_state)
            bridge.sigPressureChanged.connect(
                lambda device, level: self.append(f"{device} memory pressure is now {getattr(level, 'value', level)}"))
            bridge.sigQuantizationProposed.connect(
                lambda p: self.append(f"suggestion: {p.model_id} {p.current} → {p.proposed}: {p.reason}"))

    def _on_state(self, model_id: str, old: Any, new: Any) -> None:
        new_value = getattr(new, "value", new)
        if new_value in ("loaded", "failed", "offloaded", "unloaded"):
            self.append(f"{model_id} is {new_value}")

    def append(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self._clock()))
        self.text.appendPlainText(f"{stamp}  {message}")

    def lines(self) -> list[str]:
        return self.text.toPlainText().splitlines()
