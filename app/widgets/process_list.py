"""ProcessList: every process holding GPU memory, per device, like nvitop's process list.

Rows come from :func:`app.core.reports.gpu_processes`, the query ``modeldeck status`` prints, run
on the profile the sampler already took: the GUI thread never calls the driver. ModelDeck's own
process is marked and named with the models it runs on that device (from the manager).

Wiring (the panel or a shell)::

    processes = ProcessList(manager)                  # manager: optional, names our models
    panel.bridge.sigSampled.connect(processes.refresh)
    panel.tabs.addTab(processes, "&Processes")

A hidden list only keeps the newest profile and fills itself when shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.hardware.snapshot import HardwareProfile
from app.core.reports import GpuProcessRow, gpu_processes
from app.core.units import format_gib
from app.widgets.ports import ManagerPort

__all__ = ["ProcessList", "COLUMNS"]

COLUMNS = ("Device", "PID", "Process", "GPU memory", "Type")
_TIPS = ("The GPU, by ModelDeck's device id (the card's name is in each cell's tooltip).",
         "Process id.",
         "The program's name; ModelDeck's own process lists the models it runs on that device.",
         "Memory this process holds on the device, as the driver reports it.",
         "compute, graphics or both.")


class ProcessList(QWidget):
    """A table of (device, pid, name, GPU memory, type), largest first on each GPU.

    ``own_pids``: the processes that are ModelDeck (default: this one).
    """

    def __init__(self, manager: ManagerPort | None = None, *, own_pids: Iterable[int] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._manager = manager
        self._own = frozenset(own_pids) if own_pids is not None else frozenset({os.getpid()})
        self._profile: HardwareProfile | None = None
        self._drawn: HardwareProfile | None = None
        self._rows: tuple[GpuProcessRow, ...] = ()

        self.summary = QLabel("No sample yet.")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for i, tip in enumerate(_TIPS):
            header_item = self.table.horizontalHeaderItem(i)
            if header_item is not None:
                header_item.setToolTip(tip)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)

    def refresh(self, profile: HardwareProfile) -> None:
        """Show ``profile``'s processes (connect to the bridge's ``sigSampled``)."""
        self._profile = profile
        if self.isVisible():
            self._draw()

    def rows(self) -> tuple[GpuProcessRow, ...]:
        """The rows shown (after the newest profile was drawn)."""
        return self._rows

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        if self._profile is not self._drawn:
            self._draw()

    # --- internals -------------------------------------------------------------------------------
    def _models_by_device(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self._manager is None:
            return out
        for m in self._manager.loaded_models():
            devices = m.placement.devices if m.placement is not None else tuple(m.device.split("+"))
            for device in devices:
                out.setdefault(device, []).append(m.name)
        return out

    def _draw(self) -> None:
        profile = self._drawn = self._profile
        if profile is None:
            return
        rows = gpu_processes(profile, own_pids=self._own, models=self._models_by_device())
        gpus = [g for g in profile.gpus if not g.lost]
        if not profile.gpus:
            self.summary.setText("No GPU: no process holds GPU memory here.")
        elif not rows:
            self.summary.setText(f"No process holds memory on the {len(gpus)} GPU(s) the driver reports.")
        else:
            ours = sum(r.used_bytes or 0 for r in rows if r.own)
            self.summary.setText(f"{len(rows)} process(es) on {len({r.device for r in rows})} GPU(s); "
                                 f"ModelDeck holds {format_gib(ours, 2)}.")
        if rows == self._rows:
            return
        self._rows = rows
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        bold = QFont(self.font())
        bold.setBold(True)
        for r, row in enumerate(rows):
            name = row.name
            if row.own:
                name = "ModelDeck (this app)" + (f": {', '.join(row.models)}" if row.models else "")
            memory = format_gib(row.used_bytes, 2) if row.used_bytes is not None else "n/a"
            cells = (row.device, str(row.pid), name, memory, row.kind)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c in (1, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if row.own:
                    item.setFont(bold)
                item.setToolTip(self._tip(row, c, text))
                self.table.setItem(r, c, item)
        self.table.setCurrentCell(-1, -1)  # no focus frame on the first cell

    @staticmethod
    def _tip(row: GpuProcessRow, column: int, text: str) -> str:
        if column == 3 and row.used_bytes is None:
            return "The driver does not say how much this process holds (Windows WDDM or a MIG instance)."
        if column == 3 and row.used_bytes is not None:
            return f"{row.used_bytes:,} bytes"
        if column == 0:
            return f"{row.device}: GPU {row.gpu_index}, {row.gpu_name}"
        if column == 2 and row.own:
            return f"ModelDeck ({row.name}), pid {row.pid}" + (f"\nModels: {', '.join(row.models)}" if row.models
                                                                 else "\nNo model loaded on this device.")
        return text
