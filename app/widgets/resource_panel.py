"""ResourcePanel: the dashboard as one QWidget a host can embed (the standalone shell does too).

Top: one cell per device (a :class:`DeviceCard` over a :class:`MemoryGraph`), RAM last, and the
history window. Bottom: tabs for the registry browser, the loaded-models table and the event log
(the last two are slots a host or a later view fills with :meth:`set_loaded_view` /
:meth:`set_log_view`). A vertical splitter between them lets a narrow dock stay usable.

The panel only reads the core and asks it to act. It needs no timer: it redraws when the bridge
says a sample arrived, and while hidden it only notes that it is stale.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QSplitter, QTabWidget, QVBoxLayout,
    QWidget,
)

from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.placement import Decision
from app.core.quantization_strategy import QuantizationStrategy
from app.core.sampler import device_key
from app.widgets.bridge import CoreBridge
from app.widgets.cluster_view import ClusterView
from app.widgets.device_card import DeviceCard
from app.widgets.elided_label import ElidedLabel
from app.widgets.focus import return_focus_after
from app.widgets.memory_graph import DEFAULT_WINDOW_S, TIME_WINDOWS, MemoryGraph
from app.widgets.load_flow import LoadFlow
from app.widgets.planning import ViewPlanner
from app.widgets.process_list import ProcessList
from app.widgets.ports import ManagerPort, RegistryPort, SamplerPort
from app.widgets.quantization_dialog import QuantizationDialog
from app.widgets.registry_browser import RegistryBrowser

__all__ = ["ResourcePanel", "HOST_KEY"]

_log = logging.getLogger(__name__)

#: The key of the RAM cell (GPU cells use ``device_key(gpu)``).
HOST_KEY = "host"


class _DeviceCell(QWidget):
    """A card over its graph: one device, one column."""

    def __init__(self, sampler: SamplerPort, key: str | None, device: str, *, reserve_bytes: int, window_s: int,
                 planner_manager: ManagerPort, bookings: ManagerPort | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # The card asks the planning manager (the host's, or the panel's own) for ledger and pressure;
        # the graph draws the booking history of the manager that books (none: what set_reserved says).
        self.card = DeviceCard(planner_manager, device)
        self.graph = MemoryGraph(sampler, key, reserve_bytes=reserve_bytes, window_s=window_s,
                                 manager=bookings, device=device)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.card)
        layout.addWidget(self.graph, 1)


class ResourcePanel(QWidget):
    """Device cards, memory graphs and the registry browser, fed by one :class:`CoreBridge`.

    Signals:
        sigLoadRequested(str, str, str, object): (model_id, level, device, context) after the user
            confirmed the quantization picker. With a manager the panel also loads it itself.
        sigPlacementChosen(object): the planner's ``Decision`` the user confirmed (a host that loads
            models itself passes it to ``manager.load(placement=...)``).
        sigStatus(str): one-line news for a status bar.
    """

    sigLoadRequested = Signal(str, str, str, object)
    sigPlacementChosen = Signal(object)
    sigConfirmMovesChanged = Signal(bool)
    sigStatus = Signal(str)
    #: The user chose another history window (seconds): a shell keeps it for the next start.
    sigWindowChanged = Signal(int)

    MAX_COLUMNS = 3
    #: The device area's least height; taller content scrolls.
    CELLS_MIN_HEIGHT = 150
    #: The width one device cell needs; narrower panels stack their cells.
    CELL_MIN_WIDTH = 280

    def __init__(self, sampler: SamplerPort, registry: RegistryPort, strategy: QuantizationStrategy | None = None,
                 manager: ManagerPort | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._sampler = sampler
        self._registry = registry
        # Every fit is the manager's planner against its ledger (a private, planning-only one without).
        self.planner = ViewPlanner(registry, manager, strategy, sampler.latest)
        self._manager = manager
        #: Confirmations and loads off the GUI thread; ``loads.confirm_moves`` is the "ask first" setting.
        self.loads = LoadFlow(manager, self._name_of, self)
        self.loads.sigStatus.connect(self.sigStatus)
        self.loads.sigConfirmChanged.connect(self.sigConfirmMovesChanged)
        self._window_s = DEFAULT_WINDOW_S
        self._cells: dict[str, _DeviceCell] = {}
        self._device_ids: dict[str, str] = {}
        self._layout_key: tuple[Any, ...] | None = None
        self._stale = True
        self.picker: QuantizationDialog | None = None
        self._closed = False
        self._sized = False

        self.bridge = CoreBridge(sampler, registry, self, manager=manager)
        self.bridge.sigSampled.connect(self._on_sampled)
        self.bridge.sigRegistryChanged.connect(self._on_registry_changed)

        self.window_combo = QComboBox()
        self.window_combo.setToolTip("How much history the memory graphs show.")
        for label, seconds in TIME_WINDOWS.items():
            self.window_combo.addItem(label, seconds)
        self.window_combo.setCurrentIndex(self.window_combo.findData(self._window_s))
        self.window_combo.currentIndexChanged.connect(lambda _i: self.set_window(self.window_combo.currentData()))
        # A long message must never widen the panel (or the host's window): its end is cut ("…"), and
        # it is whole in the tooltip; its start, which says what happened, always shows.
        self.status_label = ElidedLabel()
        self.status_label.setObjectName("ModelDeckPanelStatus")
        self.status_label.setAccessibleName("Latest news")
        self.sigStatus.connect(self._show_status)
        self.notice_card = DeviceCard()
        self.notice_card.setVisible(False)

        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        history = QLabel("Histor&y:")  # Alt+H is the Help menu
        history.setBuddy(self.window_combo)
        head.addWidget(history)
        head.addWidget(self.window_combo)
        head.addWidget(self.status_label, 1)
        # The cells reflow with the width (stacked in a narrow dock): their box asks for one cell's width only.
        self._cells_box = QWidget()
        self._cells_box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._cells_box.setMinimumWidth(self.CELL_MIN_WIDTH)
        self._grid = QGridLayout(self._cells_box)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(8)
        self._columns = 0
        monitor = QWidget()
        ml = QVBoxLayout(monitor)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.setSpacing(4)
        ml.addLayout(head)
        ml.addWidget(self.notice_card)
        # More devices than the height holds scroll (a 600 px window, a short dock): nothing is squeezed.
        self.cells_scroll = QScrollArea()
        self.cells_scroll.setObjectName("ModelDeckDeviceCells")
        self.cells_scroll.setWidget(self._cells_box)
        self.cells_scroll.setWidgetResizable(True)
        self.cells_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.cells_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.cells_scroll.setMinimumHeight(self.CELLS_MIN_HEIGHT)
        ml.addWidget(self.cells_scroll, 1)

        self.browser = RegistryBrowser(registry, self.planner)
        self.browser.sigLoadRequested.connect(self.open_picker)
        self.browser.sigStatus.connect(self.sigStatus)
        self.loaded_area = self._placeholder("Loaded models appear here once the resource manager is connected.")
        self.log_area = self._placeholder("Loads, evictions and their reasons appear here.")
        self.tabs = QTabWidget()
        self.tabs.setObjectName("ModelDeckTabs")
        self.tabs.addTab(self.browser, "&Models")
        self.tabs.addTab(self.loaded_area, "Loa&ded")
        self.tabs.addTab(self.log_area, "&Events")
        self.cluster = ClusterView(registry, self.planner)
        self.tabs.addTab(self.cluster, "Cl&uster")
        # Every process holding GPU memory, from the profile each sample already carries.
        self.processes = ProcessList(manager)
        self.tabs.addTab(self.processes, "P&rocesses")
        self.bridge.sigSampled.connect(self.processes.refresh)

        if manager is not None:
            self._connect_manager(manager)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("ModelDeckPanelSplitter")
        self.splitter.addWidget(monitor)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)
        # Device cells and graphs are built on first show: a host may create the panel long before.

    # --- public ------------------------------------------------------------------------------------
    @property
    def manager(self) -> ManagerPort | None:
        """The manager the panel acts through (None: a monitor that only plans)."""
        return self._manager

    @property
    def window_s(self) -> int:
        return self._window_s

    def set_window(self, seconds: int) -> None:
        """The history window of every graph (60, 600, 3600 or 86400 seconds)."""
        changed = int(seconds) != self._window_s
        self._window_s = int(seconds)
        i = self.window_combo.findData(self._window_s)
        if i >= 0 and i != self.window_combo.currentIndex():
            self.window_combo.setCurrentIndex(i)
        for cell in self._cells.values():
            cell.graph.set_window(self._window_s)
        if changed:
            self.sigWindowChanged.emit(self._window_s)

    def cards(self) -> dict[str, DeviceCard]:
        """Cards by device key (``device_key(gpu)``, or ``HOST_KEY`` for RAM)."""
        return {k: c.card for k, c in self._cells.items()}

    def graphs(self) -> dict[str, MemoryGraph]:
        return {k: c.graph for k, c in self._cells.items()}

    def graph_for_device(self, device: str) -> MemoryGraph | None:
        """The graph of ``cuda:N`` or ``cpu``."""
        key = next((k for k, d in self._device_ids.items() if d == device), None)
        cell = self._cells.get(key) if key else None
        return cell.graph if cell else None

    def set_reserved(self, device: str, bands: dict[str, int]) -> None:
        """What ModelDeck reserved per model on ``cuda:N`` or ``cpu`` (feed from the allocator)."""
        graph = self.graph_for_device(device)
        if graph is not None:
            graph.set_reserved(bands)

    def set_loaded_view(self, widget: QWidget) -> None:
        self._replace_tab(self.loaded_area, widget)
        self.loaded_area = widget

    def set_log_view(self, widget: QWidget) -> None:
        self._replace_tab(self.log_area, widget)
        self.log_area = widget

    def save_state(self) -> dict[str, Any]:
        """Layout a host stores with its own settings (bytes and ints only)."""
        return {"splitter": bytes(self.splitter.saveState().data()),
                "browser_splitter": bytes(self.browser.splitter.saveState().data()),
                "window_s": self._window_s, "tab": self.tabs.currentIndex()}

    def restore_state(self, state: dict[str, Any]) -> None:
        if state.get("splitter"):
            self.splitter.restoreState(QByteArray(bytes(state["splitter"])))
        if state.get("browser_splitter"):
            self.browser.splitter.restoreState(QByteArray(bytes(state["browser_splitter"])))
        if state.get("window_s") in TIME_WINDOWS.values():
            self.set_window(int(state["window_s"]))
        if isinstance(state.get("tab"), int) and 0 <= state["tab"] < self.tabs.count():
            self.tabs.setCurrentIndex(state["tab"])

    def open_picker(self, model_id: str) -> QuantizationDialog | None:
        """The quantization picker for a model (window-modal; OK emits ``sigLoadRequested``)."""
        meta = self._registry.get_model(model_id)
        profile = self._sampler.latest
        if meta is None or profile is None:
            self.sigStatus.emit(f"Cannot plan {model_id}: " + ("unknown model" if meta is None else "no hardware sample yet"))
            return None
        if self.picker is not None:
            self.picker.close()
        self.planner.observe(profile)
        dialog = QuantizationDialog(meta, profile, self.planner, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._on_picked(model_id, dialog))
        dialog.destroyed.connect(lambda *_: self._forget_picker(dialog))
        self.picker = dialog
        return_focus_after(dialog, self.browser)
        dialog.open()
        return dialog

    def shutdown(self) -> None:
        """Disconnect from the core and stop background work; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.bridge.close()
        self.browser.shutdown()
        self.cluster.shutdown()
        self.loads.shutdown()
        if self.picker is not None:
            self.picker.close()

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    # --- core events -------------------------------------------------------------------------------
    def _on_sampled(self, profile: HardwareProfile) -> None:
        self._stale = True
        if self.isVisible():
            self._apply(profile)

    def _apply(self, profile: HardwareProfile) -> None:
        self._stale = False
        self._ensure_cells(profile)
        self.planner.observe(profile)
        for cell in self._cells.values():
            cell.card.refresh(profile)
            cell.graph.refresh(profile)
        self.browser.set_profile(profile)

    def _on_registry_changed(self) -> None:
        self.browser.reload()

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._sized:
            self._sized = True
            total = max(400, self.splitter.height())
            self.splitter.setSizes([total * 9 // 20, total * 11 // 20])
        latest = self._sampler.latest
        if self._stale and latest is not None:
            self._apply(latest)

    # --- cells ---------------------------------------------------------------------------------------
    def _ensure_cells(self, profile: HardwareProfile) -> None:
        gpus = [g for g in profile.gpus if g.mig_parent is None]
        key = (tuple(device_key(g) for g in gpus), not gpus and tuple(b for b in profile.backends))
        if key == self._layout_key:
            return
        self._layout_key = key
        for cell in self._cells.values():
            self._grid.removeWidget(cell)
            cell.deleteLater()
        self._cells.clear()
        self._device_ids.clear()
        reserve_of = self.planner.safety_margin
        entries: list[tuple[str, str | None, str, int]] = [
            (device_key(g), device_key(g), g.device_id, reserve_of(g.device_id)) for g in gpus
        ]
        entries.append((HOST_KEY, None, "cpu", reserve_of("cpu")))
        names = {device_key(g): f"{g.device_id} {g.name}" for g in gpus} | {HOST_KEY: "cpu RAM"}
        for cell_key, sampler_key, device, reserve in entries:
            cell = _DeviceCell(self._sampler, sampler_key, device, reserve_bytes=reserve, window_s=self._window_s,
                               planner_manager=self.planner.manager, bookings=self._manager)
            cell.card.setAccessibleName(f"{names[cell_key]}: memory card")
            cell.graph.setAccessibleName(f"{names[cell_key]}: memory over time")
            self._cells[cell_key] = cell
            self._device_ids[cell_key] = device
        self._columns = 0
        self._place_cells()
        unavailable = [b for b in profile.backends if not b.available and b.name != "host"]
        self.notice_card.setVisible(not gpus)
        if not gpus:
            self.notice_card.set_backend_unavailable(unavailable)
        self._show_all_bookings()

    def _columns_for(self, width: int) -> int:
        """Up to four cells share one row (three GPUs and RAM), more wrap three to a row; fewer when narrow."""
        n = len(self._cells)
        wanted = n if n <= 4 else self.MAX_COLUMNS
        return max(1, min(wanted, width // self.CELL_MIN_WIDTH))

    def _place_cells(self) -> None:
        # Before the panel is shown its width means nothing: lay out as wide, and reflow on the first resize.
        columns = self._columns_for(self.cells_scroll.viewport().width() if self.isVisible() else 1 << 20)
        if columns == self._columns:
            return
        self._columns = columns
        for cell in self._cells.values():
            self._grid.removeWidget(cell)
        for i, cell in enumerate(self._cells.values()):
            self._grid.addWidget(cell, i // columns, i % columns)
        for c in range(max(4, self.MAX_COLUMNS)):
            self._grid.setColumnStretch(c, 1 if c < columns else 0)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._cells:
            self._place_cells()

    # --- loading -------------------------------------------------------------------------------------
    def _forget_picker(self, dialog: QuantizationDialog) -> None:
        if self.picker is dialog:
            self.picker = None

    def _on_picked(self, model_id: str, dialog: QuantizationDialog) -> None:
        decision = dialog.decision()
        level, device, context = dialog.selection()
        if decision is None or level is None:
            return
        self.loads.ask_then(decision, self, lambda: self._go(decision, level, device, context))

    def _go(self, decision: Decision, level: str, device: str, context: int | None) -> None:
        model_id = decision.model_id
        self.sigLoadRequested.emit(model_id, level, device, context)
        self.sigPlacementChosen.emit(decision)
        if self._manager is None:
            self.sigStatus.emit(f"Load requested: {model_id}: {decision.describe()}")
            return
        self.loads.load(decision)

    def load_decision(self, decision: Decision) -> None:
        """Load what the picker showed, off the GUI thread (see :class:`LoadFlow`)."""
        self.loads.load(decision)

    # --- the manager -------------------------------------------------------------------------------
    def _connect_manager(self, manager: Any) -> None:
        """The Loaded and Events tabs, booking bands on the graphs, and pressure changes on the cards."""
        from app.widgets.event_log import EventLog
        from app.widgets.loaded_models_table import LoadedModelsTable

        self.loaded_view = LoadedModelsTable(manager, self.bridge)
        self.event_log = EventLog(self.bridge)
        self.loaded_view.sigMessage.connect(self.sigStatus)  # the status line and the Events tab
        self.sigStatus.connect(self.event_log.append)
        self.set_loaded_view(self.loaded_view)
        self.set_log_view(self.event_log)
        self.bridge.sigAllocationChanged.connect(self._show_bookings)
        self.bridge.sigAllocationChanged.connect(lambda _d: self.browser.invalidate_plans())
        self.bridge.sigPressureChanged.connect(self._show_pressure)

    def _show_bookings(self, device: str) -> None:
        """What ModelDeck booked on ``device`` (each model, and the shared runtime context), as bands."""
        if self._manager is None:
            return
        self.set_reserved(device, {b.label: b.bytes for b in self._manager.bookings(device)})

    def _show_pressure(self, device: str, _level: object) -> None:
        """A pressure change shows at once (the card asks the manager), not at the next sample."""
        cell = self._cells.get(next((k for k, d in self._device_ids.items() if d == device), ""))
        latest = self._sampler.latest
        if cell is not None and latest is not None and self.isVisible():
            cell.card.refresh(latest)

    def _show_all_bookings(self) -> None:
        if self._manager is not None:
            for device in self._manager.devices():
                self._show_bookings(device)

    # --- helpers -------------------------------------------------------------------------------------
    def _show_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _name_of(self, model_id: str) -> str:
        meta = self._registry.get_model(model_id)
        return meta.name if meta is not None else model_id

    @staticmethod
    def _placeholder(text: str) -> QWidget:
        widget = QLabel(text)
        widget.setAlignment(Qt.AlignmentFlag.AlignCenter)
        widget.setWordWrap(True)
        widget.setEnabled(False)
        return widget

    def _replace_tab(self, old: QWidget, new: QWidget) -> None:
        i = self.tabs.indexOf(old)
        title = self.tabs.tabText(i)
        self.tabs.removeTab(i)
        self.tabs.insertTab(i, new, title)
        old.deleteLater()
