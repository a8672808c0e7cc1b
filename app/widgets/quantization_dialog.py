"""QuantizationDialog: every level a model can load at, what each costs, and where it fits.

Every fit shown is the core planner's answer against the manager's ledger (what is booked counts,
the safety margin is kept): per level and device as things are, touching nothing; and, for the
selected level and device, what loading would really do — including any model it would offload,
unload or move, named before anything happens. "Best placement" lets the planner choose the
device (a split across GPUs, or layers in RAM, when that is its answer). OK returns that
:class:`Decision`: the very object the manager then books.

The "Runtime" group (:class:`~app.widgets.runtime_settings.RuntimeSettings`) sets the runtime and its
settings. It starts from the manager's ``runtime_profile`` (the settings the host's runtimes use), so the
picker plans what ``manager.plan`` and ``load`` plan; each change re-plans through the same requests
(``ViewPlanner.decide(..., runtime=...)``, ``estimate_model(..., profile=...)``), so the levels offered, every fit and the breakdown follow it. The
breakdown names the runtime, what stays in RAM beside the device, and a pipeline's components and phases.
"""

from __future__ import annotations

from typing import Any
import time

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHeaderView, QLabel,
    QPlainTextEdit, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.core.estimation import MemoryEstimate
from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.placement import Decision, DeviceRoom, PlacementRequest, Refusal
from app.core.model_registry import ModelType
from app.core.quantization_strategy import EstimateUnavailable, QuantizationStrategy, candidate_levels, estimate_model, quality_of
from app.core.runtime_profile import RuntimeProfile, level_suits
from app.core.units import format_gib
from app.widgets.planning import Answer, ViewPlanner
from app.widgets.ports import runtime_profile_of
from app.widgets.breakdown_text import answer_text, fit_cell
from app.widgets.registry_browser import monospace_font
from app.widgets.registry_table_model import params_label
from app.widgets.runtime_settings import RuntimeSettings

__all__ = ["QuantizationDialog", "BEST_PLACEMENT"]

_FITS = QColor(22, 163, 74, 60)
_SHORT = QColor(220, 38, 38, 60)
_IMAGE_TYPES = (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO)
#: The device choice that lets the planner decide (split, partial, another GPU).
BEST_PLACEMENT = "best"


def _label(room: DeviceRoom, profile: HardwareProfile) -> str:
    if not room.is_gpu:
        return "CPU (RAM)"
    gpu = next((g for g in profile.gpus if g.device_id == room.device), None)
    return f"GPU {gpu.index}" if gpu is not None else room.device


class _FittedTable(QTableWidget):
    """A table that asks for all its rows and columns (up to limits), yet may shrink and scroll."""

    _fitted = QSize(400, 160)

    def sizeHint(self) -> QSize:  # noqa: N802
        return self._fitted

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(240, 100)


class _Breakdown(QPlainTextEdit):
    """The breakdown pane: asks for about seven lines (it scrolls), so the levels get the room first."""

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(400, 130)


def fit_to_contents(table: QTableWidget, max_width: int, max_height: int) -> None:
    """Have ``table`` ask for all its rows and columns (up to the limits), so none is clipped when there is room."""
    table.resizeColumnsToContents()
    frame = 2 * table.frameWidth()
    header = table.horizontalHeader()
    width = header.length() + frame + table.verticalScrollBar().sizeHint().width() + 2
    height = table.verticalHeader().length() + header.sizeHint().height() + frame + 2
    size = QSize(min(width, max_width), min(height, max_height))
    if isinstance(table, _FittedTable):
        table._fitted = size
        table.updateGeometry()
    else:
        table.setMinimumSize(size)


def _context_spin(max_ctx: int, context: int | None) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(256, max_ctx)
    spin.setSingleStep(1024)
    spin.setValue(min(max_ctx, context or 4096))
    spin.setSuffix(" tokens")
    spin.setToolTip("Context length: the KV cache grows linearly with it.")
    spin.setMinimumWidth(140)
    return spin


