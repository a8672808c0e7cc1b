"""ClusterView: the ModelDeck nodes a Prometheus server (or each node's exporter) reports, read-only.

A source bar names where to read (``prometheus:URL`` or ``exporter:URL``); every node found gets a
card with its GPUs, what is booked and bookable on each, their pressure and the models they hold.
A node that stopped answering says DOWN with the time it was last seen, and keeps its last figures,
greyed. "Where would it fit" asks the local planner (``app.core.cluster.where_fits``) about every
node, with the request built exactly as a local load builds it; it proposes and loads nothing.

Reading is done on a worker thread, one fetch at a time; results reach the GUI thread through a
queued signal. A timer refreshes every ``refresh_interval_s`` while the view is visible.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QCompleter,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.cluster import (
    ClusterError,
    ExporterSource,
    FitAnswer,
    NodeSnapshot,
    PrometheusSource,
    RemoteDevice,
    RemoteModel,
    where_fits,
)
from app.core.manager.placement import Decision, Refusal
from app.core.quantization_strategy import candidate_levels
from app.core.units import GiB, format_gib
from app.widgets.device_card import PRESSURE_LEVELS
from app.widgets.planning import ViewPlanner

__all__ = ["ClusterView", "NodeCard", "WhereFits", "detect_kind", "make_source", "parse_source", "verdict_of"]

#: The kind chooser's entries, and how a source is listed.
KINDS = {"auto": "Auto", "prometheus": "Prometheus", "exporter": "Exporter"}
KIND_NAMES = {"prometheus": "Prometheus server", "exporter": "Exporter"}
#: ``modeldeck exporter``'s default port: a URL on it is an exporter, not a Prometheus server.
EXPORTER_PORT = 9477
FITS, MOVES, NO_FIT, DOWN = "fits", "fits after moving others", "does not fit", "node down"
#: Verdict cell tints (translucent: readable on light and dark palettes).
_TINTS = {FITS: QColor(22, 163, 74, 60), MOVES: QColor(202, 138, 4, 70), NO_FIT: QColor(220, 38, 38, 60)}


def detect_kind(url: str) -> str:
    """"exporter" for a URL ending in /metrics or on port 9477, else "prometheus"."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    return "exporter" if parts.path.rstrip("/").endswith("/metrics") or port == EXPORTER_PORT else "prometheus"


def make_source(spec: str) -> Any:
    """The reader for ``prometheus:URL`` / ``exporter:URL``; a malformed URL raises :class:`ClusterError`."""
    kind, _, url = spec.partition(":")
    if kind == "exporter":
        return ExporterSource(url)
    if kind == "prometheus":
        return PrometheusSource(url)
    raise ClusterError(f"{spec!r}: say prometheus:URL or exporter:URL")


def parse_source(text: str, kind: str = "auto") -> str:
    """``text`` as a canonical ``kind:URL`` (a ``prometheus:``/``exporter:`` prefix wins over ``kind``)."""
    text = text.strip()
    for k in ("prometheus", "exporter"):
        if text.startswith(k + ":") and not text.startswith(k + "://"):
            kind, text = k, text[len(k) + 1:].strip()
    if kind not in ("prometheus", "exporter"):
        kind = detect_kind(text)
    return f"{kind}:{make_source(f'{kind}:{text}').url}"


def verdict_of(answer: FitAnswer) -> str:
    if answer.outcome is None:
        return DOWN
    if not answer.fits:
        return NO_FIT
    return MOVES if answer.disturbs else FITS


