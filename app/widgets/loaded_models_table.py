"""LoadedModelsTable: what the manager holds, and the buttons to free memory.

One row per model the manager holds: device, level, what ModelDeck booked for it, its state and
the keep-alive countdown. Evict, offload to the CPU, restore and pin act on the selected rows the
manager allows them on (``allowed_actions``). An action on several rows (Ctrl+A included) says
first, in one dialog, what it does to each and what it frees per device, and names the pinned
models it leaves alone: a pinned model is never touched by it. After an offload the line under
the table offers Undo. A model placed on the CPU, whole or in part, is flagged in amber: it runs
from RAM, slower than on a GPU.

Keyboard: Tab leaves the table; Enter restores an offloaded model and shows the details of any
other (never unloads anything); Delete evicts, with the same questions as the button; Ctrl+Z undoes
the last offload. The table re-reads the manager once per burst of core events (a zero-delay
timer) and changes only the rows that changed; a 1 Hz timer refreshes the countdown column while
the table is visible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView, QGridLayout, QHeaderView, QLabel, QMessageBox, QPushButton, QSizePolicy, QTableView,
    QVBoxLayout, QWidget,
)

from app.core.manager.lifecycle import LoadedModel, ModelState
from app.core.units import format_gib
from app.widgets.loaded_actions import PHRASES, NoticeBar, ask_bulk, plan_bulk, runs_on_cpu
from app.widgets.ports import ManagerPort
from app.widgets.column_fit import keep_readable
from app.widgets.focus import select_current_on_focus

__all__ = ["LoadedModelsModel", "LoadedModelsTable", "format_countdown", "device_text"]

COLUMNS = ("Model", "Device", "Level", "Booked", "Measured", "State", "Keep-alive")
_TIPS = (
    "The model's name (its id is in the tooltip of each row)",
    "Where it is loaded: cuda:N, cpu, or cuda:N+cpu when its layers are split; amber when it runs from RAM",
    "The quantization level it was loaded at",
    "Memory ModelDeck booked for it alone (weights, KV cache, compute buffer); the runtime context is "
    "booked once per device for all models and shown in the summary below",
    "What the runtime reported it allocated (llama.cpp); – when it does not say",
    "loading, loaded, busy (working: cannot be evicted), offloaded (in RAM), failed",
    "Time left before an idle model is unloaded; 'never' for pinned models or keep-alive -1",
)
#: The Device cell of a model that runs from RAM (readable on light and dark palettes).
CPU_AMBER = QColor(245, 158, 11, 90)


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


def device_text(m: LoadedModel) -> str:
    """The Device cell: where it is, and "in RAM: slower" when it was placed on the CPU."""
    if runs_on_cpu(m):
        if "+" not in m.device:
            return f"{m.device} (in RAM: slower)"
        return f"{m.device} ({m.gpu_layers or 0} layers on GPU, rest in RAM: slower)"
    return m.device + (f" ({m.gpu_layers} layers)" if "+" in m.device and m.gpu_layers else "")


def cpu_tip(m: LoadedModel) -> str:
    why = m.placement.reason if m.placement is not None else ""
    part = "all of it" if "+" not in m.device else "the layers that did not fit the GPU"
    return (f"{m.name} runs on the CPU ({part} in system RAM): generation is much slower than on a GPU.\n"
            f"Placed so because: {why}\nFree GPU memory (evict or offload another model) and load it again "
            "to run it on a GPU.")


class LoadedModelsModel(QAbstractTableModel):
    """The manager's ``loaded_models()`` as a table model: rows are inserted, removed and updated one by
    one (a reset only when the manager reorders them)."""

    def __init__(self, clock: Callable[[], float], parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: tuple[LoadedModel, ...] = ()
        self._clock = clock

    def set_rows(self, rows: tuple[LoadedModel, ...]) -> bool:
        """Replace the snapshot; True when any row changed."""
        new_ids = [m.model_id for m in rows]
        staying = set(new_ids)
        kept = [m for m in self._rows if m.model_id in staying]
        if [m.model_id for m in kept] != new_ids[:len(kept)]:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
            return True
        changed_any = len(kept) != len(self._rows) or len(rows) != len(kept)
        for r in reversed(range(len(self._rows))):
            if self._rows[r].model_id not in staying:
                self.beginRemoveRows(QModelIndex(), r, r)
                self._rows = self._rows[:r] + self._rows[r + 1:]
                self.endRemoveRows()
        changed = [r for r in range(len(kept)) if kept[r] != rows[r]]
        self._rows = rows[:len(kept)]
        if changed:
            self.dataChanged.emit(self.index(changed[0], 0), self.index(changed[-1], len(COLUMNS) - 1))
        if len(rows) > len(kept):
            self.beginInsertRows(QModelIndex(), len(kept), len(rows) - 1)
            self._rows = rows
            self.endInsertRows()
        return changed_any or bool(changed)

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
            return self._text(m, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 1 and runs_on_cpu(m):
                return cpu_tip(m)
            if col == 4:
                if not m.measured:
                    return "The runtime did not report what it allocated: Booked is ModelDeck's estimate."
                return "Allocated, as the runtime reported it (booked in place of the estimate):\n" + "\n".join(
                    f"{device} {category}: {format_gib(nbytes, 2)}" for device, category, nbytes in m.measured)
            return f"{m.model_id}\n{m.reason or ''}".strip()
        if role == Qt.ItemDataRole.BackgroundRole and col == 1 and runs_on_cpu(m):
            return CPU_AMBER
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (3, 4, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, m: LoadedModel, col: int) -> str:
        if col == 0:
            return m.name
        if col == 1:
            return device_text(m)
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


class _ButtonRow(QWidget):
    """The action buttons: one row when they fit, two in a narrow dock (it asks for the two-row width only)."""

    def __init__(self, buttons: tuple[QPushButton, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._buttons = buttons
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._columns = 0
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.reflow()

    def _width(self, columns: int) -> int:
        spacing = max(0, self._grid.horizontalSpacing())
        rows = [self._buttons[i:i + columns] for i in range(0, len(self._buttons), columns)]
        return max(sum(b.sizeHint().width() for b in row) + spacing * (len(row) - 1) for row in rows)

    def reflow(self) -> None:
        """Lay the buttons out for the width there is (call after a button's text changed)."""
        narrow = (len(self._buttons) + 1) // 2
        self.setMinimumWidth(self._width(narrow))
        columns = len(self._buttons) if self.width() >= self._width(len(self._buttons)) else narrow
        if columns == self._columns:
            return
        self._columns = columns
        for b in self._buttons:
            self._grid.removeWidget(b)
        for i, b in enumerate(self._buttons):
            self._grid.addWidget(b, i // columns, i % columns)
        for c in range(len(self._buttons) + 1):
            self._grid.setColumnStretch(c, 1 if c == columns else 0)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.reflow()


class LoadedModelsTable(QWidget):
    """The loaded-models view. Takes the manager and a bridge that forwards its events.

    ``confirm_bulk`` (default True) is the "ask first" setting for actions on several models, as
    ``ResourcePanel.loads.confirm_moves`` is for loads that move others; a host binds it to its settings.

    Signals:
        sigMessage(str): the outcome of an action, for a status bar or the event log.
        sigConfirmBulkChanged(bool): the user turned the question about several models off (False).
    """

    #: The keys this view answers to (Help › Keyboard shortcuts lists them).
    KEYS: tuple[tuple[str, str], ...] = (
        ('Enter', "Loaded: restore an offloaded model, or show a loaded one's details"),
        ('Delete', 'Loaded: evict the selected models (several: asks first)'),
        ('Ctrl+A', 'Loaded: select every model'),
        ('Ctrl+Z', 'Loaded: undo the last offload'),
    )

    sigMessage = Signal(str)
    sigConfirmBulkChanged = Signal(bool)

    def __init__(self, manager: ManagerPort, bridge: Any = None, *, clock: Callable[[], float] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._manager = manager
        self._clock = clock or manager.clock
        self.confirm_bulk = True
        self.confirm_box: QMessageBox | None = None
        self._cancelling = False
        self._undo_ids: tuple[str, ...] = ()
        self.model = LoadedModelsModel(self._clock, self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setTabKeyNavigation(False)  # Tab goes on to the buttons
        select_current_on_focus(self.view)  # Enter and Delete act on the row shown focused
        self.view.verticalHeader().setVisible(False)
        self.view.setAlternatingRowColors(True)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        # Narrow (a dock): Measured, Keep-alive and Level step aside before the name is cut.
        keep_readable(self.view, 0, 140, [COLUMNS.index(c) for c in ("Measured", "Keep-alive", "Level")])
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setToolTip("What ModelDeck booked on each device, and what the driver measures for this process")
        self.notice = NoticeBar()
        self.notice.sigUndo.connect(self.undo)
        # Mnemonics clear of the tabs (M, D, E, U), History (Y), the browser (A, C, L) and the menus (F, V, H).
        self.evict_button = QPushButton("Ev&ict")
        self.offload_button = QPushButton("Offload &to CPU")
        self.offload_button.setToolTip("Move the selected models' weights to system RAM; restore them later")
        self.restore_button = QPushButton("Restore to &GPU")
        self.restore_button.setToolTip("Bring offloaded models back to their GPU")
        self.pin_button = QPushButton("&Pin")
        self.pin_button.setToolTip("A pinned model is never evicted, expired or moved by an action on several "
                                   "models; press again to unpin")
        self.buttons = _ButtonRow((self.evict_button, self.offload_button, self.restore_button, self.pin_button))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        layout.addWidget(self.notice)
        layout.addWidget(self.buttons)
        self.evict_button.clicked.connect(lambda: self.evict_selected())
        self.offload_button.clicked.connect(lambda: self.offload_selected())
        self.restore_button.clicked.connect(lambda: self.restore_selected())
        self.pin_button.clicked.connect(lambda: self.toggle_pin_selected())
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        self.view.activated.connect(self.activate)
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.view)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete.activated.connect(self.evict_selected)
        undo = QShortcut(QKeySequence(QKeySequence.StandardKey.Undo), self)
        undo.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        undo.activated.connect(self.undo)
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.model.refresh_countdowns)
        # One re-read per burst of core events (a load sends a state change and a booking per device).
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(0)
        self._soon.timeout.connect(self.refresh)
        self._bridge = bridge
        if bridge is not None:
            bridge.sigModelStateChanged.connect(self.refresh_soon)
            bridge.sigAllocationChanged.connect(self.refresh_soon)
            bridge.sigSampled.connect(self._refresh_summary)
        self.refresh()

    # --- reading the manager --------------------------------------------------------------------
    def refresh_soon(self, *_: Any) -> None:
        """Re-read the manager once control returns to the event loop (however many events came)."""
        self._soon.start()

    def refresh(self, *_: Any) -> None:
        self._soon.stop()
        selected = set(self.selected_ids())
        had_rows = self.model.rowCount()
        if self.model.set_rows(self._manager.loaded_models()):
            for col in range(1, len(COLUMNS)):  # row-level changes do not resize the columns by themselves
                self.view.resizeColumnToContents(col)
        if had_rows and not self.view.selectionModel().hasSelection():  # a reset forgot the selection
            for i in range(self.model.rowCount()):
                if self.model.row(i).model_id in selected:
                    self.view.selectRow(i)
        if self._undo_ids and not any(self._manager.state_of(m) == ModelState.OFFLOADED for m in self._undo_ids):
            self._undo_ids = ()
            self.notice.hide()  # restored or evicted since: nothing left to undo
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
        return [m.model_id for m in self._selected()]

    def _selected(self) -> list[LoadedModel]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.model.row(r) for r in rows if r < self.model.rowCount()]

    def _update_buttons(self) -> None:
        sel = self._selected()
        allowed = [self._manager.allowed_actions(m.model_id) for m in sel]
        any_allows = lambda action: any(action in a for a in allowed)  # noqa: E731
        # A load in progress that the runtime can stop: the same button cancels it.
        self._cancelling = bool(allowed) and any_allows("cancel") and not any_allows("unload")
        self.evict_button.setText("Stop load&ing" if self._cancelling else "Ev&ict")
        self.evict_button.setToolTip("Stop loading the selected models: nothing stays booked" if self._cancelling
                                     else "Unload the selected models and release their memory (Delete); "
                                          "several models are confirmed first, pinned ones are left alone")
        self.evict_button.setEnabled(any_allows("unload") or self._cancelling)
        self.offload_button.setEnabled(any_allows("offload"))
        self.restore_button.setEnabled(any_allows("restore"))
        self.pin_button.setEnabled(bool(sel))
        self.pin_button.setText("Un&pin" if sel and all(m.pinned for m in sel) else "&Pin")
        self.buttons.reflow()

    # --- acting -----------------------------------------------------------------------------------
    def _act(self, action: str, ids: tuple[str, ...], call: Callable[[str], Any]) -> list[str]:
        """``call`` each of ``ids`` the manager still allows ``action`` on; say what was done, left, and why."""
        done, names, failed = [], [], []
        for m in self._manager.loaded_models():
            if m.model_id not in ids:
                continue
            allowed = self._manager.allowed_actions(m.model_id)
            if action not in allowed:
                why = "pinned: unpin it first" if "unpin" in allowed else f"{m.state.value} now"
                failed.append(f"{m.name}: {why}")
                continue
            try:
                call(m.model_id)
                done.append(m.model_id)
                names.append(m.name)
            except Exception as err:  # noqa: BLE001 - every refusal is shown, none crashes the view
                failed.append(f"{m.name}: {err}")
        _, done_as, verb = PHRASES[action]
        if names:
            self.sigMessage.emit(done_as.format(", ".join(names)))
        for f in failed:
            self.sigMessage.emit(f"Did not {verb} {f}")
        self.refresh()
        return done

    def _free(self, action: str, call: Callable[[str], Any]) -> None:
        """Evict or offload the selection: one named row at once, several after one question."""
        sel = self._selected()
        plan = plan_bulk(self._manager, sel, action)
        _, done_as, verb = PHRASES[action]

        def go(ids: tuple[str, ...]) -> None:
            self.confirm_box = None
            done = self._act(action, ids, call)
            freed = {d: b for mid in done for d, b in plan.frees.get(mid, {}).items()}
            where = ", ".join(f"{format_gib(b, 2)} on {d}" for d, b in freed.items())
            names = [m.name for m in plan.targets if m.model_id in done]
            skipped = f" Left alone: {', '.join(m.name for m, _ in plan.skipped)}." if plan.skipped else ""
            if not names:
                return
            text = done_as.format(", ".join(names)) + (f" (frees {where})." if where else ".")
            self._undo_ids = tuple(done) if action == "offload" else ()
            self.notice.show_text(text + skipped, f"Restore {', '.join(names)} to the GPU" if self._undo_ids else None)

        if len(sel) > 1 and self.confirm_bulk:
            self.confirm_box = ask_bulk(plan, self, go, self._never_ask)
            return
        for m, why in plan.skipped:
            self.sigMessage.emit(f"Did not {verb} {m.name}: {why}")
        if not plan.targets and len(sel) == 1:  # a single refused row: the manager's reason
            self._act(action, (sel[0].model_id,), call)
            return
        go(tuple(m.model_id for m in plan.targets))

    def _never_ask(self) -> None:
        self.confirm_bulk = False
        self.sigConfirmBulkChanged.emit(False)

    def evict_selected(self) -> None:
        if self._cancelling:
            self._act("cancel", tuple(self.selected_ids()), self._manager.cancel_load)
            return
        self._free("unload", lambda mid: self._manager.unload(mid, reason="evicted from the dashboard"))

    def offload_selected(self) -> None:
        self._free("offload", lambda mid: self._manager.offload(mid, reason="offloaded from the dashboard"))

    def restore_selected(self, ids: tuple[str, ...] | None = None) -> list[str]:
        # Never makes room by itself: a restore that needs others moved is refused with the options.
        return self._act("restore", tuple(self.selected_ids()) if ids is None else ids,
                         lambda mid: self._manager.restore(mid, make_room=False))

    def toggle_pin_selected(self) -> None:
        pin = not all(m.pinned for m in self._selected())
        self._act("pin" if pin else "unpin", tuple(self.selected_ids()), lambda mid: self._manager.pin(mid, pin))

    def undo(self) -> None:
        """Restore what the last offload moved to RAM (still offloaded, and only those)."""
        if not self._undo_ids or not self.notice.can_undo:
            return
        ids, self._undo_ids = self._undo_ids, ()
        self.notice.hide()
        self.restore_selected(ids)

    def activate(self, index: QModelIndex) -> None:
        """Enter (or a double click) on a row: restore it when offloaded; else show what it is. Never unloads."""
        if not index.isValid():
            return
        m = self.model.row(index.row())
        if m.state == ModelState.OFFLOADED and "restore" in self._manager.allowed_actions(m.model_id):
            self.restore_selected((m.model_id,))
            return
        lines = [f"{m.name}: {m.state.value}, {m.quantization} on {device_text(m)}, "
                 f"booked {format_gib(m.reserved_bytes, 2)}" + (", pinned" if m.pinned else "") + "."]
        if m.reason:
            lines.append(m.reason)
        if runs_on_cpu(m):
            lines.append("Runs from RAM: slower than on a GPU.")
        self.notice.show_text(" ".join(lines))

    # --- visibility --------------------------------------------------------------------------------
    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event: Any) -> None:  # noqa: N802
        self._timer.stop()
        super().hideEvent(event)