def _device_combo(rooms: tuple[DeviceRoom, ...], profile: HardwareProfile) -> QComboBox:
    combo = QComboBox()
    combo.addItem("Best placement (ModelDeck chooses)", BEST_PLACEMENT)
    for room in rooms:
        name = next((g.name for g in profile.gpus if g.device_id == room.device), "system memory")
        combo.addItem(f"{room.device} · {name} ({format_gib(room.available_bytes)} bookable)", room.device)
    combo.setToolTip("Bookable = free now, less what ModelDeck booked and its safety margin. "
                     "A device you choose is used or refused, never replaced.")
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
    return combo


def _level_table(fixed: tuple[str, ...], rooms: tuple[DeviceRoom, ...], profile: HardwareProfile) -> _FittedTable:
    """One row per level: the fixed columns, one per device (with what is bookable there), then quality."""
    table = _FittedTable(0, len(fixed) + len(rooms) + 1)
    table.setHorizontalHeaderLabels([*fixed, *(_label(r, profile) for r in rooms), "Quality"])
    for i, room in enumerate(rooms):
        item = table.horizontalHeaderItem(len(fixed) + i)
        if item is not None:
            item.setToolTip(f"{room.device}: {format_gib(room.available_bytes, 2)} bookable now, "
                            f"{format_gib(room.margin_bytes, 2)} kept free")
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(22)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


