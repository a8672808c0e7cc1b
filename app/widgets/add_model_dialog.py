"""AddModelDialog: a form that becomes a validated ``ModelMetadata`` in the user's registry, to add
a model or edit one of the user's own.

Validation is the core's (pydantic, then ``validate_user_model``): the dialog shows the first error
beside the field it names and stays open, so what the user typed is never lost. An id that is a
built-in model's is refused by the core; the dialog then offers "Save as a copy" (a free id) or
"Override the built-in" (deleting the override later brings the built-in back).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QLabel,
    QLineEdit, QMessageBox, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from app.core.importers import ModelImportError, read_architecture
from app.core.model_registry import (
    BuiltinConflict, InvalidModel, ModelArchitecture, ModelMetadata, ModelProvider, ModelType, RegistryError,
)
from app.core.quantization_strategy import fill_requirements
from app.widgets.ports import ManagedRegistry
from app.widgets.registry_table_model import type_label
from app.widgets.focus import return_focus_after

__all__ = ["AddModelDialog", "ModelEditing", "validation_message", "ARCHITECTURE_FIELDS"]

RUNTIMES = ("transformers", "llama.cpp", "diffusers", "other")
#: The architecture the estimator needs for an LLM's KV cache and compute buffer: (field, label, tip).
ARCHITECTURE_FIELDS = (
    ("layers", "&Layers:", "Transformer blocks (num_hidden_layers)."),
    ("hidden_size", "Hidden si&ze:", "Width of the model (hidden_size)."),
    ("heads", "Attention h&eads:", "Query heads (num_attention_heads)."),
    ("kv_heads", "&KV heads:", "Key/value heads (num_key_value_heads); the KV cache grows with them."),
    ("head_dim", "Head di&m:", "Width of one head (head_dim); 0: hidden size / heads."),
    ("max_context", "Conte&xt:", "The longest context the model supports (max_position_embeddings)."),
    ("vocab_size", "&Vocabulary:", "Tokens in the vocabulary (vocab_size)."),
)
_REQUIREMENTS = ("min_vram_gb", "recommended_vram_gb", "min_ram_gb", "recommended_ram_gb")
_NO_KV = ("No layers, hidden size and heads: the KV cache cannot be estimated and will be missing from every "
          "estimate. Fill them in, or read them from a file.")


def validation_message(err: ValidationError) -> str:
    """The first error as "field: message" (pydantic's own words)."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "model"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{field}: {msg}"


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setStyleSheet("QLabel { color: #dc2626; }")
    return label


class AddModelDialog(QDialog):
    """Name, id, provider, type, parameters, runtime and (for LLMs) architecture of a model."""

    def __init__(self, registry: ManagedRegistry, parent: QWidget | None = None, *,
                 editing: ModelMetadata | None = None) -> None:
        super().__init__(parent)
        self._registry = registry
        self._editing = editing
        self._file_arch: dict[str, Any] = {}  # every field the file stated (family, intermediate size …)
        #: An exact count (from a file, or the model edited), kept while the spin box still shows it.
        self._exact_params: int | None = editing.parameter_count if editing else None
        self.registered: ModelMetadata | None = None
        self.setWindowTitle(f"Edit {editing.name}" if editing else "Add model")

        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Llama 3.3 70B")
        self.id_edit = QLineEdit()
        self.id_edit.setPlaceholderText("meta-llama/Llama-3.3-70B-Instruct")
        self.id_edit.setToolTip("A Hugging Face repository id (org/name), or the path of the model's file or folder.")
        self.provider_combo = QComboBox()
        self.provider_combo.setEditable(True)
        self.provider_combo.addItems([p.value for p in ModelProvider])
        self.provider_combo.setCurrentText(ModelProvider.OTHER.value)
        self.type_combo = QComboBox()
        for t in ModelType:
            self.type_combo.addItem(type_label(t.value), t.value)
        self.params_spin = QDoubleSpinBox()
        self.params_spin.setRange(0.0, 10_000.0)
        self.params_spin.setDecimals(3)
        self.params_spin.setSuffix(" B parameters")
        self.params_spin.setToolTip("Parameter count in billions; needed unless the architecture is read from a file.")
        self.runtime_combo = QComboBox()
        self.runtime_combo.addItems(RUNTIMES)
        self.quant_check = QCheckBox("Can be &quantized")
        self.quant_check.setChecked(True)
        self.arch_spins: dict[str, QSpinBox] = {}
        for field, _label, tip in ARCHITECTURE_FIELDS:
            spin = QSpinBox()
            spin.setRange(0, 10_000_000)
            spin.setSpecialValueText("unknown")
            spin.setToolTip(tip + " 0: unknown.")
            spin.valueChanged.connect(self._update_hints)
            self.arch_spins[field] = spin
        self.read_button = QPushButton("Rea&d from config.json / GGUF…")
        self.read_button.setToolTip("Fill the architecture (and the parameter count, where the file has it) from "
                                    "a GGUF file, a safetensors file or a Hugging Face config.json.")
        self.read_button.clicked.connect(self._choose_file)
        self.arch_source = QLabel()
        self.arch_source.setWordWrap(True)
        self.kv_hint = QLabel(_NO_KV)
        self.kv_hint.setWordWrap(True)
        self.kv_hint.setStyleSheet("QLabel { color: #b45309; }")

        self.form = QFormLayout()
        self._errors: dict[str, QLabel] = {}
        self._add_row("&Name:", self.name_edit, "name")
        self._add_row("&Id:", self.id_edit, "model_id")
        self._add_row("&Provider:", self.provider_combo, "provider")
        self._add_row("&Type:", self.type_combo, "model_type")
        self._add_row("P&arameters:", self.params_spin, "parameters")
        self._add_row("&Runtime:", self.runtime_combo, "runtime_backend")
        self.form.addRow("", self.quant_check)
        self.arch_box = QGroupBox("Architecture (language models: what the KV cache is estimated from)")
        arch_form = QFormLayout(self.arch_box)
        for field, label, _tip in ARCHITECTURE_FIELDS:
            arch_form.addRow(label, self.arch_spins[field])
        arch_form.addRow(self.read_button)
        arch_form.addRow(self.arch_source)
        arch_form.addRow(self.kv_hint)
        self.arch_error = _error_label()
        arch_form.addRow(self.arch_error)
        self._errors["architecture"] = self.arch_error
        self.arch_error.setVisible(False)

        self.error_label = _error_label()  # what belongs to no field (the user's list cannot be written …)
        self.error_label.setVisible(False)
        self.copy_button = QPushButton("Save as a cop&y")
        self.override_button = QPushButton("&Override the built-in")
        self.copy_button.clicked.connect(self.save_as_copy)
        self.override_button.clicked.connect(self.save_as_override)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setText("&Save")
        self.buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.buttons.addButton(self.override_button, QDialogButtonBox.ButtonRole.ActionRole)
        self._show_conflict(None)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.arch_box)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.type_combo.currentIndexChanged.connect(self._update_hints)
        if editing is not None:
            self._fill(editing)
        self._update_hints()
        self.setMinimumWidth(640)

    # --- the form ----------------------------------------------------------------------------------
    def _add_row(self, label: str, widget: QWidget, field: str) -> None:
        self.form.addRow(label, widget)
        error = _error_label()
        self.form.addRow("", error)
        self.form.setRowVisible(error, False)
        self._errors[field] = error

    def _fill(self, meta: ModelMetadata) -> None:
        self.name_edit.setText(meta.name)
        self.id_edit.setText(meta.id)
        self.provider_combo.setCurrentText(meta.provider_name)
        self.type_combo.setCurrentIndex(max(0, self.type_combo.findData(meta.model_type.value)))
        self.params_spin.setValue((meta.parameter_count or 0) / 1e9)
        self.runtime_combo.setCurrentText(meta.runtime_backend if meta.runtime_backend in RUNTIMES else "other")
        self.quant_check.setChecked(meta.supports_quantization)
        self._file_arch = meta.architecture.model_dump(exclude_none=True) if meta.architecture else {}
        for field, spin in self.arch_spins.items():
            spin.setValue(int(self._file_arch.get(field) or 0))

    def _update_hints(self) -> None:
        is_llm = self.type_combo.currentData() == ModelType.LLM.value
        self.arch_box.setEnabled(is_llm)
        has_kv = all(self.arch_spins[f].value() for f in ("layers", "hidden_size", "heads"))
        self.kv_hint.setVisible(is_llm and not has_kv)

    def architecture(self) -> dict[str, Any] | None:
        """The architecture as typed over what a file stated; None when nothing is known."""
        arch = dict(self._file_arch)
        for field, spin in self.arch_spins.items():
            if spin.value():
                arch[field] = spin.value()
            else:
                arch.pop(field, None)
        return arch or None

    def parameters(self) -> int | None:
        """The parameter count: the exact one a file gave while the box still shows it, else the box's."""
        billions = self.params_spin.value()
        shown = round(billions, self.params_spin.decimals())
        if self._exact_params and round(self._exact_params / 1e9, self.params_spin.decimals()) == shown:
            return self._exact_params
        return int(billions * 1e9) or None

    def metadata(self) -> ModelMetadata:
        """The form as ``ModelMetadata``; raises pydantic's ``ValidationError``."""
        params = self.parameters()
        runtime = self.runtime_combo.currentText()
        model_id = self.id_edit.text().strip()
        is_llm = self.type_combo.currentData() == ModelType.LLM.value
        fields: dict[str, Any] = dict(
            name=self.name_edit.text().strip(),
            provider=self.provider_combo.currentText(),
            model_type=self.type_combo.currentData(),
            size_gb=round(params / 1e9, 3) or None if params else None,
            parameters=params,
            model_id=model_id or None,
            huggingface_id=model_id if model_id.count("/") == 1 and not model_id.startswith(("/", "file:")) else "",
            runtime_backend=None if runtime == "other" else runtime,
            preferred_runtime_format="gguf" if runtime == "llama.cpp" else None,
            supports_quantization=self.quant_check.isChecked(),
            architecture=ModelArchitecture.model_validate(self.architecture()) if is_llm and self.architecture()
            else None,
            **{k: None for k in _REQUIREMENTS},  # estimated again from the form
        )
        if self._editing is None:
            return ModelMetadata(**fields, origin="user")
        return ModelMetadata.model_validate({**self._editing.model_dump(), **self._edited(fields)})

    def _edited(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Of the form's fields, what the user changed; exact figures a file gave stay as they are."""
        old = self._editing
        assert old is not None
        if self.parameters() == old.parameter_count:
            for key in ("parameters", "size_gb"):
                fields.pop(key)
        else:
            fields["parameters_exact"] = False
        if fields["model_id"] == old.id:
            fields.pop("model_id")
            fields.pop("huggingface_id")
        if fields["runtime_backend"] == old.runtime_backend:
            fields.pop("preferred_runtime_format")
        return fields

    # --- reading a file -----------------------------------------------------------------------------
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Read the architecture from", "",
                                              "Model files (*.gguf *.safetensors config.json);;All files (*)")
        if path:
            self.read_file(path)

    def read_file(self, path: str) -> bool:
        """Fill the architecture (and parameters, name, id where empty) from a model's file; False
        (with the reason beside the architecture) when it cannot be read."""
        try:
            found = read_architecture(path)
        except ModelImportError as err:
            self._show_error("architecture", err.message)
            return False
        self._clear_errors()
        self._file_arch = {k: v for k, v in found.architecture.items() if v is not None}
        for field, spin in self.arch_spins.items():
            spin.setValue(int(self._file_arch.get(field) or 0))
        params = found.parameters
        if params is None:
            modelled = ModelArchitecture.model_validate(self._file_arch).to_estimation()
            params = modelled.parameter_count() if modelled else None
        if params:
            self._exact_params = params
            self.params_spin.setValue(params / 1e9)
        self.type_combo.setCurrentIndex(self.type_combo.findData(ModelType.LLM.value))
        if found.path.lower().endswith(".gguf"):
            self.runtime_combo.setCurrentText("llama.cpp")
            if not self.id_edit.text().strip():
                self.id_edit.setText(found.path)
        self.arch_source.setText(f"Read from {found.path}" + (f" ({'; '.join(found.notes)})" if found.notes else ""))
        return True

    # --- saving -------------------------------------------------------------------------------------
    def accept(self, *, override: bool = False) -> None:
        self._clear_errors()
        try:
            meta = fill_requirements(self.metadata())
            if self._editing is None:
                self.registered = self._registry.register_model(meta, override=override)
            else:
                changes = meta.model_dump(exclude={"origin"})
                self.registered = self._registry.update_model(self._editing.id, override=override, **changes)
        except ValidationError as err:
            first = err.errors()[0]
            loc = [str(p) for p in first.get("loc", ())]
            self._show_error(loc[0] if loc else "model", validation_message(err))
            return
        except BuiltinConflict as err:
            self._show_conflict(err)
            return
        except InvalidModel as err:
            self._show_error(err.field, str(err))
            return
        except RegistryError as err:  # the user's model list cannot be written: say so, keep the dialog open
            self._show_error("", str(err))
            return
        super().accept()

    def save_as_copy(self) -> None:
        """Take the free id the core suggested and save under it (the built-in stays as it is)."""
        if self._suggested:
            self.id_edit.setText(self._suggested)
        self.accept()

    def save_as_override(self) -> None:
        """Save under the built-in's id, as an override of it (delete it to bring the built-in back)."""
        self.accept(override=True)

    def _show_conflict(self, err: BuiltinConflict | None) -> None:
        self._suggested = err.suggested_id if err else None
        self.copy_button.setVisible(err is not None)
        self.override_button.setVisible(err is not None)
        if err is not None:
            self.copy_button.setToolTip(f"Save under the id {err.suggested_id}; the built-in stays as it is.")
            self._show_error("model_id", f"{err.builtin.id!r} is the built-in model {err.builtin.name!r}. Save yours "
                                         f"as a copy ({err.suggested_id!r}, or type another id), or override the "
                                         "built-in (deleting the override brings the built-in back).")

    def error_for(self, field: str) -> str:
        """The error shown beside ``field`` ("" when none); ``""`` for the one under the form."""
        label = self._errors.get(field, self.error_label)
        return label.text() if label.isVisibleTo(self) else ""

    def _show_error(self, field: str, text: str) -> None:
        key = {"huggingface_id": "model_id", "model": "model_id", "size_gb": "parameters"}.get(field, field)
        label = self._errors.get(key, self.error_label)
        label.setText(text)
        if label in (self.error_label, self.arch_error):
            label.setVisible(True)
        else:
            self.form.setRowVisible(label, True)
        self._grow()

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        self._grow()

    def _grow(self) -> None:
        """Taller when a message appears (a wrapped label's height depends on the width)."""
        layout = self.layout()
        if layout is not None:
            layout.activate()
            needed = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else 0
            if needed > self.height():
                self.resize(self.width(), needed)

    def _clear_errors(self) -> None:
        for label in self._errors.values():
            if label is self.arch_error:
                label.setVisible(False)
            else:
                self.form.setRowVisible(label, False)
        self.error_label.setVisible(False)
        if self.copy_button.isVisible() or self.override_button.isVisible():
            self.copy_button.setVisible(False)
            self.override_button.setVisible(False)


