"""SettingsDialog: keep-alive, safety reserves and "ask before making room", edited and saved.

It edits the core's :class:`app.core.settings.UserSettings` (the file ``modeldeck`` reads at start),
applies the result to the running manager with :meth:`ManagerPort.update_settings`, and saves it
with :func:`app.core.settings.save_settings` (atomic). Typed values are checked by the same rules
as the file; a wrong one is one line under the fields, and the dialog stays open.

The questions asked before acting ("ask before making room", before a bulk evict, before quitting)
are the dashboard's own settings (the shell keeps them in QSettings): the dialog shows one box per
question it is given and each change leaves through :attr:`SettingsDialog.sigConfirmChanged`.

Wiring (the shell's File › Settings…, Ctrl+,)::

    dialog = SettingsDialog(load_settings(), panel.manager, confirm={"moves": True}, labels=CONFIRMATIONS,
                            path=default_settings_path(), parent=window)
    dialog.sigConfirmChanged.connect(window.set_confirm)   # (key, on): apply it, store it
    dialog.open()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.core.settings import ALLOWED, SettingsError, UserSettings, save_settings, validate_settings
from app.core.units import MiB
from app.widgets.ports import ManagerPort

__all__ = ["SettingsDialog"]

#: The question a dialog without ``labels`` asks about: making room for a load.
_MOVES_LABEL = {"moves": "&Ask before making room for a load"}

#: Field -> (label, tooltip) for the values a user types.
_FIELDS: dict[str, tuple[str, str]] = {
    "keep_alive_s": ("&Keep models loaded for (s):",
                     "How long an idle model stays loaded before it is unloaded: seconds, 0 to unload as soon "
                     "as it is idle, -1 to keep it until you unload it. Applies to models loaded from now on."),
    "gpu_reserve_mib": ("&GPU safety reserve (MiB):",
                        "Memory ModelDeck never books on each GPU, for the driver and other programs' growth."),
    "ram_reserve_mib": ("&RAM safety reserve (MiB):",
                        "System memory ModelDeck never books, so the desktop stays responsive."),
}


class SettingsDialog(QDialog):
    """Edit the user's settings; OK validates, applies to the manager, saves, and closes.

    Signals:
        sigSettingsChanged(object): the new ``UserSettings`` after OK.
        sigConfirmChanged(str, bool): (question key, ask or not) after OK, for each question that changed.
    """

    sigSettingsChanged = Signal(object)
    sigConfirmChanged = Signal(str, bool)

    def __init__(self, settings: UserSettings, manager: ManagerPort | None = None, *,
                 confirm: Mapping[str, bool] | None = None, labels: Mapping[str, str] | None = None,
                 path: Path | str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = settings
        self._manager = manager
        self._path = Path(path) if path is not None else None
        labels = dict(labels or _MOVES_LABEL)
        self._confirm = {key: bool((confirm or {}).get(key, True)) for key in labels}
        self.error_label = QLabel()
        self.error_label.setTextFormat(Qt.TextFormat.PlainText)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("QLabel { color: #dc2626; }")
        self.error_label.setAccessibleName("Settings error")
        self.edits: dict[str, QLineEdit] = {}
        form = QFormLayout()
        for name, (label, tip) in _FIELDS.items():
            edit = QLineEdit(_plain(getattr(settings, name)))
            edit.setToolTip(f"{tip}\nAllowed: {ALLOWED[name]}.")
            edit.setPlaceholderText(_plain(getattr(UserSettings(), name)))
            edit.textEdited.connect(lambda _t: self.error_label.setText(""))
            form.addRow(label, edit)
            self.edits[name] = edit
        #: One box per question, by key.
        self.confirm_boxes: dict[str, QCheckBox] = {}
        for key, text in labels.items():
            box = QCheckBox(text)
            box.setToolTip("Show what will happen and wait for OK; untick to act at once.")
            box.setChecked(self._confirm[key])
            form.addRow(box)
            self.confirm_boxes[key] = box
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        where = f"Saved to {self._path}" if self._path is not None else "Applies to this session only"
        note = QLabel(f"{where}.")
        note.setWordWrap(True)
        note.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(note)
        layout.addWidget(self.buttons)

    def settings(self) -> UserSettings:
        """The settings as last accepted (the ones given, until OK succeeds)."""
        return self._settings

    @property
    def confirm(self) -> dict[str, bool]:
        """Each question's setting as last accepted."""
        return dict(self._confirm)

    def edited(self) -> UserSettings:
        """The fields over the current settings, checked; a SettingsError names the wrong one."""
        data = self._settings.model_dump()
        for name, edit in self.edits.items():
            text = edit.text().strip()
            label = _FIELDS[name][0].replace("&", "").rstrip(":")
            try:
                data[name] = float(text) if name == "keep_alive_s" else int(text)
            except ValueError:
                kind = "number" if name == "keep_alive_s" else "whole number"
                raise SettingsError(f"{label}: {text!r} is not a {kind} (allowed: {ALLOWED[name]})", name) from None
        try:
            return validate_settings(data)
        except SettingsError as err:
            field = err.args[1] if len(err.args) > 1 else ""
            label = _FIELDS[field][0].replace("&", "").rstrip(":") if field in _FIELDS else field
            raise SettingsError(str(err.args[0]).replace(f"{field}:", f"{label}:", 1), field) from None

    def accept(self) -> None:
        try:
            new = self.edited()
            if self._path is not None:
                save_settings(new, self._path)
        except SettingsError as err:
            self._show_error(str(err.args[0]), err.args[1] if len(err.args) > 1 else "")
            return
        except OSError as err:
            self._show_error(f"Could not save {self._path}: {err.strerror or err}; nothing was changed.", "")
            return
        if self._manager is not None:
            current = self._manager.settings
            self._manager.update_settings(dataclasses.replace(
                current, keep_alive_s=new.keep_alive_s,
                allocator=dataclasses.replace(current.allocator, gpu_reserve_bytes=new.gpu_reserve_mib * MiB,
                                              cpu_reserve_bytes=new.ram_reserve_mib * MiB)))
        self._settings = new
        self.sigSettingsChanged.emit(new)
        for key, box in self.confirm_boxes.items():
            if box.isChecked() != self._confirm[key]:
                self._confirm[key] = box.isChecked()
                self.sigConfirmChanged.emit(key, box.isChecked())
        super().accept()

    def _show_error(self, text: str, field: str) -> None:
        self.error_label.setText(" ".join(text.split()))
        edit = self.edits.get(field)
        if edit is not None:
            edit.setFocus()
            edit.selectAll()


def _plain(value: float | int) -> str:
    """A number as a person types it: 300, not 300.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)
