"""LoadFlow: from a confirmed picker choice to a loaded model, without blocking the GUI thread.

A decision that moves other models is shown first (what, where, how much it frees) and waits for
one click; "Don't ask again" turns that off. The load itself is awaited on a running (qasync) loop,
or runs in a worker thread under a plain Qt loop (``app.exec()``: a host's sync loader then never
blocks its UI). A model that lands on the CPU, whole or in part, is said to run from RAM (slower).

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

from app.core.manager.lifecycle import LoadedModel
from app.core.manager.placement import Decision
from app.widgets.focus import return_focus_after
from app.widgets.ports import ManagerPort

__all__ = ["LoadFlow"]


class LoadFlow(QObject):
    sigStatus = Signal(str)
    sigConfirmChanged = Signal(bool)
    #: (model_id, the LoadedModel or None, error or None) from a worker thread, queued back to the GUI thread.
    _sigFinished = Signal(str, object, object)

    def __init__(self, manager: ManagerPort | None, names: Callable[[str], str], parent: QObject | None = None) -> None:
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
        return_focus_after(box, parent)
        box.open()
        return box

    def load(self, decision: Decision) -> None:
        """Book and load exactly ``decision`` (the manager re-validates it first)."""
        model_id = decision.model_id
        if self._manager is None:
            raise RuntimeError("LoadFlow.load needs a manager; without one the host loads the decision itself")
        self.sigStatus.emit(f"Loading {self._names(model_id)}: {decision.describe()}…")
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
        future.add_done_callback(lambda f: self._sigFinished.emit(
            model_id, None if f.cancelled() or f.exception() else f.result(), None if f.cancelled() else f.exception()))

    def _done(self, model_id: str, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled():
            err = task.exception()
            self._finished(model_id, None if err else task.result(), err)

    def _finished(self, model_id: str, loaded: LoadedModel | None, err: object) -> None:
        if self._closed:
            return
        name = self._names(model_id)
        if err is not None or loaded is None:
            self.sigStatus.emit(f"Could not load {name}: {err}")
            return
        placement = loaded.placement
        if placement is not None and placement.kind == "cpu":
            self.sigStatus.emit(f"Loaded {name} on the CPU (in RAM: slower than on a GPU)")
        elif placement is not None and placement.kind == "partial":
            self.sigStatus.emit(f"Loaded {name}: {placement.gpu_layers} of {placement.layers} layers on "
                                f"{placement.home_device}, the rest in RAM (slower than on a GPU)")
        else:
            self.sigStatus.emit(f"Loaded {name} ({loaded.device})")

    def shutdown(self) -> None:
        self._closed = True
        for task in list(self.pending):
            task.cancel()
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