def seen_text(stamp: float | None, now: float) -> str:
    """"12:01:03 (40 s ago)"; the date too when it was not today."""
    if stamp is None:
        return "never seen"
    age = max(0.0, now - stamp)
    fmt = "%H:%M:%S" if time.localtime(stamp)[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M:%S"
    ago = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h"
    return f"{time.strftime(fmt, time.localtime(stamp))} ({ago} ago)"


def attention_color(palette: QPalette) -> str:
    """A red that reads on the palette's window colour (light or dark)."""
    return "#f87171" if palette.color(QPalette.ColorRole.Window).lightness() < 128 else "#b91c1c"


def fetch_all(sources: Sequence[tuple[str, Any]],
              cancel: threading.Event) -> tuple[tuple[NodeSnapshot, ...], tuple[str, ...]]:
    """Every source's nodes, and one line per source that could not be read (never a traceback)."""
    nodes: list[NodeSnapshot] = []
    errors: list[str] = []
    for spec, source in sources:
        if cancel.is_set():
            break
        try:
            nodes.extend(source.fetch())
        except ClusterError as err:
            errors.append(" ".join(str(err).split()))
        except Exception as err:  # noqa: BLE001 - a reader's bug or an odd answer: one line, the view lives on
            errors.append(" ".join(f"{spec.partition(':')[2]}: {type(err).__name__}: {err}".split()))
    return tuple(nodes), tuple(errors)


class _Relay(QObject):
    """Lives on the GUI thread; a worker emits on it and the view's slot runs queued."""

    sigDone = Signal(int, object, object)


class _Fetcher:
    """One fetch at a time on a worker thread. Holds no reference to the view."""

    def __init__(self) -> None:
        self.relay = _Relay()
        self.busy = False
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def start(self, generation: int, sources: list[tuple[str, Any]]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modeldeck-cluster")
        relay, cancel = self.relay, self._cancel
        self.busy = True

        def job() -> None:
            nodes, errors = fetch_all(sources, cancel)
            if not cancel.is_set():
                relay.sigDone.emit(generation, nodes, errors)

        self._pool.submit(job)

    def close(self, *_: Any, wait: bool = False) -> None:
        self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


def _label(text: str = "", *, bold: bool = False, wrap: bool = True) -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    if bold:
        font = QFont(label.font())
        font.setBold(True)
        label.setFont(font)
    return label


def _pill(text: str, bg: str, fg: str, tip: str) -> QLabel:
    pill = QLabel(text)
    pill.setStyleSheet(f"QLabel {{ background: {bg}; color: {fg}; border-radius: 6px; padding: 0 6px; }}")
    pill.setToolTip(tip)
    pill.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
    return pill


def _model_line(m: RemoteModel, device: str) -> QLabel:
    others = [d for d in m.devices if d != device]
    text = (f"{m.name} · {m.level} · {m.state} · {format_gib(m.bytes_on(device) if device else m.booked_bytes)}"
            + (f" (also on {', '.join(others)})" if others else "") + (" · pinned" if m.pinned else ""))
    line = _label(text)
    line.setContentsMargins(14, 0, 0, 0)
    line.setToolTip(f"{m.model_id}\nplacement: {m.placement or 'n/a'}, booked {format_gib(m.booked_bytes, 2)} "
                    f"in all" + ("\npinned: never evicted" if m.pinned else ""))
    return line


class NodeCard(QFrame):
    """One node: a header (up, or DOWN and when last seen), then its GPUs and their models, then RAM."""

    def __init__(self, node: NodeSnapshot, now: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node = node
        self.setFrameShape(QFrame.Shape.StyledPanel)
        # Never squashed: the scroll area scrolls instead (word-wrapped lines grow with a narrow width).
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        red = attention_color(self.palette())
        state = "up" if node.up else f"DOWN — last seen {seen_text(node.last_seen, now)}"
        if not node.up and node.last_seen is None:
            state = "DOWN — never seen"
        where = node.node if node.node == node.instance else f"{node.node} · {node.instance}"
        self.header = _label(f"{where} · {state}", bold=True)
        self.setAccessibleName(f"Node {node.node}, {'up' if node.up else 'down'}")
        self.header.setToolTip(f"Read from {node.source}" + (f"\nModelDeck {node.version}" if node.version else ""))
        if not node.up:
            self.header.setStyleSheet(f"QLabel {{ color: {red}; }}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(3)
        layout.addWidget(self.header)
        if node.error:
            why = _label(node.error + ("; figures below are as last seen" if not node.up and node.devices else ""))
            why.setStyleSheet(f"QLabel {{ color: {red}; }}")
            layout.addWidget(why)
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(2)
        for gpu in node.gpus:
            self._add_device(body, gpu, node.models_on(gpu.device), node.up)
        ram = next((d for d in node.devices if not d.is_gpu), None)
        in_ram = [m for m in node.models if not any(d != "cpu" for d in m.devices)]
        if ram is not None or in_ram:
            body.addSpacing(4)
            title = _label("RAM", bold=True)
            title.setToolTip("The node's system memory: where CPU-placed models and offloaded layers are booked.")
            body.addWidget(title)
            body.addWidget(_label(self._figures(ram) if ram is not None else "n/a"))
            for m in in_ram:
                body.addWidget(_model_line(m, "cpu" if m.devices else ""))
        if not node.devices and not node.up:
            body.addWidget(_label("No figures: this node was never read."))
        elif not node.models:
            quiet = _label("No models loaded")
            quiet.setEnabled(False)
            body.addWidget(quiet)
        self.body.setEnabled(node.up)  # a down node's figures are its last known: greyed
        layout.addWidget(self.body)

    @staticmethod
    def _figures(d: RemoteDevice) -> str:
        used = "n/a" if d.used_bytes is None else f"{d.used_bytes / GiB:.1f}"
        return (f"{used} / {format_gib(d.total_bytes)} used · {format_gib(d.booked_bytes)} booked · "
                f"{format_gib(d.bookable_bytes)} bookable")

    def _add_device(self, body: QVBoxLayout, gpu: RemoteDevice, models: Iterable[RemoteModel], up: bool) -> None:
        body.addSpacing(4)
        head = QHBoxLayout()
        head.setSpacing(6)
        title = _label(f"{gpu.device} · {gpu.name}", bold=True)
        title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        cc = gpu.compute_capability
        title.setToolTip(f"{gpu.name} ({gpu.device})" + (f", compute capability {cc[0]}.{cc[1]}" if cc else ""))
        head.addWidget(title, 1)
        if gpu.lost:
            head.addWidget(_pill("lost", "#dc2626", "#ffffff", "The GPU stopped answering: its figures are unknown."))
        else:
            bg, fg = PRESSURE_LEVELS.get(gpu.pressure, ("#6b7280", "#ffffff")) if up else ("#9ca3af", "#000000")
            head.addWidget(_pill(gpu.pressure, bg, fg, f"Memory pressure: {gpu.pressure}"
                                 + ("" if up else " (as last seen)")))
        body.addLayout(head)
        bar = QProgressBar()
        bar.setRange(0, 1000)
        bar.setTextVisible(False)
        bar.setFixedHeight(6)
        bar.setValue(int(1000 * (gpu.used_bytes or 0) / gpu.total_bytes) if gpu.total_bytes else 0)
        bar.setToolTip("Share of this GPU's memory in use, by any program.")
        body.addWidget(bar)
        figures = _label(self._figures(gpu))
        figures.setToolTip("used: by every process, as the driver reports it · booked: by that node's ModelDeck, "
                           "with its runtime context · bookable: what its next model can still book")
        body.addWidget(figures)
        for m in models:
            body.addWidget(_model_line(m, gpu.device))

    def text(self) -> str:
        """Every line the card shows (tests, hosts)."""
        return "\n".join(label.text() for label in self.findChildren(QLabel))


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
        self.note = _label("Proposes only: ModelDeck loads nothing on other machines from here.")

        title = _label("Where would it fit?", bold=True, wrap=False)
        model_label, level_label = QLabel("M&odel:"), QLabel("&Level:")
        model_label.setBuddy(self.model_combo)
        level_label.setBuddy(self.level_combo)
        bar = QGridLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(model_label, 0, 0)
        bar.addWidget(self.model_combo, 0, 1, 1, 3)
        bar.addWidget(level_label, 1, 0)
        bar.addWidget(self.level_combo, 1, 1)
        bar.addWidget(self.find_button, 1, 2)
        bar.setColumnStretch(3, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(title)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.note)

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
        fits = sum(a.fits for a in self.answers)
        self._show_note(f"{fits} of {len(self.answers)} node(s) can take it. Proposes only: ModelDeck loads nothing "
                        "on other machines from here." if self._nodes else "No nodes yet: add a source above.")
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


class ClusterView(QWidget):
    """Other machines' ModelDeck nodes, from Prometheus or their exporters, and where a model would fit.

    Signals:
        sigSourcesChanged(list): the user added or removed a source (the new ``sources()``).
        sigRefreshed(): a refresh's results were applied (``last_nodes`` holds them).
    """

    sigSourcesChanged = Signal(list)
    sigRefreshed = Signal()

    #: Seconds between refreshes while the view is visible.
    refresh_interval_s: float = 15.0
    #: The width one node card needs; a narrower view stacks them.
    CARD_WIDTH = 380
    HINT = "Add a Prometheus server or an exporter to see its nodes."
    #: The least height the view asks for as a tab page (see :meth:`minimumSizeHint`).
    MIN_HEIGHT = 140

    def __init__(self, registry: Any, planner: ViewPlanner | None = None, *,
                 source_factory: Callable[[str], Any] = make_source, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._planner = planner if planner is not None else ViewPlanner(registry)
        self._factory = source_factory
        self._sources: dict[str, Any] = {}
        self._generation = 0
        self._again = False
        self._closed = False
        self._nodes: tuple[NodeSnapshot, ...] = ()
        self._errors: tuple[str, ...] = ()
        self._add_error = ""
        self._refreshed_at: float | None = None
        self._cards: list[NodeCard] = []
        self._columns = 0
        self._sized = False
        self._fetcher = _Fetcher()
        self._fetcher.relay.sigDone.connect(self._on_fetched)
        self.destroyed.connect(self._fetcher.close)  # never the view itself: it is gone by then
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)

        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("http://localhost:9090")
        self.url_edit.setAccessibleName("Prometheus or exporter URL")
        self.url_edit.setToolTip("A Prometheus server that scrapes ModelDeck exporters, or one exporter "
                                 "(…/metrics, port 9477). Enter adds it.")
        self.url_edit.setClearButtonEnabled(True)
        self.url_edit.returnPressed.connect(self.add_from_field)
        self.kind_combo = QComboBox()
        for kind, text in KINDS.items():
            self.kind_combo.addItem(text, kind)
        self.kind_combo.setAccessibleName("Source kind")
        self.kind_combo.setToolTip("Auto-detect: a URL ending in /metrics or on port 9477 is an exporter.")
        self.add_button = QPushButton("&Add")
        self.add_button.clicked.connect(self.add_from_field)
        self.source_list = QListWidget()
        self.source_list.setAccessibleName("Sources")
        self.source_list.setMaximumHeight(3 * self.fontMetrics().height() + 10)
        self.source_list.setVisible(False)
        self.remove_button = QPushButton("&Remove")
        self.remove_button.setToolTip("Stop reading the selected source (Delete in the list).")
        self.remove_button.clicked.connect(self.remove_selected)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.source_list, self.remove_selected,
                  context=Qt.ShortcutContext.WidgetShortcut)
        self.refresh_button = QPushButton("Refre&sh")
        self.refresh_button.setToolTip("Read every source now (F5); it also refreshes every "
                                       f"{self.refresh_interval_s:.0f} s while shown.")
        self.refresh_button.clicked.connect(self.refresh)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Refresh), self, self.refresh,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.status_label = _label(self.HINT)
        self.error_label = _label()
        self.error_label.setVisible(False)

        self.cards_box = QWidget()
        self._grid = QGridLayout(self.cards_box)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(6)
        self.nodes_area = QScrollArea()
        self.nodes_area.setWidgetResizable(True)
        self.nodes_area.setFrameShape(QFrame.Shape.NoFrame)
        self.nodes_area.setAccessibleName("Nodes")
        self.nodes_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.nodes_area.setWidget(self.cards_box)
        self.nodes_area.viewport().installEventFilter(self)  # cards reflow with the viewport's width
        self.fits = WhereFits(registry, self._planner)

        source_label = QLabel("Sour&ce:")
        source_label.setBuddy(self.url_edit)
        row = QHBoxLayout()
        row.addWidget(source_label)
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.kind_combo)
        row.addWidget(self.add_button)
        listed = QGridLayout()
        listed.addWidget(self.source_list, 0, 0, 3, 1)
        listed.addWidget(self.remove_button, 0, 1)
        listed.addWidget(self.refresh_button, 1, 1)
        listed.setColumnStretch(0, 1)
        listed.setRowStretch(2, 1)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(4)
        for part in (row, listed):
            part.setContentsMargins(0, 0, 0, 0)
            tl.addLayout(part)
        tl.addWidget(self.status_label)
        tl.addWidget(self.error_label)
        tl.addWidget(self.nodes_area, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.fits)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.splitter)
        self.setMinimumWidth(300)

    # --- sources ---------------------------------------------------------------------------------
    def sources(self) -> list[str]:
        """``prometheus:URL`` / ``exporter:URL``, in the order added."""
        return list(self._sources)

    def set_sources(self, specs: Iterable[str]) -> None:
        """Replace the sources (no ``sigSourcesChanged``: for restoring saved settings). A bad one is
        reported on the error line and left out."""
        problems, wanted = [], {}
        for spec in specs:
            try:
                key = parse_source(spec)
                wanted[key] = self._sources.get(key) or self._factory(key)
            except ClusterError as err:
                problems.append(str(err))
        self._sources = wanted
        self._add_error = "\n".join(problems)
        self._sources_changed(emit=False)

    def add_source(self, text: str, kind: str = "auto") -> bool:
        """Add a URL (kind "auto", "prometheus" or "exporter"); False, with the reason shown, if it is malformed."""
        try:
            key = parse_source(text, kind)
            if key not in self._sources:
                self._sources[key] = self._factory(key)
        except ClusterError as err:
            self._add_error = str(err)
            self._show_errors()
            return False
        self._add_error = ""
        self._sources_changed(emit=True)
        return True

    def add_from_field(self) -> None:
        if self.url_edit.text().strip() and self.add_source(self.url_edit.text(), self.kind_combo.currentData()):
            self.url_edit.clear()

    def remove_source(self, spec: str) -> None:
        if self._sources.pop(spec, None) is not None:
            self._sources_changed(emit=True)

    def remove_selected(self) -> None:
        item = self.source_list.currentItem()
        if item is not None:
            self.remove_source(item.data(Qt.ItemDataRole.UserRole))

    def _sources_changed(self, *, emit: bool) -> None:
        self._generation += 1
        self.source_list.clear()
        for spec in self._sources:
            kind, _, url = spec.partition(":")
            item = QListWidgetItem(f"{KIND_NAMES[kind]} · {url}")
            item.setData(Qt.ItemDataRole.UserRole, spec)
            self.source_list.addItem(item)
        self.source_list.setVisible(bool(self._sources))
        self.remove_button.setEnabled(bool(self._sources))
        if emit:
            self.sigSourcesChanged.emit(self.sources())
        if self.isVisible() or emit:
            self.refresh()
        else:
            self._refreshed_at = None  # read when next shown

    # --- refreshing ------------------------------------------------------------------------------
    @property
    def last_nodes(self) -> tuple[NodeSnapshot, ...]:
        """The nodes of the latest applied refresh."""
        return self._nodes

    def refresh(self) -> None:
        """Read every source on the worker thread (once more after the current read, if one is running)."""
        if self._closed:
            return
        if self._fetcher.busy:
            self._again = True
            return
        if not self._sources:
            self._apply(self._generation, (), ())
            return
        self.refresh_button.setEnabled(False)
        self._fetcher.start(self._generation, list(self._sources.items()))

    @Slot(int, object, object)
    def _on_fetched(self, generation: int, nodes: tuple[NodeSnapshot, ...], errors: tuple[str, ...]) -> None:
        self._fetcher.busy = False
        if self._closed:
            return
        self.refresh_button.setEnabled(True)
        if generation == self._generation:
            self._apply(generation, nodes, errors)
        if self._again or generation != self._generation:
            self._again = False
            self.refresh()

    def _apply(self, _generation: int, nodes: tuple[NodeSnapshot, ...], errors: tuple[str, ...]) -> None:
        now = time.time()
        self._nodes, self._errors, self._refreshed_at = nodes, errors, now
        for card in self._cards:
            self._grid.removeWidget(card)
            card.deleteLater()
        self._cards = [NodeCard(n, now) for n in nodes]
        self._columns = 0
        self._place_cards()
        down = sum(not n.up for n in nodes)
        status = f"Refreshed {time.strftime('%H:%M:%S', time.localtime(now))} · {len(nodes)} node(s)"
        if down:
            status += f", {down} down"
        self.status_label.setText(status if self._sources else self.HINT)
        self._show_errors()
        self.fits.set_nodes(nodes)
        self.sigRefreshed.emit()

    def _show_errors(self) -> None:
        lines = [line for line in (self._add_error, *self._errors) if line]
        self.error_label.setText("\n".join(lines))
        self.error_label.setStyleSheet(f"QLabel {{ color: {attention_color(self.palette())}; }}")
        self.error_label.setVisible(bool(lines))

    def node_cards(self) -> list[NodeCard]:
        return list(self._cards)

    def _place_cards(self) -> None:
        columns = max(1, min(len(self._cards), self.nodes_area.viewport().width() // self.CARD_WIDTH))
        if columns == self._columns:
            return
        self._columns = columns
        for card in self._cards:
            self._grid.removeWidget(card)
        for i, card in enumerate(self._cards):
            self._grid.addWidget(card, i // columns, i % columns, Qt.AlignmentFlag.AlignTop)
        for c in range(max(columns, self._grid.columnCount())):
            self._grid.setColumnStretch(c, 1 if c < columns else 0)
        self._grid.setRowStretch(self._grid.rowCount(), 1)

    # --- life ------------------------------------------------------------------------------------
    def minimumSizeHint(self) -> QSize:  # noqa: N802
        # A tab page asks no more height than the registry browser beside it, so adding this tab leaves the
        # panel's splitter where it was; in a shorter tab the nodes scroll and the where-fits table shrinks.
        hint = super().minimumSizeHint()
        return QSize(hint.width(), min(hint.height(), self.MIN_HEIGHT))

    def sizeHint(self) -> QSize:  # noqa: N802
        hint = super().sizeHint()
        return QSize(hint.width(), min(hint.height(), 2 * self.MIN_HEIGHT))

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        if self._closed:
            return
        self.fits.reload_models()  # the registry may have changed while another tab was shown
        if not self._sized:  # first show: most of the height to the nodes
            self._sized = True
            total = max(300, self.splitter.height())
            self.splitter.setSizes([total * 13 // 20, total * 7 // 20])
        stale = self._refreshed_at is None or time.time() - self._refreshed_at >= self.refresh_interval_s
        if self._sources and stale:
            self.refresh()
        self.timer.start(int(self.refresh_interval_s * 1000))

    def hideEvent(self, event: Any) -> None:  # noqa: N802
        self.timer.stop()
        super().hideEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Resize and self._cards:
            self._place_cards()
        return super().eventFilter(watched, event)

    def shutdown(self) -> None:
        """Stop the timer and the worker (waits for a read in progress); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.timer.stop()
        self._fetcher.close(wait=True)

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)
