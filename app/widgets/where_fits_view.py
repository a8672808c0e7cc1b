"""WhereFits: "where would this model fit" across the cluster's nodes, asked of the local planner
(``app.core.cluster.where_fits``) with the request built as a local load builds it. It proposes and
loads nothing."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QCompleter,
    QGridLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.cluster import (
    CPU_ONLY,
    DOWN,
    FITS,
    MOVES,
    NO_FIT,
    PARTIAL,
    FitAnswer,
    NodeSnapshot,
    where_fits,
)
from app.core.manager.placement import Decision, Refusal
from app.core.quantization_strategy import candidate_levels
from app.core.units import format_gib
from app.widgets.node_card import plain_label
from app.widgets.planning import ViewPlanner

__all__ = ["WhereFits", "verdict_of", "FITS", "MOVES", "PARTIAL", "CPU_ONLY", "NO_FIT", "DOWN"]

#: Verdict cell tints (translucent: readable on light and dark palettes).
_TINTS = {FITS: QColor(22, 163, 74, 60), MOVES: QColor(202, 138, 4, 70), PARTIAL: QColor(202, 138, 4, 70),
          CPU_ONLY: QColor(202, 138, 4, 70), NO_FIT: QColor(220, 38, 38, 60)}



def verdict_of(answer: FitAnswer) -> str:
    return answer.verdict


class WhereFits(QWidget):
    """A model and a level; the planner's answer on every node, best first. Proposes; loads nothing."""

    COLUMNS = ("Node", "Verdict", "Placement", "Planner says")

    def __init__(self, registry: Any, planner: ViewPlanner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._registry = registry
        self._planner = planner
        self._nodes: tuple[NodeSnapshot, ...] = ()
        self._asked: tuple[str, str | None] | None = None
        self.answers: tuple[FitAnswer, ...] = ()
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.setAccessibleName("Model to place")
        edit = self.model_combo.lineEdit()
        assert edit is not None  # an editable combo has one
        edit.setPlaceholderText("Model name or id")
        edit.returnPressed.connect(lambda: self.ask())
        self.model_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.currentTextChanged.connect(self._fill_levels)
        self.level_combo = QComboBox()
        self.level_combo.setAccessibleName("Quantization level")
        self.level_combo.setToolTip("Best: the planner chooses the level on each node, as a local load would.")
        self.find_button = QPushButton("Fi&nd")
        self.find_button.setToolTip("Ask the planner on every node that is up (nothing is booked or loaded).")
        self.find_button.clicked.connect(lambda: self.ask())
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setAccessibleName("Where the model would fit, best node first")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setTabKeyNavigation(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        for col in range(3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.note = plain_label("Proposes only: ModelDeck loads nothing on other machines from here.")

        self.title = plain_label("Where would it fit?", bold=True, wrap=False)
        self._model_label, self._level_label = QLabel("M&odel:"), QLabel("&Level:")
        self._model_label.setBuddy(self.model_combo)
        self._level_label.setBuddy(self.level_combo)
        self._bar = QGridLayout()
        self._bar.setContentsMargins(0, 0, 0, 0)
        self._wide: bool | None = None
        self._arrange(wide=False)
        self.table.setMinimumHeight(3 * 22 + 4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(self._bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.note)

    #: From this width on, the title, the model and the level share one row (a line saved at 800x600).
    WIDE = 640

    def _arrange(self, wide: bool) -> None:
        if wide == self._wide:
            return
        self._wide = wide
        bar = self._bar
        for w in (self.title, self._model_label, self.model_combo, self._level_label, self.level_combo,
                  self.find_button):
            bar.removeWidget(w)
        for col in range(7):
            bar.setColumnStretch(col, 0)
        if wide:
            for col, w in enumerate((self.title, self._model_label, self.model_combo, self._level_label,
                                     self.level_combo, self.find_button)):
                bar.addWidget(w, 0, col)
            bar.setColumnStretch(2, 1)
        else:
            bar.addWidget(self.title, 0, 0, 1, 4)
            bar.addWidget(self._model_label, 1, 0)
            bar.addWidget(self.model_combo, 1, 1, 1, 3)
            bar.addWidget(self._level_label, 2, 0)
            bar.addWidget(self.level_combo, 2, 1)
            bar.addWidget(self.find_button, 2, 2)
            bar.setColumnStretch(3, 1)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        self._arrange(wide=event.size().width() >= self.WIDE)
        super().resizeEvent(event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        """The one-row bar is only used from WIDE px on: below, it folds; so never ask for its width."""
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), 360), hint.height())

    def reload_models(self) -> None:
        """The registry's models by name (their id as data), completed on any part of the name."""
        models = sorted(self._registry.list_models(), key=lambda m: m.name.lower()) if self._registry else []
        text = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for m in models:
            self.model_combo.addItem(m.name, m.id)
            self.model_combo.setItemData(self.model_combo.count() - 1, m.id, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setEditText(text)
        self.model_combo.blockSignals(False)
        completer = QCompleter(self.model_combo.model(), self.model_combo)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.model_combo.setCompleter(completer)
        self._fill_levels()

    def _metadata(self) -> Any:
        text = self.model_combo.currentText().strip()
        i = self.model_combo.findText(text, Qt.MatchFlag.MatchFixedString)
        key = self.model_combo.itemData(i) if i >= 0 else text
        registry = self._registry if self._registry is not None else self._planner.manager.model_registry
        return registry.get_model(key) if key else None

    def _fill_levels(self, *_: Any) -> None:
        meta = self._metadata()
        levels = candidate_levels(meta) if meta is not None else ()
        current = self.level_combo.currentData()
        if [self.level_combo.itemData(i) for i in range(self.level_combo.count())] == [None, *levels]:
            return
        self.level_combo.clear()
        self.level_combo.addItem("Best", None)
        for level in levels:
            self.level_combo.addItem(level, level)
        self.level_combo.setCurrentIndex(max(0, self.level_combo.findData(current)))

    def set_nodes(self, nodes: tuple[NodeSnapshot, ...]) -> None:
        """New figures: the last question is asked again on them."""
        self._nodes = nodes
        if self._asked is not None:
            self._answer(*self._asked)

    def ask(self, model: str | None = None, level: str | None = None) -> tuple[FitAnswer, ...]:
        """Ask for ``model`` (name, id or alias) at ``level`` (None: Best), or for what the choosers say."""
        if model is not None:
            registry = self._registry if self._registry is not None else self._planner.manager.model_registry
            meta = registry.get_model(model)
            self.model_combo.setEditText(meta.name if meta is not None else model)
            self._fill_levels()
            self.level_combo.setCurrentIndex(max(0, self.level_combo.findData(level)))
        meta = self._metadata()
        if meta is None:
            self._show_note(f"Unknown model {self.model_combo.currentText().strip()!r}: pick one from the list.")
            return ()
        self._asked = (meta.id, self.level_combo.currentData())
        return self._answer(*self._asked)

    def _answer(self, model_id: str, level: str | None) -> tuple[FitAnswer, ...]:
        manager = self._planner.manager
        try:
            request = manager.request(model_id, level, None, context=None)
            self.answers = where_fits(self._nodes, request, settings=getattr(manager, "settings", None))
        except (LookupError, ValueError) as err:
            self._show_note(str(err.args[0]) if err.args else str(err))
            return ()
        self._fill_table()
        fits = sum(verdict_of(a) in (FITS, MOVES) for a in self.answers)
        self._show_note(f"{fits} of {len(self.answers)} node(s) can hold it on GPUs. Proposes only: ModelDeck loads "
                        "nothing on other machines from here." if self._nodes else "No nodes yet: add a source above.")
        return self.answers

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.answers))
        for row, a in enumerate(self.answers):
            verdict, o = verdict_of(a), a.outcome
            if isinstance(o, Decision):
                placement = f"{o.level} on {o.device}"
            elif isinstance(o, Refusal):
                placement = (f"{o.level or 'any level'}: needs {format_gib(o.needed_bytes)}, "
                             f"{format_gib(o.available_bytes)} bookable")
            else:
                placement = "—"
            for col, text in enumerate((a.node.node, verdict, placement, a.summary())):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{a.node.node} ({a.node.instance}): {a.summary()}")
                if col == 1 and verdict in _TINTS:
                    item.setBackground(_TINTS[verdict])
                if verdict == DOWN:
                    item.setForeground(self.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
                self.table.setItem(row, col, item)

    def _show_note(self, text: str) -> None:
        self.note.setText(text)
        self.note.setToolTip(text)

    def rows(self) -> list[tuple[str, ...]]:
        """The table's text, row by row (tests, hosts)."""
        return [tuple((item.text() if (item := self.table.item(r, c)) else "") for c in range(self.table.columnCount()))
                for r in range(self.table.rowCount())]

