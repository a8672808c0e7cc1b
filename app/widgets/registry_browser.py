"""RegistryBrowser: find a model, see what it would need here, add or scan models, ask to load one.

The table is a :class:`RegistryTableModel` behind a sort/filter proxy. Search is the registry's
own (ids, names, aliases, typos forgiven); type and provider filters narrow it further. The detail
pane shows the planner's answer for the selected model with the estimate's breakdown, term by term.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, QModelIndex, QObject, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSizePolicy, QSplitter, QTableView, QVBoxLayout, QWidget,
)

from app.core.hardware.snapshot import HardwareProfile
from app.core.model_registry import ModelMetadata, ModelProvider, ModelType
from app.core.manager.placement import Decision, Refusal
from app.core.quantization_strategy import QuantizationStrategy
from app.core.units import format_gib
from app.widgets.add_model_dialog import AddModelDialog, ModelEditing
from app.widgets.breakdown_text import detail_lines
from app.widgets.ports import ManagedRegistry
from app.widgets.folder_scan import FolderScan, ScanFlow
from app.widgets.scan_preview import ScanPreviewDialog
from app.widgets.planning import ViewPlanner
from app.widgets.registry_table_model import RegistryTableModel, params_label, type_label
from app.widgets.column_fit import keep_readable
from app.widgets.focus import select_current_on_focus

__all__ = ["RegistryBrowser", "RegistryFilterProxy"]

_Index = QModelIndex | QPersistentModelIndex


def origin_label(meta: ModelMetadata, override: bool) -> str:
    """Where an entry comes from, in words (an override says how to revert it)."""
    if override:
        return "user override of a built-in (delete it to bring the built-in back)"
    return {"builtin": "built in", "user": "added by you", "scanned": "scanned from disk"}.get(meta.origin, meta.origin)


def model_warnings(meta: ModelMetadata) -> list[str]:
    """What the estimate cannot know about a model, and how to fix it."""
    lines: list[str] = []
    if meta.model_type == ModelType.LLM and meta.estimation_architecture is None:
        lines.append("KV cache NOT estimated: this model has no architecture (layers, KV heads, head dim), so "
                     "every total above is missing it. Fix: Edit… and fill them in, or read them from its "
                     "config.json or GGUF file." if meta.origin != "builtin" else
                     "KV cache NOT estimated: the catalog has no architecture for this model.")
    if "pytorch-pickle" in meta.formats:
        lines.append("unverified (pickle: not read): weights counted by file size only")
    return lines


def model_table(proxy: QSortFilterProxyModel) -> QTableView:
    """The models' table: sorted by name, one row selected at a time, fixed column widths."""
    view = QTableView()
    view.setModel(proxy)
    view.setSortingEnabled(True)
    view.sortByColumn(RegistryTableModel.NAME, Qt.SortOrder.AscendingOrder)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setAlternatingRowColors(True)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(22)
    view.setWordWrap(False)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setSectionResizeMode(RegistryTableModel.NAME, QHeaderView.ResizeMode.Stretch)
    header.setMinimumSectionSize(36)
    for col, width in ((1, 88), (2, 84), (3, 80), (4, 74), (5, 70), (6, 64)):
        header.resizeSection(col, width)
    # In a narrow dock the name stays readable: provider, type, parameters, then size step aside (the
    # detail pane and the filters still say them).
    m = RegistryTableModel
    keep_readable(view, m.NAME, 150, (m.PROVIDER, m.TYPE, m.PARAMS, m.SIZE))
    return view


def fill_devices(combo: QComboBox, profile: HardwareProfile, gpus: tuple[str, ...]) -> None:
    """The devices a fit can be computed for (the best GPU, each GPU, the CPU), keeping the choice."""
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    combo.addItem("Best GPU" if gpus else "CPU (no GPU)", None)
    for g in profile.gpus:
        if g.device_id in gpus:
            combo.addItem(f"{g.device_id} · {g.name.removeprefix('NVIDIA ')}", g.device_id)
    combo.addItem("CPU (RAM)", "cpu")
    combo.setCurrentIndex(max(0, combo.findData(current)))
    combo.blockSignals(False)


