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
    QComboBox, QHBoxLayout, QLabel, QSplitter, QTabWidget, QVBoxLayout,
    QWidget,
)

from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.placement import Decision
from app.core.quantization_strategy import QuantizationStrategy
from app.widgets.bridge import CoreBridge
from app.widgets.cluster_view import ClusterView
from app.widgets.device_card import DeviceCard
from app.widgets.device_cells import HOST_KEY, DeviceCells
from app.widgets.elided_label import ElidedLabel
from app.widgets.focus import return_focus_after
from app.widgets.memory_graph import DEFAULT_WINDOW_S, TIME_WINDOWS, MemoryGraph
from app.widgets.load_flow import LoadFlow
from app.widgets.planning import ViewPlanner
from app.widgets.process_list import ProcessList
from app.widgets.ports import ManagedRegistry, ManagerPort, SamplerPort
from app.widgets.quantization_dialog import QuantizationDialog
from app.widgets.registry_browser import RegistryBrowser

__all__ = ["ResourcePanel", "HOST_KEY"]

_log = logging.getLogger(__name__)

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

    def __init__(self, sampler: SamplerPort, registry: ManagedRegistry, strategy: QuantizationStrategy | None = None,
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
        self.cells = DeviceCells(sampler, self.planner.manager, manager, self._window_s)
        monitor = QWidget()
        ml = QVBoxLayout(monitor)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.setSpacing(4)
        ml.addLayout(head)
        ml.addWidget(self.notice_card)
        ml.addWidget(self.cells, 1)

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
        self.cells.set_window(self._window_s)
        if changed:
            self.sigWindowChanged.emit(self._window_s)

    def cards(self) -> dict[str, DeviceCard]:
        """Cards by device key (``device_key(gpu)``, or ``HOST_KEY`` for RAM)."""
        return {k: c.card for k, c in self.cells.cells.items()}

    def graphs(self) -> dict[str, MemoryGraph]:
        return {k: c.graph for k, c in self.cells.cells.items()}

    def graph_for_device(self, device: str) -> MemoryGraph | None:
        """The graph of ``cuda:N`` or ``cpu``."""
        cell = self.cells.cell_for_device(device)
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
        self.planner.observe(profile)
        if self.cells.refresh(profile):  # new cells: the notice and the bookings they draw
            gpus = [g for g in profile.gpus if g.mig_parent is None]
            self.notice_card.setVisible(not gpus)
            if not gpus:
                self.notice_card.set_backend_unavailable(
                    [b for b in profile.backends if not b.available and b.name != "host"])
            self._show_all_bookings()
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
        cell = self.cells.cell_for_device(device)
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
