"""ScanPreviewDialog: what a folder scan found, before anything is registered.

One row per model the scan read (a checkbox, its name, format, the level its file is stored at, its
size, where it is and how sure the figures are) and one per file it skipped, with the reason. Nothing
is registered until the user presses Register; then only the checked models are, at their own level.
"""

from __future__ import annotations

import os

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.importers import UNVERIFIED_PICKLE, ImportErrorKind, ModelImportError, ScannedModel
from app.core.model_registry import ModelMetadata, RegistryError
from app.core.units import format_gib
from app.widgets.ports import ManagedRegistry

__all__ = ["ScanPreviewDialog", "scanned_level", "scanned_confidence"]


def scanned_level(model: ScannedModel) -> str:
    """The level the file is stored at (what it is planned and loaded at), or "unknown"."""
    return model.file_type or ("16-bit (assumed)" if model.format == "pytorch-pickle" else "unknown")


def scanned_confidence(model: ScannedModel) -> str:
    """How sure the figures are, in words."""
    if model.notes and model.notes[0].startswith(UNVERIFIED_PICKLE):
        return f"{UNVERIFIED_PICKLE}: file size only"
    return "exact (from the header)" if model.exact else "approximate"


class ScanPreviewDialog(QDialog):
    """The models a scan found (checked by default) and the files it skipped, with reasons."""

    COLUMNS = ("Model", "Format", "Level", "Size", "Figures", "Path")

    def __init__(self, registry: ManagedRegistry, path: str, models: list[ScannedModel], errors: list[ModelImportError],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._registry = registry
        self.models = list(models)
        self.errors = list(errors)
        self.registered: list[ModelMetadata] = []
        self.setWindowTitle(f"Scan of {path}")
        self.resize(900, 480)

        found = QLabel(f"{len(self.models)} model(s) found under {path}. Nothing is registered until you press "
                       "Register; uncheck what you do not want.")
        found.setWordWrap(True)
        self.table = QTableWidget(len(self.models), len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setTabKeyNavigation(False)
        for row, model in enumerate(self.models):
            name = QTableWidgetItem(model.name)
            name.setFlags(name.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            name.setCheckState(Qt.CheckState.Checked)
            name.setToolTip("\n".join(model.notes) or model.path)
            self.table.setItem(row, 0, name)
            size = format_gib(model.weight_bytes, 2)
            for col, text in enumerate((model.format, scanned_level(model), size, scanned_confidence(model),
                                        model.path), start=1):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(row, col, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

        skipped = QLabel(f"{len(self.errors)} file(s) skipped:" if self.errors else "No file was skipped.")
        self.skipped = QTableWidget(len(self.errors), 2)
        self.skipped.setHorizontalHeaderLabels(["Skipped file", "Why"])
        self.skipped.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.skipped.verticalHeader().setVisible(False)
        self.skipped.setTabKeyNavigation(False)
        for row, err in enumerate(self.errors):
            why = err.message if err.kind == ImportErrorKind.NOT_A_MODEL else f"{err.kind.value}: {err.message}"
            where = os.path.relpath(err.path, path) if err.path.startswith(path.rstrip(os.sep) + os.sep) else err.path
            for col, (text, tip) in enumerate(((where, err.path), (why.replace("_", " ", 1), why))):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                self.skipped.setItem(row, col, item)
        self.skipped.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.skipped.setWordWrap(False)
        self.skipped.horizontalHeader().setStretchLastSection(True)
        self.skipped.setVisible(bool(self.errors))

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("QLabel { color: #dc2626; }")
        self.error_label.setVisible(False)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.register_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.table.itemChanged.connect(lambda _item: self._update_button())
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(found)
        layout.addWidget(self.table, 3)
        layout.addWidget(skipped)
        layout.addWidget(self.skipped, 2)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self._update_button()

    def checked(self) -> list[ScannedModel]:
        """The models to register."""
        return [m for row, m in enumerate(self.models) if self._name_item(row).checkState() == Qt.CheckState.Checked]

    def set_checked(self, row: int, checked: bool) -> None:
        self._name_item(row).setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def _name_item(self, row: int) -> QTableWidgetItem:
        item = self.table.item(row, 0)
        assert item is not None  # every row is filled in __init__
        return item

    def _update_button(self) -> None:
        n = len(self.checked())
        self.register_button.setText(f"&Register {n} model(s)")
        self.register_button.setEnabled(n > 0)

    def accept(self) -> None:
        """Register the checked models; a list that cannot be written is one line, the dialog stays."""
        registered: list[ModelMetadata] = []
        try:
            for model in self.checked():
                registered.append(self._registry.register_scanned(model))
        except RegistryError as err:
            self.registered = registered
            self.error_label.setText(f"{len(registered)} registered, then: {err}")
            self.error_label.setVisible(True)
            return
        self.registered = registered
        super().accept()