class QuantizationDialog(QDialog):
    """Pick a quantization level and a device for one model, with live estimates."""

    FIXED_COLUMNS = ("Level", "Total", "Weights", "KV cache", "Runtime")
    #: What the table may ask for, so the dialog fits a 1280x800 screen (beyond: it scrolls).
    MAX_TABLE_WIDTH = 1200
    MAX_TABLE_HEIGHT = 400

    def __init__(self, metadata: Any, profile: HardwareProfile,
                 planner: ViewPlanner | QuantizationStrategy | None = None, *, context: int | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._meta = metadata
        self._profile = profile
        if not isinstance(planner, ViewPlanner):
            planner = ViewPlanner(None, strategy=planner, profile=profile)
            planner.observe(profile)
        self._planner = planner
        #: Every level the model comes in; ``_levels`` those the chosen runtime loads (the table's rows).
        self._all_levels = candidate_levels(metadata)
        self._levels = self._all_levels
        self._rooms = tuple(r for r in planner.rooms(exclude=getattr(metadata, "id", None))
                            if not r.is_gpu or r.total_bytes > 0)
        self._estimates: dict[tuple[str, str], MemoryEstimate] = {}
        #: (level, device) -> the planner's answer as things are; (level, device or BEST) -> what Load would do.
        self._cells: dict[tuple[str, str], Answer] = {}
        self._decision: Answer | None = None
        self._request: PlacementRequest | None = None
        #: Seconds the last re-plan took (every level × device, then the selection).
        self.last_replan_s = 0.0
        self.setWindowTitle(f"Load {metadata.name}")

        self._is_llm = metadata.model_type == ModelType.LLM
        self._is_image = metadata.model_type in _IMAGE_TYPES
        arch = metadata.estimation_architecture
        max_ctx = arch.max_context if arch and arch.max_context else 1_048_576
        self.context_spin = _context_spin(max_ctx, context)
        video = metadata.model_type == ModelType.TEXT_TO_VIDEO
        short = metadata.default_resolution or (480 if video else 1024)
        resolution = ((short * 16 // 9 // 16 * 16) if video else short, short)  # as estimate_model assumes
        self.runtime_settings = RuntimeSettings(metadata.model_type, levels=self._all_levels,
                                                backend_hint=getattr(metadata, "runtime_backend", None),
                                                resolution=resolution,
                                                initial=runtime_profile_of(planner.manager))
        self._levels = self._suiting(self.runtime_settings.profile())
        self.width_spin, self.height_spin = self.runtime_settings.width_spin, self.runtime_settings.height_spin
        self.batch_spin = self.runtime_settings.images_spin
        self.device_combo = _device_combo(self._rooms, profile)
        self.table = _level_table(self.FIXED_COLUMNS, self._rooms, profile)
        self.table.itemSelectionChanged.connect(self._update_detail)
        self.table.doubleClicked.connect(lambda _i: self.accept())

        self.fit_label = QLabel()
        self.fit_label.setWordWrap(True)
        self.fit_label.setTextFormat(Qt.TextFormat.PlainText)
        self.detail = _Breakdown()
        self.detail.setReadOnly(True)
        self.detail.setFont(monospace_font(self.font()))
        self.detail.setMinimumHeight(90)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("&Load")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        options = QFormLayout()
        options.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        if self._is_llm:
            options.addRow("&Context:", self.context_spin)
        options.addRow("&Device:", self.device_combo)
        summary = QLabel(f"{metadata.name} · {params_label(metadata.parameter_count)} parameters"
                         + (" (approximate)" if metadata.approximate else ""))
        layout = QVBoxLayout(self)
        layout.addWidget(summary)
        layout.addLayout(options)
        layout.addWidget(self.runtime_settings)
        # the table and the breakdown share what height there is; either can be dragged larger
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 0)  # the table asks for its rows; room beyond them goes to the breakdown
        self.splitter.setStretchFactor(1, 1)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.fit_label)
        layout.addWidget(self.buttons)
        previous: QWidget = self.device_combo
        for control in [*self.runtime_settings.controls(), self.table, self.detail]:
            QWidget.setTabOrder(previous, control)
            previous = control

        self.context_spin.valueChanged.connect(self._recompute)
        self.runtime_settings.sigProfileChanged.connect(self._on_profile)
        self.device_combo.currentIndexChanged.connect(self._update_detail)
        self._recompute()
        self._preselect()
        fit_to_contents(self.table, self.MAX_TABLE_WIDTH, self.MAX_TABLE_HEIGHT)
        hint = self.sizeHint()
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is not None:
            hint = hint.boundedTo(screen.size())  # a small screen: the table and breakdown scroll
        self.resize(hint)

    # --- results -----------------------------------------------------------------------------------
    def selected_level(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self._levels[rows[0].row()] if rows else None

    def selected_device(self) -> str:
        """A device id, or :data:`BEST_PLACEMENT` (the planner chooses)."""
        return str(self.device_combo.currentData())

    def context(self) -> int | None:
        return self.context_spin.value() if self._is_llm else None

    def runtime_profile(self) -> RuntimeProfile:
        """The runtime and settings every estimate and plan here is made for."""
        return self.runtime_settings.profile()

    def levels(self) -> tuple[str, ...]:
        """The levels listed: those the chosen runtime loads."""
        return tuple(self._levels)

    def request(self) -> PlacementRequest | None:
        """The request the selection's answer was planned for (its ``runtime`` is :meth:`runtime_profile`)."""
        return self._request

    def decision(self) -> Decision | None:
        """What Load does: the planner's Decision for the selected level and device (None: it cannot)."""
        return self._decision if isinstance(self._decision, Decision) else None

    def answer(self) -> Answer | None:
        """The planner's answer for the selection: a Decision, or a Refusal with its numbers."""
        return self._decision

    def selection(self) -> tuple[str | None, str, int | None]:
        """(level, device, context) as loaded: the device the decision uses."""
        decision = self.decision()
        device = decision.placement.device if decision else self.selected_device()
        return self.selected_level(), device, self.context()

    def options(self) -> dict[str, int]:
        """The estimate's inputs beyond the level: context, or width / height / batch."""
        if self._is_llm:
            return {"context": self.context_spin.value()}
        if self._is_image:
            return {"width": self.width_spin.value(), "height": self.height_spin.value(),
                    "batch": self.batch_spin.value()}
        return {}

    def breakdown(self) -> list[str]:
        """The breakdown's lines, as shown."""
        return self.detail.toPlainText().splitlines()

    def select_level(self, level: str) -> None:
        if level in self._levels:
            self.table.selectRow(self._levels.index(level))

    def select_device(self, device: str) -> None:
        i = self.device_combo.findData(device)
        if i >= 0:
            self.device_combo.setCurrentIndex(i)

    def estimate(self, level: str, device: str) -> MemoryEstimate | None:
        return self._estimates.get((level, "cpu" if device == "cpu" else "gpu"))

    def fit(self, level: str, device: str) -> Answer | None:
        """The planner's answer for ``level`` on ``device`` as things are (nothing else touched)."""
        return self._cells.get((level, device))

    def shortfall(self, level: str, device: str) -> int:
        """Bytes missing for ``level`` on ``device`` as things are (0 or less: it fits, by that much spare)."""
        answer = self.fit(level, device)
        if isinstance(answer, Refusal):
            return answer.needed_bytes - answer.available_bytes
        if isinstance(answer, Decision):
            room = next(r for r in self._rooms if r.device == device)
            share = answer.placement.shares[0]
            adds = share.adds_to(room)
            return adds - room.available_bytes
        return 0

    # --- internals ---------------------------------------------------------------------------------
    def _make_request(self, level: str | None, device: str | None, *, make_room: bool | None,
                      allow_cpu: bool | None) -> PlacementRequest:
        """ViewPlanner's request with the runtime profile inside (which carries a diffusion model's size and
        images)."""
        return self._planner.request(self._meta, level=level, device=device, context=self.context(),
                                     make_room=make_room, allow_cpu=allow_cpu, runtime=self.runtime_profile())

    def _ask(self, level: str | None, device: str | None, *, make_room: bool | None, allow_cpu: bool | None) -> Answer:
        return self._planner.decide(self._meta, level=level, device=device, context=self.context(),
                                    make_room=make_room, allow_cpu=allow_cpu, runtime=self.runtime_profile())

    def _suiting(self, profile: RuntimeProfile) -> tuple[str, ...]:
        """The levels the profile's runtime loads (all of them where it loads none)."""
        return tuple(lv for lv in self._all_levels if level_suits(profile, lv)) or tuple(self._all_levels)

    def _on_profile(self, profile: RuntimeProfile) -> None:
        """A runtime setting changed: the levels it loads, every fit and the breakdown, at once."""
        started = time.perf_counter()
        selected = self.selected_level()
        levels = self._suiting(profile)
        if levels != tuple(self._levels):
            self._levels = levels
            self.table.clearSelection()
            self._recompute()
            if selected in levels:
                self.select_level(selected)
            else:
                self._preselect()
        else:
            self._recompute()
        self.last_replan_s = time.perf_counter() - started

    def _preselect(self) -> None:
        try:
            answer = self._ask(None, None, make_room=None, allow_cpu=None)
        except EstimateUnavailable:
            answer = None
        self.select_device(BEST_PLACEMENT)
        if isinstance(answer, Decision):
            self.select_level(answer.placement.level)
        if self.selected_level() is None and self._levels:
            self.table.selectRow(0)

    def _estimate_all(self) -> str | None:
        self._estimates.clear()
        self._cells.clear()
        try:
            for level in self._levels:
                for kind in ("gpu", "cpu"):
                    self._estimates[(level, kind)] = estimate_model(
                        self._meta, level, device_kind=kind, context=self.context(), profile=self.runtime_profile())
                for room in self._rooms:
                    self._cells[(level, room.device)] = self._ask(level, room.device, make_room=False,
                                                                  allow_cpu=not room.is_gpu)
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
                text, tip, fits = fit_cell(self.fit(level, room.device), self.shortfall(level, room.device), room)
                self._set_cell(row, n_fixed + i, text, tip, _FITS if fits else _SHORT)
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
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if level is None or not self._estimates:
            self.detail.setPlainText("")
            self.fit_label.setText("Select a level.")
            self._decision = self._request = None
            ok.setEnabled(False)
            return
        request = self._make_request(level, None if device == BEST_PLACEMENT else device, make_room=None,
                                     allow_cpu=None)
        answer = self._planner.manager.decide(request)
        self._decision, self._request = answer, request
        fallback = self.estimate(level, device) if isinstance(answer, Refusal) and not answer.estimate else None
        lines, text, label = answer_text(answer, quality_of(level)[1], fallback)
        self.detail.setPlainText("\n".join(lines))
        self.fit_label.setText(text)
        ok.setText(label)
        ok.setEnabled(isinstance(answer, Decision))
