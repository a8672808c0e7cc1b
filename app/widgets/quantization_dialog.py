"""QuantizationDialog: every level a model can load at, what each costs, and where it fits.

Fit is judged as the strategy judges it: a device's free bytes minus the strategy's headroom
(``gpu_headroom_bytes`` on a GPU, ``ram_headroom_bytes`` in RAM). Context length (LLMs) or
resolution and batch (image and video models) change the estimates as the user types. The
strategy's own choice is preselected; OK returns ``(level, device, context)``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
    QPlainTextEdit, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.core.estimation import MemoryEstimate
from app.core.hardware.snapshot import HardwareProfile
from app.core.model_registry import ModelType
from app.core.quantization_strategy import (
    EstimateUnavailable, QuantizationStrategy, candidate_levels, estimate_model, quality_of,
)
from app.core.units import format_gib
from app.widgets.registry_browser import breakdown_lines, monospace_font
from app.widgets.registry_table_model import params_label

__all__ = ["QuantizationDialog", "DeviceRoom"]

_FITS = QColor(22, 163, 74, 60)
_SHORT = QColor(220, 38, 38, 60)
_IMAGE_TYPES = (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO)


class DeviceRoom:
    """A device and the bytes a model may use on it now (free minus the strategy's headroom)."""

    __slots__ = ("device", "label", "usable_bytes")

    def __init__(self, device: str, label: str, usable_bytes: int) -> None:
        self.device, self.label, self.usable_bytes = device, label, usable_bytes


def device_rooms(profile: HardwareProfile, strategy: QuantizationStrategy, model_id: str | None = None) -> list[DeviceRoom]:
    """Usable bytes per device as the strategy sees them (with a manager: what its ledger allows)."""
    usable = strategy.usable_bytes(profile, model_id)
    rooms = [DeviceRoom(g.device_id, f"GPU {g.index}", usable.get(g.device_id, 0))
             for g in profile.gpus if not g.lost and g.mig_parent is None]
    rooms.append(DeviceRoom("cpu", "CPU (RAM)", usable.get("cpu", 0)))
    return rooms


class QuantizationDialog(QDialog):
    """Pick a quantization level and a device for one model, with live estimates."""

    FIXED_COLUMNS = ("Level", "Total", "Weights", "KV cache", "Runtime")

    def __init__(self, metadata: Any, profile: HardwareProfile, strategy: QuantizationStrategy | None = None,
                 *, context: int | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._meta = metadata
        self._profile = profile
        self._strategy = strategy or QuantizationStrategy()
        self._levels = candidate_levels(metadata)
        self._rooms = device_rooms(profile, self._strategy, getattr(metadata, "id", None))
        self._estimates: dict[tuple[str, str], MemoryEstimate] = {}
        self.setWindowTitle(f"Load {metadata.name}")
        self.setMinimumWidth(720)

        self._is_llm = metadata.model_type == ModelType.LLM
        self._is_image = metadata.model_type in _IMAGE_TYPES
        arch = metadata.estimation_architecture
        max_ctx = arch.max_context if arch and arch.max_context else 1_048_576
        self.context_spin = QSpinBox()
        self.context_spin.setRange(256, max_ctx)
        self.context_spin.setSingleStep(1024)
        self.context_spin.setValue(min(max_ctx, context or 4096))
        self.context_spin.setSuffix(" tokens")
        self.context_spin.setToolTip("Context length: the KV cache grows linearly with it.")
        self.context_spin.setMinimumWidth(140)
        default_res = metadata.default_resolution or (480 if metadata.model_type == ModelType.TEXT_TO_VIDEO else 1024)
        self.width_spin, self.height_spin = QSpinBox(), QSpinBox()
        for spin in (self.width_spin, self.height_spin):
            spin.setRange(64, 8192)
            spin.setSingleStep(64)
            spin.setValue(default_res)
            spin.setSuffix(" px")
            spin.setToolTip("Output resolution: activations grow with the pixel count.")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 64)
        self.batch_spin.setValue(1)
        self.batch_spin.setToolTip("Images generated at once.")
        self.device_combo = QComboBox()
        for room in self._rooms:
            name = next((g.name for g in profile.gpus if g.device_id == room.device), "system memory")
            self.device_combo.addItem(f"{room.device} · {name} ({format_gib(room.usable_bytes)} usable)", room.device)
        self.device_combo.setToolTip("Usable = free now minus the headroom ModelDeck keeps free.")
        self.device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)

        self.table = QTableWidget(0, len(self.FIXED_COLUMNS) + len(self._rooms) + 1)
        self.table.setHorizontalHeaderLabels(
            [*self.FIXED_COLUMNS, *(r.label for r in self._rooms), "Quality"])
        for i, room in enumerate(self._rooms):
            item = self.table.horizontalHeaderItem(len(self.FIXED_COLUMNS) + i)
            item.setToolTip(f"{room.device}: {format_gib(room.usable_bytes, 2)} usable now")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_detail)
        self.table.doubleClicked.connect(lambda _i: self.accept())

        self.fit_label = QLabel()
        self.fit_label.setWordWrap(True)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setFont(monospace_font(self.font()))
        self.detail.setFixedHeight(150)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("&Load")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        options = QFormLayout()
        options.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        if self._is_llm:
            options.addRow("&Context:", self.context_spin)
        if self._is_image:
            size = QHBoxLayout()
            size.addWidget(self.width_spin)
            size.addWidget(QLabel("×"))
            size.addWidget(self.height_spin)
            resolution = QLabel("&Resolution:")  # a layout has no buddy: point the mnemonic at the width
            resolution.setBuddy(self.width_spin)
            options.addRow(resolution, size)
            options.addRow("&Batch:", self.batch_spin)
        options.addRow("&Device:", self.device_combo)
        summary = QLabel(f"{metadata.name} · {params_label(metadata.parameter_count)} parameters"
                         + (" (approximate)" if metadata.approximate else ""))
        layout = QVBoxLayout(self)
        layout.addWidget(summary)
        layout.addLayout(options)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.fit_label)
        layout.addWidget(self.detail)
        layout.addWidget(self.buttons)

        for spin in (self.context_spin, self.width_spin, self.height_spin, self.batch_spin):
            spin.valueChanged.connect(self._recompute)
        self.device_combo.currentIndexChanged.connect(self._update_detail)
        self._recompute()
        self._preselect()

    # --- results -----------------------------------------------------------------------------------
    def selected_level(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self._levels[rows[0].row()] if rows else None

    def selected_device(self) -> str:
        return str(self.device_combo.currentData())

    def context(self) -> int | None:
        return self.context_spin.value() if self._is_llm else None

    def selection(self) -> tuple[str | None, str, int | None]:
        """(level, device, context) — what OK means."""
        return self.selected_level(), self.selected_device(), self.context()

    def options(self) -> dict[str, int]:
        """The estimate's inputs beyond the level: context, or width / height / batch."""
        if self._is_llm:
            return {"context": self.context_spin.value()}
        if self._is_image:
            return {"width": self.width_spin.value(), "height": self.height_spin.value(),
                    "batch": self.batch_spin.value()}
        return {}

    def select_level(self, level: str) -> None:
        if level in self._levels:
            self.table.selectRow(self._levels.index(level))

    def select_device(self, device: str) -> None:
        i = self.device_combo.findData(device)
        if i >= 0:
            self.device_combo.setCurrentIndex(i)

    def estimate(self, level: str, device: str) -> MemoryEstimate | None:
        return self._estimates.get((level, "cpu" if device == "cpu" else "gpu"))

    def shortfall(self, level: str, device: str) -> int:
        """Bytes missing for ``level`` on ``device`` (0 or less: it fits)."""
        est = self.estimate(level, device)
        room = next(r for r in self._rooms if r.device == device)
        return (est.total_bytes if est else 0) - room.usable_bytes

    # --- internals ---------------------------------------------------------------------------------
    def _preselect(self) -> None:
        try:
            plan = self._strategy.plan(self._meta, self._profile, context=self.context())
        except Exception:  # noqa: BLE001 - no plan: leave the first row and device
            if self._levels:
                self.table.selectRow(0)
            return
        self.select_device(plan.device.split("+")[0])
        self.select_level(plan.quantization)
        if self.selected_level() is None and self._levels:
            self.table.selectRow(0)

    def _estimate_all(self) -> str | None:
        self._estimates.clear()
        kw: dict[str, Any] = {}
        if self._is_llm:
            kw["context"] = self.context_spin.value()
        if self._is_image:
            kw.update(width=self.width_spin.value(), height=self.height_spin.value(), batch=self.batch_spin.value())
        try:
            for level in self._levels:
                for kind in ("gpu", "cpu"):
                    self._estimates[(level, kind)] = estimate_model(self._meta, level, device_kind=kind, **kw)
        except EstimateUnavailable as err:
            return str(err)
        return None

    def _recompute(self) -> None:
        problem = self._estimate_all()
        selected = self.selected_level()
        self.table.setRowCount(len(self._levels) if problem is None else 0)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(problem is None and bool(self._levels))
        if problem is not None:
            self.fit_label.setText(problem)
            return
        n_fixed = len(self.FIXED_COLUMNS)
        for row, level in enumerate(self._levels):
            est = self._estimates[(level, "gpu")]
            values = (level, format_gib(est.total_bytes, 2), format_gib(est.weights_bytes, 2),
                      format_gib(est.kv_cache_bytes, 2), format_gib(est.compute_bytes + est.overhead_bytes, 2))
            for col, text in enumerate(values):
                self._set_cell(row, col, text, "\n".join(est.explain()) if col else None)
            for i, room in enumerate(self._rooms):
                short = self.shortfall(level, room.device)
                if short <= 0:
                    text, color = f"fits, {format_gib(-short)} spare", _FITS
                else:
                    text, color = f"short {format_gib(short)}", _SHORT
                self._set_cell(row, n_fixed + i, text,
                               f"{room.device}: needs {format_gib(short + room.usable_bytes, 2)}, "
                               f"{format_gib(room.usable_bytes, 2)} usable", color)
            ppl, note = quality_of(level)
            measured = note.endswith("quantize table)")
            self._set_cell(row, n_fixed + len(self._rooms), f"{'' if measured else '≈'}{ppl:+.3f} ppl",
                           f"Perplexity change vs 16-bit (lower is better): {note}")
        if selected:
            self.select_level(selected)
        self._update_detail()

    def _set_cell(self, row: int, col: int, text: str, tip: str | None, color: QColor | None = None) -> None:
        item = self.table.item(row, col)
        if item is None:
            item = QTableWidgetItem()
            self.table.setItem(row, col, item)
        item.setText(text)
        if tip:
            item.setToolTip(tip)
        if color is not None:
            item.setBackground(QBrush(color))
        if 0 < col < len(self.FIXED_COLUMNS):
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def _update_detail(self) -> None:
        level, device = self.selected_level(), self.selected_device()
        if level is None or not self._estimates:
            self.detail.setPlainText("")
            self.fit_label.setText("Select a level.")
            return
        est = self.estimate(level, device)
        if est is None:
            return
        self.detail.setPlainText("\n".join(breakdown_lines(est)))
        short = self.shortfall(level, device)
        if short <= 0:
            self.fit_label.setText(f"{level} fits on {device} with {format_gib(-short, 2)} to spare. "
                                   f"Quality: {quality_of(level)[1]}.")
        else:
            usable = est.total_bytes - short
            self.fit_label.setText(
                f"{level} does not fit on {device}: it needs {format_gib(short, 2)} more than the "
                f"{format_gib(usable, 2)} usable. Pick a smaller level, a shorter context, another device, "
                "or free memory.")
