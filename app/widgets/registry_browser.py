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
    QAbstractItemView, QComboBox, QFileDialog, QGridLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
    QPlainTextEdit, QProgressDialog, QPushButton, QSizePolicy, QSplitter, QTableView, QVBoxLayout, QWidget,
)

from app.core.hardware.snapshot import HardwareProfile
from app.core.model_registry import ModelProvider, ModelType, RegistryError
from app.core.manager.placement import Refusal
from app.core.quantization_strategy import QuantizationStrategy
from app.core.units import format_gib
from app.widgets.add_model_dialog import AddModelDialog
from app.widgets.folder_scan import FolderScan, scanned_summary
from app.widgets.planning import ViewPlanner
from app.widgets.registry_table_model import RegistryTableModel, params_label, type_label

__all__ = ["RegistryBrowser", "RegistryFilterProxy"]

_Index = QModelIndex | QPersistentModelIndex


def breakdown_lines(estimate: Any) -> list[str]:
    """An estimate as aligned "term  GiB" lines, each followed by its reason (wraps in a narrow pane)."""
    rows = (("weights", estimate.weights), ("KV cache", estimate.kv_cache), ("compute", estimate.compute),
            ("overhead", estimate.overhead))
    lines: list[str] = []
    for label, term in rows:
        lines.append(f"{label:<9}{format_gib(term.bytes, 2):>11}")
        if term.explanation:
            lines.append(f"  {term.explanation}")
    lines.append(f"{'total':<9}{format_gib(estimate.total_bytes, 2):>11}" + ("  (approximate)" if estimate.approximate else ""))
    return lines


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

    sigLoadRequested = Signal(str)
    sigStatus = Signal(str)

    #: Below this width the bar takes two rows and the detail goes under the table.
    WIDE_WIDTH = 700
    NARROW_MIN_WIDTH = 300

    def __init__(self, registry: Any, planner: ViewPlanner | QuantizationStrategy | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._registry = registry
        self._profile: HardwareProfile | None = None
        self._scan: FolderScan | None = None
        self._progress: QProgressDialog | None = None
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
        self.device_combo.addItem("Best GPU", None)
        self.device_combo.currentIndexChanged.connect(
            lambda _i: self.table_model.set_device(self.device_combo.currentData()))
        self.add_button = QPushButton("&Add model…")
        self.add_button.setToolTip("Register a model the built-in catalog does not know.")
        self.add_button.clicked.connect(self.open_add_dialog)
        self.scan_button = QPushButton("S&can folder…")
        self.scan_button.setToolTip("Read GGUF / safetensors headers under a folder and register what is found.")
        self.scan_button.clicked.connect(self._choose_folder)

        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(RegistryTableModel.NAME, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(RegistryTableModel.NAME, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(36)
        widths = ((1, 88), (2, 84), (3, 80), (4, 74), (5, 70), (6, 64))
        for col, width in widths:
            header.resizeSection(col, width)

        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        self.view.doubleClicked.connect(lambda _i: self.request_load())
        # Keyboard: Enter on a row opens the picker, Tab leaves the table, Ctrl+F goes to the search box.
        self.view.activated.connect(lambda _i: self.request_load())
        self.view.setTabKeyNavigation(False)
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
        dl.addWidget(self.load_button, 0, Qt.AlignmentFlag.AlignRight)
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
            current = self.device_combo.currentData()
            self.device_combo.blockSignals(True)
            self.device_combo.clear()
            self.device_combo.addItem("Best GPU" if gpus else "CPU (no GPU)", None)
            for g in profile.gpus:
                if g.device_id in gpus:
                    self.device_combo.addItem(f"{g.device_id} · {g.name.removeprefix('NVIDIA ')}", g.device_id)
            self.device_combo.addItem("CPU (RAM)", "cpu")
            i = self.device_combo.findData(current)
            self.device_combo.setCurrentIndex(max(0, i))
            self.device_combo.blockSignals(False)
            self.table_model.set_device(self.device_combo.currentData())
        self.table_model.set_profile(profile)
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
        widgets = (self.search_edit, self.type_combo, self.provider_combo, self._fit_label, self.device_combo,
                   self.add_button, self.scan_button)
        for w in widgets:
            self._bar.removeWidget(w)
        for c in range(8):
            self._bar.setColumnStretch(c, 0)
        if narrow:
            for col, w in enumerate((self.search_edit, self.add_button, self.scan_button)):
                self._bar.addWidget(w, 0, col if col == 0 else col + 1, 1, 2 if col == 0 else 1)
            for col, w in enumerate((self.type_combo, self.provider_combo, self._fit_label, self.device_combo)):
                self._bar.addWidget(w, 1, col)
            self._bar.setColumnStretch(0, 1)
            self._bar.setColumnStretch(1, 1)
            self._bar.setColumnStretch(3, 1)
        else:
            for col, w in enumerate(widgets):
                self._bar.addWidget(w, 0, col)
            for col, stretch in ((0, 3), (1, 1), (2, 1), (4, 1)):
                self._bar.setColumnStretch(col, stretch)
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
        model_id = self.selected_model_id()
        if model_id:
            self.sigLoadRequested.emit(model_id)

    # --- actions ---------------------------------------------------------------------------------------
    def open_add_dialog(self) -> AddModelDialog:
        """Open the Add model form (window-modal, not blocking); returns it so callers can watch it."""
        dialog = AddModelDialog(self._registry, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._after_add(dialog))
        dialog.open()
        return dialog

    def _after_add(self, dialog: AddModelDialog) -> None:
        if dialog.registered is not None:
            self.sigStatus.emit(f"Added {dialog.registered.name}")
            self._select_soon(dialog.registered.id)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Scan a folder for models")
        if folder:
            self.start_scan(folder)

    def start_scan(self, path: str) -> FolderScan:
        """Scan ``path`` off the UI thread, with a cancellable progress dialog."""
        if self._scan is not None:
            raise RuntimeError("a scan is already running")
        scan = FolderScan(path, self)
        progress = QProgressDialog(f"Reading model headers under {path}…", "Cancel", 0, 0, self)
        progress.setWindowTitle("Scan folder")
        progress.setMinimumDuration(300)
        progress.setAutoClose(False)
        progress.setAutoReset(False)
        progress.canceled.connect(scan.cancel)
        scan.sigProgress.connect(self._on_scan_progress)
        scan.sigFinished.connect(self._on_scan_finished)
        scan.sigFailed.connect(self._on_scan_failed)
        scan.finished.connect(self._on_scan_done)
        self._scan, self._progress = scan, progress
        self.scan_button.setEnabled(False)
        scan.start()
        return scan

    def cancel_scan(self) -> None:
        if self._scan is not None:
            self._scan.cancel()

    def _on_scan_progress(self, done: int, total: int, current: str) -> None:
        if self._progress is not None:
            self._progress.setMaximum(max(total, 1))
            self._progress.setValue(done)
            self._progress.setLabelText(f"{done} of {total}: {current}")

    def _on_scan_finished(self, models: list[Any], errors: list[Any]) -> None:
        registered = []
        for m in models:
            try:
                registered.append(self._registry.register_scanned(m))
            except RegistryError as err:  # the user's model list cannot be written: one message, once
                self.sigStatus.emit(f"Scan found {len(models)} model(s) but could not register them: {err}")
                QMessageBox.warning(self, "Could not register scanned models", str(err))
                return
        self.sigStatus.emit(scanned_summary(registered, errors))
        if registered:
            self._select_soon(registered[0].id)

    def _on_scan_failed(self, message: str) -> None:
        self.sigStatus.emit(f"Scan failed: {message}")
        QMessageBox.warning(self, "Scan failed", message)

    def _on_scan_done(self) -> None:
        scan, self._scan = self._scan, None
        if scan is not None and scan.cancelled:
            self.sigStatus.emit("Scan cancelled")
        if self._progress is not None:
            self._progress.close()
            self._progress.deleteLater()
            self._progress = None
        self.scan_button.setEnabled(True)
        if scan is not None:
            scan.deleteLater()

    def shutdown(self) -> None:
        """Stop a running scan and wait for its thread (called by the panel on close)."""
        scan = self._scan
        if scan is not None:
            scan.cancel()
            scan.wait(5000)

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
        if row < 0:
            self.detail_title.setText("Select a model")
            self.detail_reason.setText("")
            self.detail_text.setPlainText("")
            return
        meta = self.table_model.metadata_at(row)
        plan = self.table_model.plan_for(row)
        self.detail_title.setText(f"{meta.name}  ({params_label(meta.parameter_count)}, {type_label(meta.model_type.value)})")
        if plan is None:
            reason, lines = self.table_model.plan_problem(row) or "", []
        elif isinstance(plan, Refusal):
            reason = plan.message()
            lines = breakdown_lines(plan.estimate) if plan.estimate else []
            lines.append(f"needs {format_gib(plan.needed_bytes, 2)}, {format_gib(plan.available_bytes, 2)} "
                         "bookable")
        else:
            placement = plan.placement
            reason = f"{placement.describe()}: {placement.reason}"
            lines = breakdown_lines(placement.estimate)
            if placement.kind in ("split", "partial"):
                lines.append("layers: " + ", ".join(f"{s.layers} on {s.device}" for s in placement.shares))
            for share in placement.shares:
                lines.append(f"books {format_gib(share.own_bytes, 2)} on {share.device}"
                             f" (+ its share of the {format_gib(share.runtime_bytes, 2)} runtime context)")
        lines += ["", f"id: {meta.id}", f"origin: {meta.origin}"]
        if meta.path:
            lines.append(f"path: {meta.path}")
        text = "\n".join(lines)
        if self.detail_reason.text() != reason:
            self.detail_reason.setText(reason)
        if self.detail_text.toPlainText() != text:
            self.detail_text.setPlainText(text)
