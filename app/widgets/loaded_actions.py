"""What an action on several loaded models would do, said before it is done; and the bar that offers Undo.

A bulk action (evict or offload of several selected rows, Ctrl+A included) is planned first with
:func:`plan_bulk`: which models it acts on, what each frees on which device (from the manager's
bookings), and which it leaves as they are and why (a pinned model is never touched by a bulk
action). :func:`ask_bulk` shows that plan in one dialog and acts only on "yes".
:class:`NoticeBar` is the inline line under the table that offers Undo after an offload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QFrame, QHBoxLayout, QLabel, QMessageBox, QPushButton, QToolButton, QWidget

from app.core.manager.lifecycle import LoadedModel, ModelState
from app.core.units import format_gib
from app.widgets.focus import return_focus_after
from app.widgets.ports import ManagerPort

__all__ = ["BulkPlan", "NoticeBar", "PHRASES", "ask_bulk", "plan_bulk", "runs_on_cpu"]

#: Per action: the button's word, what was done ("{}": the models' names), and the verb for a refusal.
PHRASES = {"unload": ("Evict", "Evicted {}", "evict"), "offload": ("Offload", "Offloaded {} to RAM", "offload"),
           "restore": ("Restore", "Restored {}", "restore"), "pin": ("Pin", "Pinned {}", "pin"),
           "unpin": ("Unpin", "Unpinned {}", "unpin"), "cancel": ("Stop loading", "Stopped loading {}", "stop loading")}


def runs_on_cpu(m: LoadedModel) -> bool:
    """Placed (not offloaded) on the CPU, whole or in part: it runs from RAM, slower than on a GPU."""
    kind = m.placement.kind if m.placement is not None else None
    return kind in ("cpu", "partial") and m.state != ModelState.OFFLOADED


@dataclass(frozen=True)
class BulkPlan:
    """One action on several models: what it does to each, what it frees per device, what it skips."""

    action: str
    targets: tuple[LoadedModel, ...]
    #: Bytes freed per model and device (booked bytes; an offload frees the GPUs only).
    frees: dict[str, dict[str, int]]
    skipped: tuple[tuple[LoadedModel, str], ...]

    @property
    def freed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for per_device in self.frees.values():
            for device, nbytes in per_device.items():
                out[device] = out.get(device, 0) + nbytes
        return out

    def lines(self) -> list[str]:
        """One line per model acted on, then the total per device, then what is left and why."""
        out = []
        for m in self.targets:
            where = ", ".join(f"{format_gib(b, 2)} on {d}" for d, b in self.frees.get(m.model_id, {}).items())
            out.append(f"• {m.name}: {where or 'nothing booked'}")
        if self.freed:
            out += ["", "Frees: " + " · ".join(f"{d} {format_gib(b, 2)}" for d, b in self.freed.items())]
        if self.skipped:
            out += ["", "Left as they are:"]
            out += [f"• {m.name}: {why}" for m, why in self.skipped]
        return out


def skip_reason(manager: ManagerPort, m: LoadedModel, action: str) -> str | None:
    """Why ``action`` is not done to ``m`` (None when it is allowed)."""
    allowed = manager.allowed_actions(m.model_id)
    if action in allowed:
        return None
    if m.pinned or "unpin" in allowed:
        return "pinned: never touched by an action on several models (unpin it to include it)"
    if action == "offload" and m.device == "cpu":
        return "already in RAM"
    return f"{manager.state_of(m.model_id).value} now"


def plan_bulk(manager: ManagerPort, models: Sequence[LoadedModel], action: str) -> BulkPlan:
    """What ``action`` ("unload" or "offload") on ``models`` would do now; nothing is changed."""
    booked: dict[str, dict[str, int]] = {}
    for device in manager.devices():
        for b in manager.bookings(device):
            if b.model_id is not None:
                booked.setdefault(b.model_id, {})[device] = b.bytes
    targets, skipped, frees = [], [], {}
    for m in models:
        why = skip_reason(manager, m, action)
        if why is not None:
            skipped.append((m, why))
            continue
        targets.append(m)
        mine = booked.get(m.model_id, {})
        frees[m.model_id] = {d: b for d, b in mine.items() if action == "unload" or d != "cpu"}
    return BulkPlan(action, tuple(targets), frees, tuple(skipped))


def ask_bulk(plan: BulkPlan, parent: QWidget, then: Callable[[tuple[str, ...]], None],
             never: Callable[[], None]) -> QMessageBox:
    """One dialog for ``plan``; ``then(ids)`` on yes (the ids shown, nothing else), ``never()`` when the
    user turned the question off. Cancel is the default button: nothing happens by a stray Enter."""
    title, _, verb = PHRASES[plan.action]
    n = len(plan.targets)
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(f"{title} {n} model{'s' if n != 1 else ''}?")
    what = "unloaded and their memory released" if plan.action == "unload" else "moved to system RAM (restorable)"
    box.setText(f"{n} of the {n + len(plan.skipped)} selected models will be {what}:" if n else
                f"ModelDeck may {verb} none of the selected models.")
    box.setInformativeText("\n".join(plan.lines()))
    go = box.addButton(f"{title} {n} model{'s' if n != 1 else ''}", QMessageBox.ButtonRole.DestructiveRole)
    go.setEnabled(n > 0)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    ask = QCheckBox("Don't ask again for several models")
    box.setCheckBox(ask)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    ids = tuple(m.model_id for m in plan.targets)

    def finished(_result: int) -> None:
        if box.clickedButton() is not go:
            return
        if ask.isChecked():
            never()
        then(ids)

    box.finished.connect(finished)
    return_focus_after(box, parent)
    box.open()
    return box


class NoticeBar(QFrame):
    """One line under the table: what was just done, with Undo when it is cheap to undo.

    Signals:
        sigUndo(): the user pressed Undo (or Ctrl+Z in the Loaded tab).
    """

    sigUndo = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.sigUndo)
        close = QToolButton()
        close.setText("×")
        close.setToolTip("Hide this line")
        close.setAccessibleName("Hide this line")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 2, 2)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.undo_button)
        layout.addWidget(close)
        self.hide()

    def show_text(self, text: str, undo: str | None = None) -> None:
        """``text``; with an Undo button whose tooltip is ``undo`` (what pressing it does) when given."""
        self.label.setText(text)
        self.undo_button.setVisible(undo is not None)
        self.undo_button.setToolTip(f"{undo} (Ctrl+Z)" if undo else "")
        self.show()

    @property
    def can_undo(self) -> bool:
        return not self.isHidden() and not self.undo_button.isHidden()