def plan_lines(plan: Any, problem: str | None, lighter: str | None = None) -> tuple[str, list[str]]:
    """The planner's answer as (one-line reason, breakdown lines) for the detail pane; ``lighter`` names the
    lighter runtime setting the answer needed ("with VAE tiling"), when it needed one."""
    if plan is None:
        return problem or "", []
    if isinstance(plan, Refusal):
        lines = detail_lines(plan.estimate) if plan.estimate else []
        lines.append(f"needs {format_gib(plan.needed_bytes, 2)}, {format_gib(plan.available_bytes, 2)} bookable")
        return plan.message(), lines
    placement = plan.placement
    lines = detail_lines(placement.estimate)
    if placement.kind in ("split", "partial"):
        lines.append("layers: " + ", ".join(f"{s.layers} on {s.device}" for s in placement.shares))
    for share in placement.shares:
        lines.append(f"books {format_gib(share.own_bytes, 2)} on {share.device}"
                     f" (+ its share of the {format_gib(share.runtime_bytes, 2)} runtime context)")
    if lighter:
        return (f"{placement.describe()} {lighter} (the runtime's defaults do not fit): {placement.reason}",
                lines)
    return f"{placement.describe()}: {placement.reason}", lines


def monospace_font(base: QFont) -> QFont:
    """A fixed-width font one point smaller than ``base``, for column-aligned breakdowns."""
    mono = QFont(base)
    mono.setFamilies(["DejaVu Sans Mono", "monospace"])
    mono.setStyleHint(QFont.StyleHint.Monospace)
    mono.setPointSizeF(max(7.0, base.pointSizeF() - 1))
    return mono


