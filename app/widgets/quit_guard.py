"""Quitting with models loaded: what would be unloaded, and one question before it happens.

The standalone window asks through :func:`ask_before_quitting`; a host that docks the panel
decides for itself, with :func:`held_models` telling it what is at stake.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QMessageBox, QWidget

from app.core.manager.lifecycle import LoadedModel, ModelState
from app.core.units import format_gib
from app.widgets.focus import return_focus_after
from app.widgets.ports import ManagerPort

__all__ = ["held_models", "describe_held", "held_summary", "ask_before_quitting"]

#: A model in these states still holds memory (or is about to): quitting unloads it.
_HELD = frozenset(s for s in ModelState if s not in (ModelState.UNLOADED, ModelState.FAILED))


def held_models(manager: ManagerPort | None) -> tuple[LoadedModel, ...]:
    """The models quitting would unload (none without a manager)."""
    if manager is None:
        return ()
    return tuple(m for m in manager.loaded_models() if m.state in _HELD)


def describe_held(models: tuple[LoadedModel, ...]) -> list[str]:
    """One line per model: its name, where it is, what it holds, and a pin."""
    return [f"{m.name} on {m.device} ({format_gib(m.reserved_bytes, 2)}, {m.state.value}"
            + (", pinned)" if m.pinned else ")") for m in models]


def held_summary(manager: ManagerPort | None) -> str:
    """What ModelDeck holds now, for a host's "quit anyway?" question; "" when it holds nothing."""
    held = held_models(manager)
    if not held:
        return ""
    loading = [m.name for m in held if m.state == ModelState.LOADING]
    pinned = sum(1 for m in held if m.pinned)
    booked = {ledger.device: ledger.reserved_bytes for ledger in manager.ledgers() if ledger.reserved_bytes}
    n = len(held)
    text = f"{n} model{'s' if n != 1 else ''} held by ModelDeck" + (f" ({pinned} pinned)" if pinned else "")
    text += ": " + ", ".join(m.name for m in held) + "."
    if booked:
        text += " Booked: " + " · ".join(f"{d} {format_gib(b, 2)}" for d, b in booked.items()) + "."
    if loading:
        text += f" Still loading: {', '.join(loading)}."
    return text


def ask_before_quitting(parent: QWidget, models: tuple[LoadedModel, ...], quit_now: Callable[[], None],
                        never_again: Callable[[], None]) -> QMessageBox:
    """A window-modal question; ``quit_now()`` when the user confirms, ``never_again()`` too if ticked."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Quit ModelDeck?")
    total = sum(m.reserved_bytes for m in models)
    box.setText(f"{len(models)} model(s) are loaded ({format_gib(total, 2)} booked). Quitting unloads them.")
    box.setInformativeText("\n".join(f"• {line}" for line in describe_held(models)))
    go = box.addButton("&Quit and unload", QMessageBox.ButtonRole.AcceptRole)
    stay = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(stay)  # Enter does not unload by accident
    never = QCheckBox("Don't ask again")
    box.setCheckBox(never)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

    def done(_result: int) -> None:
        if box.clickedButton() is go:
            if never.isChecked():
                never_again()
            quit_now()

    box.finished.connect(done)
    return_focus_after(box, parent)
    box.open()
    return box
