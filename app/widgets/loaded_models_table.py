"""LoadedModelsTable: what the manager holds, and the buttons to free memory.

One row per model the manager holds: device, level, what ModelDeck booked for it, its state and
the keep-alive countdown. Evict, offload to the CPU, restore and pin act on the selected rows the
manager allows them on (``allowed_actions``: a pinned model is left as it is, and says so); a
summary line per device sets what ModelDeck booked against what the driver measures for this
process, so the allocator's view and the card's can be compared.

The table re-reads the manager's snapshot when the bridge reports a state or booking change; a
1 Hz timer only refreshes the countdown column, and only while the table is visible.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget,
)

from app.core.model_resource_manager import LoadedModel, ModelState
from app.core.units import format_gib

__all__ = ["LoadedModelsModel", "LoadedModelsTable", "format_countdown"]

COLUMNS = ("Model", "Device", "Level", "Booked", "Measured", "State", "Keep-alive")
_TIPS = (
    "The model's name (its id is in the tooltip of each row)",
    "Where it is loaded: cuda:N, cpu, or cuda:N+cpu when its layers are split",
    "The quantization level it was loaded at",
    "Memory ModelDeck booked for it alone (weights, KV cache, compute buffer); the runtime context is "
    "booked once per device for all models and shown in the summary below",
    "loading, loaded, busy (working: cannot be evicted), offloaded (in RAM), failed",
    "Time left before an idle model is unloaded; 'never' for pinned models or keep-alive -1",
)


def format_countdown(expires_at: float | None, now: float, state: ModelState, pinned: bool) -> str:
    if pinned:
        return "pinned"
    if expires_at is None:
        return "never"
    if state != ModelState.LOADED:
        return "-"
    left = max(0.0, expires_at - now)
    minutes, seconds = divmod(int(math.ceil(left)), 60)
    return f"{minutes}:{seconds:02d}" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class LoadedModelsModel(QAbstractTableModel):
    """The manager's ``loaded_models()`` as a table model (a snapshot, replaced on change)."""

    def __init__(self, clock: Callable[[], float], parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: tuple[LoadedModel, ...] = ()
        self._clock = clock

    def set_rows(self, rows: tuple[LoadedModel, ...]) -> None:
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()

    def row(self, i: int) -> LoadedModel:
        return self._rows[i]

    def refresh_countdowns(self) -> None:
        if self._rows:
            col = COLUMNS.index("Keep-alive")
            self.dataChanged.emit(self.index(0, col), self.index(len(self._rows) - 1, col))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return _TIPS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        m = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return m.name
            if col == 1:
                return m.device + (f" ({m.gpu_layers} layers)" if "+" in m.device and m.gpu_layers else "")
            if col == 2:
                return m.quantization
            if col == 3:
                return format_gib(m.reserved_bytes, 2)
            if col == 4:  # what the runtime reported it allocated (llama.cpp); "–" when it does not say
                measured = m.measured_bytes
                return format_gib(sum(measured.values()), 2) if measured else "–"
            if col == 5:
                return m.state.value
            return format_countdown(m.expires_at, self._clock(), m.state, m.pinned)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 4:
                if not m.measured:
                    return "The runtime did not report what it allocated: Booked is ModelDeck's estimate."
                return "Allocated, as the runtime reported it (booked in place of the estimate):\n" + "\n".join(
                    f"{device} {category}: {format_gib(nbytes, 2)}" for device, category, nbytes in m.measured)
            return f"{m.model_id}\n{m.reason or ''}".strip()
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (3, 4, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class LoadedModelsTable(QWidget):
    """The loaded-models view. Takes the manager and a bridge that forwards its events.

    Signals:
        sigMessage(str): the outcome of an action, for a status bar or the event log.
    """

    sigMessage = Signal(str)

    def __init__(self, manager: Any, bridge: Any = None, *, clock: Callable[[], float] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._manager = manager
        self._clock = clock or manager.clock
        self.model = LoadedModelsModel(self._clock, self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.verticalHeader().setVisible(False)
        self.view.setAlternatingRowColors(True)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setToolTip("What ModelDeck booked on each device, and what the driver measures for this process")
        self.evict_button = QPushButton("Evict")
        self.evict_button.setToolTip("Unload the selected models and release their memory")
        self.offload_button = QPushButton("Offload to CPU")
        self.offload_button.setToolTip("Move the selected models' weights to system RAM; restore them later")
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("Bring offloaded models back to their GPU")
        self.pin_button = QPushButton("Pin")
        self.pin_button.setToolTip("A pinned model is never evicted or expired; press again to unpin")
        buttons = QHBoxLayout()
        for b in (self.evict_button, self.offload_button, self.restore_button, self.pin_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        self.evict_button.clicked.connect(self.evict_selected)
        self.offload_button.clicked.connect(self.offload_selected)
        self.restore_button.clicked.connect(self.restore_selected)
        self.pin_button.clicked.connect(self.toggle_pin_selected)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.model.refresh_countdowns)
        self._bridge = bridge
        if bridge is not None:
            bridge.sigModelStateChanged.connect(self.refresh)
            bridge.sigAllocationChanged.connect(self.refresh)
            bridge.sigSampled.connect(self._refresh_summary)
        self.refresh()

    # --- reading the manager --------------------------------------------------------------------
    def refresh(self, *_: Any) -> None:
        selected = set(self.selected_ids())
        self.model.set_rows(self._manager.loaded_models())
        for i in range(self.model.rowCount()):
            if self.model.row(i).model_id in selected:
                self.view.selectRow(i)
        self._refresh_summary()
        self._update_buttons()

    def _refresh_summary(self, *_: Any) -> None:
        parts = []
        for ledger in self._manager.ledgers():
            if ledger.reserved_bytes == 0:
                continue
            measured = ("driver cannot say" if ledger.measured_ours_bytes is None
                        else f"this process holds {format_gib(ledger.measured_ours_bytes, 2)}")
            shared = (f" ({format_gib(ledger.runtime_bytes, 2)} shared runtime)"
                      if ledger.runtime_bytes else "")
            parts.append(f"{ledger.device}: booked {format_gib(ledger.reserved_bytes, 2)}{shared} · {measured} · "
                         f"{format_gib(ledger.available_bytes, 2)} still bookable")
        self.summary.setText("\n".join(parts) if parts else "No memory booked by ModelDeck.")

    def selected_ids(self) -> list[str]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.model.row(r).model_id for r in rows if r < self.model.rowCount()]

    def _selected(self) -> list[LoadedModel]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.model.row(r) for r in rows if r < self.model.rowCount()]

    def _allowed(self) -> dict[str, frozenset[str]]:
        return {m.model_id: self._manager.allowed_actions(m.model_id) for m in self._selected()}

    def _update_buttons(self) -> None:
        sel = self._selected()
        allowed = self._allowed()
        any_allows = lambda action: any(action in a for a in allowed.values())  # noqa: E731
        # A load in progress that the runtime can stop: the same button cancels it.
        cancelling = bool(allowed) and any_allows("cancel") and not any_allows("unload")
        self.evict_button.setText("Cancel load" if cancelling else "Evict")
        self.evict_button.setToolTip("Stop loading the selected models: nothing stays booked" if cancelling
                                     else "Unload the selected models and release their memory")
        self.evict_button.setEnabled(any_allows("unload") or cancelling)
        self.offload_button.setEnabled(any_allows("offload"))
        self.restore_button.setEnabled(any_allows("restore"))
        self.pin_button.setEnabled(bool(sel))
        self.pin_button.setText("Unpin" if sel and all(m.pinned for m in sel) else "Pin")

    # --- acting -----------------------------------------------------------------------------------
    def _each(self, verb: str, action: str, call: Callable[[str], Any]) -> None:
        """Do ``call`` to each selected model the manager allows ``action`` on; say what was left and why."""
        done, failed = [], []
        for mid, allowed in self._allowed().items():
            if action not in allowed:
                why = "pinned: unpin it first" if "unpin" in allowed else f"{self._manager.state_of(mid).value} now"
                failed.append(f"{mid}: {why}")
                continue
            try:
                call(mid)
                done.append(mid)
            except Exception as err:  # noqa: BLE001 - every refusal is shown, none crashes the view
                failed.append(f"{mid}: {err}")
        if done:
            self.sigMessage.emit(f"{verb} {', '.join(done)}")
        for f in failed:
            self.sigMessage.emit(f"could not {verb.lower()} {f}")
        self.refresh()

    def evict_selected(self) -> None:
        if self.evict_button.text() == "Cancel load":
            self._each("Cancelling", "cancel", self._manager.cancel_load)
            return
        self._each("Evicted", "unload", lambda mid: self._manager.unload(mid, reason="evicted from the dashboard"))

    def offload_selected(self) -> None:
        self._each("Offloaded", "offload",
                   lambda mid: self._manager.offload(mid, reason="offloaded from the dashboard"))

    def restore_selected(self) -> None:
        # Never makes room by itself: a restore that needs others moved is refused with the options.
        self._each("Restored", "restore", lambda mid: self._manager.restore(mid, make_room=False))

    def toggle_pin_selected(self) -> None:
        pin = not all(m.pinned for m in self._selected())
        self._each("Pinned" if pin else "Unpinned", "pin" if pin else "unpin", lambda mid: self._manager.pin(mid, pin))

    # --- visibility --------------------------------------------------------------------------------
    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event: Any) -> None:  # noqa: N802
        self._timer.stop()
        super().hideEvent(event)
