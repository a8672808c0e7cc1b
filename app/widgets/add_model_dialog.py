"""AddModelDialog: a form that becomes a validated ``ModelMetadata`` in the user's registry.

Validation is the core's (pydantic): the dialog shows the first error with the field it names
and stays open, so what the user typed is never lost.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit,
    QVBoxLayout, QWidget,
)

from app.core.model_registry import ModelMetadata, ModelProvider, ModelType, RegistryError
from app.core.quantization_strategy import fill_requirements
from app.widgets.registry_table_model import type_label

__all__ = ["AddModelDialog", "validation_message"]

RUNTIMES = ("transformers", "llama.cpp", "diffusers", "other")


def validation_message(err: ValidationError) -> str:
    """The first error as "field: message" (pydantic's own words)."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "model"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{field}: {msg}"


class AddModelDialog(QDialog):
    """Name, id, provider, type, parameters and runtime of a model the catalog does not know."""

    def __init__(self, registry: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add model")
        self._registry = registry
        self.registered: ModelMetadata | None = None

        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Llama 3.3 70B")
        self.id_edit = QLineEdit()
        self.id_edit.setPlaceholderText("meta-llama/Llama-3.3-70B-Instruct")
        self.id_edit.setToolTip("A Hugging Face repository id, or any unique id of your own.")
        self.provider_combo = QComboBox()
        self.provider_combo.setEditable(True)
        self.provider_combo.addItems([p.value for p in ModelProvider])
        self.provider_combo.setCurrentText(ModelProvider.OTHER.value)
        self.type_combo = QComboBox()
        for t in ModelType:
            self.type_combo.addItem(type_label(t.value), t.value)
        self.params_spin = QDoubleSpinBox()
        self.params_spin.setRange(0.0, 10_000.0)
        self.params_spin.setDecimals(2)
        self.params_spin.setSuffix(" B parameters")
        self.params_spin.setToolTip("Parameter count in billions; 0 if unknown (the model then cannot be estimated).")
        self.runtime_combo = QComboBox()
        self.runtime_combo.addItems(RUNTIMES)
        self.quant_check = QCheckBox("Can be quantized")
        self.quant_check.setChecked(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextFormat(Qt.TextFormat.PlainText)
        self.error_label.setStyleSheet("QLabel { color: #dc2626; }")
        self.error_label.setVisible(False)

        form = QFormLayout()
        form.addRow("&Name:", self.name_edit)
        form.addRow("&Id:", self.id_edit)
        form.addRow("&Provider:", self.provider_combo)
        form.addRow("&Type:", self.type_combo)
        form.addRow("P&arameters:", self.params_spin)
        form.addRow("&Runtime:", self.runtime_combo)
        form.addRow("", self.quant_check)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def metadata(self) -> ModelMetadata:
        """The form as ``ModelMetadata``; raises pydantic's ``ValidationError``."""
        billions = self.params_spin.value()
        runtime = self.runtime_combo.currentText()
        model_id = self.id_edit.text().strip()
        return ModelMetadata(
            name=self.name_edit.text().strip(),
            provider=self.provider_combo.currentText(),
            model_type=self.type_combo.currentData(),
            size_gb=billions or None,
            parameters=int(billions * 1e9) if billions else None,
            model_id=model_id or None,
            huggingface_id=model_id if "/" in model_id else "",
            runtime_backend=None if runtime == "other" else runtime,
            preferred_runtime_format="gguf" if runtime == "llama.cpp" else None,
            supports_quantization=self.quant_check.isChecked(),
            origin="user",
        )

    def accept(self) -> None:
        try:
            meta = self.metadata()
        except ValidationError as err:
            self.error_label.setText(validation_message(err))
            self.error_label.setVisible(True)
            return
        try:
            self.registered = self._registry.register_model(fill_requirements(meta))
        except RegistryError as err:  # the user's model list cannot be written: say so, keep the dialog open
            self.error_label.setText(str(err))
            self.error_label.setVisible(True)
            return
        super().accept()
