"""LoadFlow: from a confirmed picker choice to a loaded model, without blocking the GUI thread.

A decision that moves other models is shown first (what, where, how much it frees) and waits for
one click; "Don't ask again" turns that off. The load itself is awaited on a running (qasync) loop,
or runs in a worker thread under a plain Qt loop (a host's sync loader then never blocks its UI).

Signals:
    sigStatus(str): one-line news (loading, loaded, could not load, not loaded).
    sigConfirmChanged(bool): the user turned the make-room question off (False).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QCheckBox, QMessageBox, QWidget

from app.core.manager.placement import Decision

__all__ = ["LoadFlow"]


class LoadFlow(QObject):
    sigStatus = Signal(str)
    sigConfirmChanged = Signal(bool)
    #: (model_id, error or None) from a worker thread, queued back to the GUI thread.
    _sigFinished = Signal(str, object)

    def __init__(self, manager: Any, names: Callable[[str], str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._manager = manager
        self._names = names
        self.confirm_moves = True
        self.confirm_box: QMessageBox | None = None
        self.pending: set[asyncio.Task[Any]] = set()
        self._workers: ThreadPoolExecutor | None = None
        self._closed = False
        self._sigFinished.connect(self._finished)

    def ask_then(self, decision: Decision, parent: QWidget, then: Callable[[], None]) -> None:
        """``then()`` at once, or after the user agreed to the models the decision moves."""
        if decision.actions and self.confirm_moves:
            self.ask_to_make_room(decision, parent, then)
        else:
            then()

    def ask_to_make_room(self, decision: Decision, parent: QWidget, then: Callable[[], None]) -> QMessageBox:
        box = QMessageBox(parent)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Make room?")
        box.setText(f"Loading {self._names(decision.model_id)} as {decision.placement.describe()} first needs:")
        box.setInformativeText("\n".join(f"• {a.describe()}" for a in decision.actions))
        box.setDetailedText("\n".join(a.reason for a in decision.actions))
        go = box.addButton("&Make room and load", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(go)
        never = QCheckBox("Don't ask again")
        box.setCheckBox(never)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def done(_result: int) -> None:
            self.confirm_box = None
            if box.clickedButton() is not go:
                self.sigStatus.emit(f"Not loaded: {self._names(decision.model_id)} (nothing was moved)")
                return
            if never.isChecked():
                self.confirm_moves = False
                self.sigConfirmChanged.emit(False)
            then()

        box.finished.connect(done)
        self.confirm_box = box
        box.open()
        return box

    def load(self, decision: Decision) -> None:
        """Book and load exactly ``decision`` (the manager re-validates it first)."""
        model_id = decision.model_id
        self.sigStatus.emit(f"Loading {model_id}: {decision.describe()}…")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(self._manager.aload(model_id, placement=decision))
            self.pending.add(task)  # qasync can let unreferenced tasks be collected
            task.add_done_callback(lambda t: self._done(model_id, t))
            return
        if self._workers is None:
            self._workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modeldeck-load")
        future = self._workers.submit(self._manager.load, model_id, placement=decision)
        future.add_done_callback(lambda f: self._sigFinished.emit(model_id, f.exception()))

    def _done(self, model_id: str, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled():
            self._finished(model_id, task.exception())

    def _finished(self, model_id: str, err: object) -> None:
        if not self._closed:
            self.sigStatus.emit(f"Loaded {model_id}" if err is None else f"Could not load {model_id}: {err}")

    def shutdown(self) -> None:
        self._closed = True
        for task in list(self.pending):
            task.cancel()
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
