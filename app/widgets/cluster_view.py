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
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.cluster import (
    ClusterError,
    ExporterSource,
    NodeSnapshot,
    PrometheusSource,
    unique_nodes,
)
from app.widgets.node_card import NodeCard, attention_color, plain_label
from app.widgets.planning import ViewPlanner
from app.widgets.where_fits_view import WhereFits

__all__ = ["ClusterView", "detect_kind", "make_source", "parse_source"]

#: The kind chooser's entries, and how a source is listed.
KINDS = {"auto": "Auto", "prometheus": "Prometheus", "exporter": "Exporter"}
KIND_NAMES = {"prometheus": "Prometheus server", "exporter": "Exporter"}
#: ``modeldeck exporter``'s default port: a URL on it is an exporter, not a Prometheus server.
EXPORTER_PORT = 9477

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
    return unique_nodes(nodes), tuple(errors)


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


class ClusterView(QWidget):
    """Other machines' ModelDeck nodes, from Prometheus or their exporters, and where a model would fit.

    Signals:
        sigSourcesChanged(list): the user added or removed a source (the new ``sources()``).
        sigRefreshed(): a refresh's results were applied (``last_nodes`` holds them).
    """

    #: The keys this view answers to (Help › Keyboard shortcuts lists them).
    KEYS: tuple[tuple[str, str], ...] = (
        ('Delete', 'Cluster: stop reading the selected source'),
    )

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
        self.source_list.setVisible(False)
        self.remove_button = QPushButton("Remove")  # Delete in the list; Alt+R is the Processes tab
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
        self.status_label = plain_label(self.HINT)
        self.error_label = plain_label()
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
        # One line per source (up to three, then it scrolls), the buttons beside it: room for the nodes.
        listed = QHBoxLayout()
        for button in (self.remove_button, self.refresh_button):
            button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        listed.addWidget(self.source_list, 1, Qt.AlignmentFlag.AlignTop)
        listed.addStretch(0)
        listed.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignTop)
        listed.addWidget(self.refresh_button, 0, Qt.AlignmentFlag.AlignTop)
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
        rows = min(3, max(1, len(self._sources)))
        self.source_list.setFixedHeight(rows * self.source_list.sizeHintForRow(0) + 2 * self.source_list.frameWidth()
                                        if self._sources else 0)
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

    def shutdown(self, *, wait: bool = False) -> None:
        """Stop the timer and the worker; safe to call twice. A read in progress is abandoned (each
        read ends within its source's time limit), and waited for only when ``wait``: never on the
        GUI thread of a window that is closing."""
        if self._closed:
            return
        self._closed = True
        self.timer.stop()
        self._fetcher.close(wait=wait)

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)