class RegistryFilterProxy(QSortFilterProxyModel):
    """Rows matching the search (a set of model ids from ``registry.search``), type and provider."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids: set[str] | None = None
        self._type: str | None = None
        self._provider: str | None = None
        self.setSortRole(RegistryTableModel.SortRole)

    def set_ids(self, ids: set[str] | None) -> None:
        self.beginFilterChange()  # invalidateFilter() is deprecated in Qt 6.10+
        self._ids = ids
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_type(self, model_type: str | None) -> None:
        self.beginFilterChange()
        self._type = model_type or None
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_provider(self, provider: str | None) -> None:
        self.beginFilterChange()
        self._provider = provider or None
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:  # noqa: N802
        model = self.sourceModel()
        if not isinstance(model, RegistryTableModel):
            return True
        meta = model.metadata_at(source_row)
        if self._ids is not None and meta.id not in self._ids:
            return False
        if self._type and meta.model_type.value != self._type:
            return False
        return not (self._provider and meta.provider_name != self._provider)


class RegistryBrowser(QWidget):
    """Search, filter, inspect, add and scan models.

    Signals:
        sigLoadRequested(str): the user asked to load this model id (the panel opens the picker).
        sigStatus(str): a one-line message for a status bar (scan results, errors).
    """

    #: The keys this view answers to (Help › Keyboard shortcuts lists them).
    KEYS: tuple[tuple[str, str], ...] = (
        ('Ctrl+F', 'Models: go to the search box'),
        ('Enter', 'Models: from the search box to the results; on a row, open the load picker'),
    )

    sigLoadRequested = Signal(str)
    sigStatus = Signal(str)

    #: Below this width the bar takes two rows and the detail goes under the table.
    WIDE_WIDTH = 700
    NARROW_MIN_WIDTH = 300

    def __init__(self, registry: ManagedRegistry, planner: ViewPlanner | QuantizationStrategy | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._registry = registry
        self._profile: HardwareProfile | None = None
        self._scans = ScanFlow(registry, self)
        self._editing = ModelEditing(registry, self)
        self._editing.sigStatus.connect(self.sigStatus)
        self._editing.sigSaved.connect(self._select_soon)
        self._gpu_ids: tuple[str, ...] = ()
        #: A model added here, to select once the registry's change has reached the table.
        self._pending_select: str | None = None

        self.table_model = RegistryTableModel(registry, planner, self)
        self.proxy = RegistryFilterProxy(self)
        self.proxy.setSourceModel(self.table_model)

        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search models (name, id, alias)…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._on_search)
        self.type_combo = QComboBox()
        self.type_combo.setToolTip("Show only one kind of model.")
        self.type_combo.addItem("All types", "")
        for t in ModelType:
            self.type_combo.addItem(type_label(t.value), t.value)
        self.type_combo.currentIndexChanged.connect(lambda _i: self.proxy.set_type(self.type_combo.currentData()))
        self.provider_combo = QComboBox()
        self.provider_combo.setToolTip("Show only one provider's models.")
        self._fill_providers()
        self.provider_combo.currentIndexChanged.connect(
            lambda _i: self.proxy.set_provider(self.provider_combo.currentData()))
        self.device_combo = QComboBox()
        self.device_combo.setToolTip("The device the Best level, Size and Fit columns are computed for.")
        self.device_combo.setAccessibleName("Fit for")
        self.device_combo.addItem("Best GPU", None)
        self.device_combo.currentIndexChanged.connect(
            lambda _i: self.table_model.set_device(self.device_combo.currentData()))
        self.add_button = QPushButton("&Add model…")
        self.add_button.setToolTip("Register a model the built-in catalog does not know.")
        self.add_button.clicked.connect(self.open_add_dialog)
        self.scan_button = QPushButton("S&can folder…")
        self.scan_button.setToolTip("Read GGUF / safetensors headers under a folder; you choose what to register.")
        self.scan_button.clicked.connect(self._choose_folder)
        self._scans.sigRunning.connect(lambda running: self.scan_button.setEnabled(not running))
        self._scans.sigStatus.connect(self.sigStatus)
        self._scans.sigRegistered.connect(self._select_soon)

        self.view = model_table(self.proxy)

        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        self.view.doubleClicked.connect(lambda _i: self.request_load())
        # Keyboard: Enter on a row opens the picker, Tab leaves the table, Ctrl+F goes to the search box.
        self.view.activated.connect(lambda _i: self.request_load())
        self.view.setTabKeyNavigation(False)
        select_current_on_focus(self.view)  # Enter and Delete act on the row shown focused
        find = QShortcut(QKeySequence(QKeySequence.StandardKey.Find), self)
        find.activated.connect(lambda: (self.search_edit.setFocus(), self.search_edit.selectAll()))
        self.search_edit.returnPressed.connect(self._to_results)

        self.detail_title = QLabel("Select a model")
        title_font = QFont(self.detail_title.font())
        title_font.setBold(True)
        self.detail_title.setFont(title_font)
        self.detail_title.setWordWrap(True)
        self.detail_reason = QLabel()
        self.detail_reason.setWordWrap(True)
        self.detail_text = QPlainTextEdit()
        self.detail_text.setReadOnly(True)
        self.detail_text.setFont(monospace_font(self.font()))
        self.detail_text.setToolTip("The memory estimate for the planned level, term by term.")
        self.load_button = QPushButton("&Load…")
        self.load_button.setToolTip("Pick a quantization level and device, then load the model.")
        self.load_button.setEnabled(False)
        self.load_button.clicked.connect(self.request_load)
        self.edit_button = QPushButton("Ed&it…")
        self.edit_button.setToolTip("Change this model of yours (name, id, size, architecture).")
        self.edit_button.clicked.connect(lambda: self._on_selected(self.open_edit_dialog))
        self.delete_button = QPushButton("Dele&te…")
        self.delete_button.setToolTip("Remove this model of yours (asks first); deleting an override brings the "
                                      "built-in back.")
        self.delete_button.clicked.connect(lambda: self._on_selected(self.delete_model))

        # The bar is one row, or two in a narrow dock; it asks only for the narrow width, never more.
        self.bar = QWidget()
        self.bar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar.setMinimumWidth(self.NARROW_MIN_WIDTH)
        self._bar = QGridLayout(self.bar)
        self._bar.setContentsMargins(0, 0, 0, 0)
        self._fit_label = QLabel("Fit for:")
        for combo in (self.type_combo, self.provider_combo, self.device_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        self._narrow: bool | None = None
        detail = QWidget()
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(6, 0, 0, 0)
        dl.addWidget(self.detail_title)
        dl.addWidget(self.detail_reason)
        dl.addWidget(self.detail_text, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.edit_button)
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        dl.addLayout(buttons)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("ModelDeckRegistrySplitter")
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(detail)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 1)
        detail.setMinimumWidth(220)
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        self._arrange(False)
        layout.addWidget(self.splitter, 1)

    # --- inputs from the panel ---------------------------------------------------------------------
    def set_profile(self, profile: HardwareProfile) -> None:
        """New hardware figures: refresh the device list and (when they moved enough) the fits."""
        self._profile = profile
        gpus = tuple(g.device_id for g in profile.gpus if not g.lost and g.mig_parent is None)
        if gpus != self._gpu_ids:
            self._gpu_ids = gpus
            fill_devices(self.device_combo, profile, gpus)
            self.table_model.set_device(self.device_combo.currentData())
        self.table_model.set_profile(profile)
        self._show_detail()  # one plan, for the selected model: its figures follow every sample

    def invalidate_plans(self) -> None:
        """Bookings changed: plan the table and the detail again."""
        self.table_model.invalidate_plans()
        self._show_detail()

    def reload(self) -> None:
        """The registry changed: re-read it, keeping the selection."""
        selected = self._pending_select or self.selected_model_id()
        self._pending_select = None
        self.table_model.reload()
        self._fill_providers()
        if self.search_edit.text().strip():
            self._on_search(self.search_edit.text())
        if selected:
            self.select_model(selected)

    # --- selection -----------------------------------------------------------------------------------
    def selected_model_id(self) -> str | None:
        rows = self.view.selectionModel().selectedRows()
        return rows[0].data(RegistryTableModel.ModelIdRole) if rows else None

    def select_model(self, model_id: str) -> bool:
        row = self.table_model.row_of(model_id)
        if row < 0:
            return False
        index = self.proxy.mapFromSource(self.table_model.index(row, 0))
        if not index.isValid():
            return False
        self.view.selectRow(index.row())
        self.view.scrollTo(index)
        return True

    def _select_soon(self, model_id: str) -> None:
        if not self.select_model(model_id):
            self._pending_select = model_id

    def visible_model_ids(self) -> list[str]:
        return [self.proxy.index(r, 0).data(RegistryTableModel.ModelIdRole) for r in range(self.proxy.rowCount())]

    def _arrange(self, narrow: bool) -> None:
        """One row of search, filters and buttons; or, when narrow, two rows and the detail below the table."""
        if narrow == self._narrow:
            return
        self._narrow = narrow
        widgets: tuple[QWidget, ...] = (self.search_edit, self.type_combo, self.provider_combo, self._fit_label, self.device_combo,
                   self.add_button, self.scan_button)
        for w in widgets:
            self._bar.removeWidget(w)
        for c in range(8):
            self._bar.setColumnStretch(c, 0)
        if narrow:  # search; the three filters; the two buttons (the fit combo says what it is in its tooltip)
            self._bar.addWidget(self.search_edit, 0, 0, 1, 6)
            for col, w in enumerate((self.type_combo, self.provider_combo, self.device_combo)):
                self._bar.addWidget(w, 1, 2 * col, 1, 2)
            self._bar.addWidget(self.add_button, 2, 0, 1, 3)
            self._bar.addWidget(self.scan_button, 2, 3, 1, 3)
            for c in range(6):
                self._bar.setColumnStretch(c, 1)
        else:
            for col, w in enumerate(widgets):
                self._bar.addWidget(w, 0, col)
            for col, stretch in ((0, 3), (1, 1), (2, 1), (4, 1)):
                self._bar.setColumnStretch(col, stretch)
        self._fit_label.setVisible(not narrow)
        self.splitter.setOrientation(Qt.Orientation.Vertical if narrow else Qt.Orientation.Horizontal)
        if narrow:  # the list first: two thirds of the height
            h = max(self.splitter.height(), 300)
            self.splitter.setSizes([h * 2 // 3, h // 3])

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._arrange(self.width() < self.WIDE_WIDTH)

    def _to_results(self) -> None:
        """Enter in the search box: on to the results, the first one selected."""
        self.view.setFocus()
        if not self.view.selectionModel().hasSelection() and self.proxy.rowCount():
            self.view.selectRow(0)

    def request_load(self) -> None:
        current = self.view.currentIndex()
        if not self.view.selectionModel().hasSelection() and current.isValid():  # a row reached by Tab
            self.view.selectRow(current.row())
        model_id = self.selected_model_id()
        if model_id:
            self.sigLoadRequested.emit(model_id)

    # --- actions ---------------------------------------------------------------------------------------
    def open_add_dialog(self) -> AddModelDialog:
        """Open the Add model form (window-modal, not blocking); returns it so callers can watch it."""
        return self._editing.open_add()

    def open_edit_dialog(self, model_id: str) -> AddModelDialog | None:
        """Open the form on one of the user's models (a built-in cannot be edited: None, and a status line)."""
        return self._editing.open_edit(model_id)

    def delete_model(self, model_id: str) -> bool:
        """Remove one of the user's models after asking (the question says what is removed); True when removed."""
        return self._editing.delete(model_id)

    def _on_selected(self, action: Any) -> None:
        model_id = self.selected_model_id()
        if model_id:
            action(model_id)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Scan a folder for models")
        if folder:
            self.start_scan(folder)

    def start_scan(self, path: str) -> FolderScan:
        """Scan ``path`` off the UI thread (a cancellable progress dialog), then preview what was found."""
        return self._scans.start(path)

    def cancel_scan(self) -> None:
        self._scans.cancel()

    @property
    def _scan(self) -> FolderScan | None:
        return self._scans.scan

    @property
    def scan_preview(self) -> ScanPreviewDialog | None:
        """The scan's preview while it is open (nothing is registered before it is accepted)."""
        return self._scans.preview

    def shutdown(self) -> None:
        """Stop a running scan and wait for its thread (called by the panel on close)."""
        self._scans.shutdown()

    # --- internals -------------------------------------------------------------------------------------
    def _fill_providers(self) -> None:
        current = self.provider_combo.currentData()
        names = sorted({m.provider_name for m in self._registry.list_models()} | {ModelProvider.OTHER.value})
        self.provider_combo.blockSignals(True)
        self.provider_combo.clear()
        self.provider_combo.addItem("All providers", "")
        for name in names:
            self.provider_combo.addItem(name, name)
        self.provider_combo.setCurrentIndex(max(0, self.provider_combo.findData(current)))
        self.provider_combo.blockSignals(False)

    def _on_search(self, text: str) -> None:
        text = text.strip()
        ids = {m.id for m in self._registry.search(text, limit=10_000)} if text else None
        self.proxy.set_ids(ids)

    def _on_selection(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        model_id = self.selected_model_id()
        row = self.table_model.row_of(model_id) if model_id else -1
        self.load_button.setEnabled(row >= 0)
        mine = row >= 0 and self.table_model.metadata_at(row).origin != "builtin"
        self.edit_button.setEnabled(mine)
        self.delete_button.setEnabled(mine)
        if row < 0:
            self.detail_title.setText("Select a model")
            self.detail_reason.setText("")
            self.detail_text.setPlainText("")
            return
        meta = self.table_model.metadata_at(row)
        self.detail_title.setText(f"{meta.name}  ({params_label(meta.parameter_count)}, {type_label(meta.model_type.value)})")
        plan = self.table_model.plan_for(row)
        lighter = self.table_model.planner.lighter_label(plan.placement.model_id) \
            if isinstance(plan, Decision) else None
        reason, lines = plan_lines(plan, self.table_model.plan_problem(row), lighter)
        warnings = model_warnings(meta)  # first: what the figures below lack
        lines = ([*warnings, ""] if warnings else []) + lines
        lines += ["", f"id: {meta.id}", f"origin: {origin_label(meta, self._registry.is_override(meta.id))}"]
        if meta.path:
            lines.append(f"path: {meta.path}")
        text = "\n".join(lines)
        if self.detail_reason.text() != reason:
            self.detail_reason.setText(reason)
        if self.detail_text.toPlainText() != text:
            self.detail_text.setPlainText(text)
