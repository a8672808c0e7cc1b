"""DeviceCells: one cell per device (a :class:`DeviceCard` over its :class:`MemoryGraph`), RAM last.

The cells reflow with the width: up to four share a row (three GPUs and RAM), more wrap three to a
row, fewer when narrow (a dock stacks them). Taller content than the height scrolls (a 600 px
window, a short dock), so nothing is squeezed. The cells are built from the first profile and
rebuilt only when the devices change.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGridLayout, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from app.core.hardware.snapshot import HardwareProfile
from app.core.sampler import device_key
from app.widgets.device_card import DeviceCard
from app.widgets.memory_graph import MemoryGraph
from app.widgets.ports import ManagerPort, SamplerPort

__all__ = ["DeviceCells", "DeviceCell", "HOST_KEY"]

#: The key of the RAM cell (GPU cells use ``device_key(gpu)``).
HOST_KEY = "host"


class DeviceCell(QWidget):
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


class DeviceCells(QScrollArea):
    """The device cells of a panel, keyed by ``device_key(gpu)`` (``HOST_KEY`` for RAM)."""

    MAX_COLUMNS = 3
    #: The width one device cell needs; narrower areas stack their cells.
    CELL_MIN_WIDTH = 280
    #: The least height; taller content scrolls.
    MIN_HEIGHT = 150

    def __init__(self, sampler: SamplerPort, planner_manager: ManagerPort, bookings: ManagerPort | None,
                 window_s: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelDeckDeviceCells")
        self._sampler = sampler
        self._planner_manager = planner_manager
        self._bookings = bookings
        self._window_s = window_s
        self.cells: dict[str, DeviceCell] = {}
        self.device_ids: dict[str, str] = {}
        self._layout_key: tuple[Any, ...] | None = None
        self.columns = 0
        box = QWidget()  # asks for one cell's width only: the cells reflow
        box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        box.setMinimumWidth(self.CELL_MIN_WIDTH)
        self.grid = QGridLayout(box)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(8)
        self.setWidget(box)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumHeight(self.MIN_HEIGHT)

    # --- reading ---------------------------------------------------------------------------------
    def cell_for_device(self, device: str) -> DeviceCell | None:
        """The cell of ``cuda:N`` or ``cpu``."""
        key = next((k for k, d in self.device_ids.items() if d == device), None)
        return self.cells.get(key) if key else None

    # --- changes ---------------------------------------------------------------------------------
    def set_window(self, seconds: int) -> None:
        self._window_s = int(seconds)
        for cell in self.cells.values():
            cell.graph.set_window(self._window_s)

    def refresh(self, profile: HardwareProfile) -> bool:
        """Show ``profile`` on every cell (built or rebuilt first when the devices changed: True then)."""
        rebuilt = self._ensure(profile)
        ledgers = self._planner_manager.ledgers()  # one snapshot for every card
        for cell in self.cells.values():
            cell.card.refresh(profile, ledgers)
            cell.graph.refresh(profile)
        return rebuilt

    def _ensure(self, profile: HardwareProfile) -> bool:
        gpus = [g for g in profile.gpus if g.mig_parent is None]
        key = (tuple(device_key(g) for g in gpus), not gpus and tuple(b for b in profile.backends))
        if key == self._layout_key:
            return False
        self._layout_key = key
        for cell in self.cells.values():
            self.grid.removeWidget(cell)
            cell.deleteLater()
        self.cells.clear()
        self.device_ids.clear()
        reserve_of = self._planner_manager.safety_margin
        entries = [(device_key(g), device_key(g), g.device_id, f"{g.device_id} {g.name}") for g in gpus]
        entries.append((HOST_KEY, None, "cpu", "cpu RAM"))
        for cell_key, sampler_key, device, name in entries:
            cell = DeviceCell(self._sampler, sampler_key, device, reserve_bytes=reserve_of(device),
                              window_s=self._window_s, planner_manager=self._planner_manager, bookings=self._bookings)
            cell.card.setAccessibleName(f"{name}: memory card")
            cell.graph.setAccessibleName(f"{name}: memory over time")
            self.cells[cell_key] = cell
            self.device_ids[cell_key] = device
        self.columns = 0
        self.place()
        return True

    def columns_for(self, width: int) -> int:
        n = len(self.cells)
        wanted = n if n <= 4 else self.MAX_COLUMNS
        return max(1, min(wanted, width // self.CELL_MIN_WIDTH))

    def place(self) -> None:
        """Lay the cells out in as many columns as the width holds."""
        # Before it is shown its width means nothing: lay out as wide, and reflow on the first resize.
        columns = self.columns_for(self.viewport().width() if self.isVisible() else 1 << 20)
        if columns == self.columns:
            return
        self.columns = columns
        for cell in self.cells.values():
            self.grid.removeWidget(cell)
        for i, cell in enumerate(self.cells.values()):
            self.grid.addWidget(cell, i // columns, i % columns)
        for c in range(max(4, self.MAX_COLUMNS)):
            self.grid.setColumnStretch(c, 1 if c < columns else 0)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self.cells:
            self.place()