class ModelEditing(QObject):
    """Add, edit and delete the user's models for a view: the forms (window-modal, not blocking) and
    the confirmation a delete asks for, which says what is removed.

    Signals:
        sigStatus(str): a one-line message (saved, deleted, refused).
        sigSaved(str): the id of a model just saved (to select it).
    """

    sigStatus = Signal(str)
    sigSaved = Signal(str)

    def __init__(self, registry: ManagedRegistry, parent: QWidget) -> None:
        super().__init__(parent)
        self._registry = registry
        self._parent = parent

    def open_add(self) -> AddModelDialog:
        return self._open(AddModelDialog(self._registry, self._parent), "Added")

    def open_edit(self, model_id: str) -> AddModelDialog | None:
        meta = self._registry.get_model(model_id)
        if meta is None or meta.origin == "builtin":
            self.sigStatus.emit(f"{model_id} is built in and cannot be edited; add a model of your own "
                                "(Add model…), or save one under its id as an override")
            return None
        return self._open(AddModelDialog(self._registry, self._parent, editing=meta), "Saved")

    def _open(self, dialog: AddModelDialog, verb: str) -> AddModelDialog:
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._after_save(dialog, verb))
        return_focus_after(dialog, self._parent)
        dialog.open()
        return dialog

    def _after_save(self, dialog: AddModelDialog, verb: str) -> None:
        meta = dialog.registered
        if meta is not None:
            override = " (overrides the built-in)" if self._registry.is_override(meta.id) else ""
            self.sigStatus.emit(f"{verb} {meta.name}{override}")
            self.sigSaved.emit(meta.id)

    def delete(self, model_id: str) -> bool:
        meta = self._registry.get_model(model_id)
        if meta is None or meta.origin == "builtin":
            self.sigStatus.emit(f"{model_id} is built in and cannot be deleted")
            return False
        if self._registry.is_override(meta.id):
            question = (f"Delete your override of the built-in model {meta.id}? The built-in entry comes back "
                        "with its own figures.")
        else:
            question = f"Delete {meta.name} ({meta.id}) from your models? It is removed from your model list"
            question += f"; the files at {meta.path} stay on disk." if meta.path else "."
        answer = QMessageBox.question(self._parent, "Delete model", question,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                      QMessageBox.StandardButton.Cancel)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            self._registry.remove_model(meta.id)
        except RegistryError as err:
            self.sigStatus.emit(f"Could not delete {meta.name}: {err}")
            QMessageBox.warning(self._parent, "Could not delete the model", str(err))
            return False
        back = self._registry.get_model(meta.id) is not None
        self.sigStatus.emit(f"Deleted {meta.name}" + (": the built-in is back" if back else ""))
        return True
