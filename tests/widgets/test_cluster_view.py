"""ClusterView: sources, node cards (up and down), where-fits, and reading off the GUI thread.

The sources here are fakes (any object with ``fetch()``); tests/monitoring/test_cluster_view_live.py
reads a real Prometheus.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel

from app.core.cluster import ClusterError, NodeSnapshot, RemoteDevice, RemoteModel
from app.core.units import GiB
from app.widgets.cluster_view import ClusterView, detect_kind, parse_source
from app.widgets.planning import ViewPlanner
from app.widgets.where_fits_view import DOWN, FITS, NO_FIT, PARTIAL
from tests.widgets._support import png_of

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
MINISTRAL = "mistralai/Ministral-8B-Instruct-2410"
PROM = "prometheus:http://prom:9090"
PROM_B = "prometheus:http://prom-b:9090"
EXPORTER = "exporter:http://lab-d:9477/metrics"


def gpu(device: str, name: str, total: float, used: float, booked: float, bookable: float,
        pressure: str = "ok") -> RemoteDevice:
    return RemoteDevice(device, name, int(total * GiB), int(used * GiB), int(booked * GiB), int(bookable * GiB),
                        int(0.4 * GiB), int(0.5 * GiB), pressure, (8, 9))


def ram(total: float, used: float, bookable: float) -> RemoteDevice:
    return RemoteDevice("cpu", "System RAM", int(total * GiB), int(used * GiB), 0, int(bookable * GiB), 0,
                        int(2 * GiB), "ok")


def model(model_id: str, name: str, level: str, device: str, gib: float, *, pinned: bool = False,
          kind: str = "llm") -> RemoteModel:
    booked = ((device, "weights", int(gib * 0.9 * GiB)), (device, "kv_cache", int(gib * 0.1 * GiB)))
    return RemoteModel(model_id, name, kind, level, device, "gpu" if device != "cpu" else "cpu", "loaded", pinned,
                       booked, idle_s=30.0)


def lab_nodes(now: float) -> tuple[NodeSnapshot, ...]:
    """An A100 80GB with nothing on it, a 2×4090 with a pinned 8B, a 12 GB 3060 with Ministral, and a node down."""
    big = NodeSnapshot("lab-c", "10.0.0.3:9477", "http://prom:9090", True, now - 1,
                       (gpu("cuda:0", "NVIDIA A100-SXM4-80GB", 80, 1.2, 0.4, 77.5), ram(256, 40, 180)),
                       version="0.9.0")
    pair = NodeSnapshot("lab-a", "10.0.0.1:9477", "http://prom:9090", True, now - 1,
                        (gpu("cuda:0", "NVIDIA GeForce RTX 4090", 24, 6.2, 5.8, 16.3),
                         gpu("cuda:1", "NVIDIA GeForce RTX 4090", 24, 0.6, 0, 22.9), ram(64, 20, 8)),
                        (model(LLAMA_8B, "Llama 3.1 8B Instruct", "Q4_K_M", "cuda:0", 5.4, pinned=True),
                         model("openai/whisper-small", "Whisper Small", "fp16", "cpu", 1.0, kind="speech_to_text")))
    small = NodeSnapshot("lab-b", "10.0.0.2:9477", "http://prom:9090", True, now - 1,
                         (gpu("cuda:0", "NVIDIA GeForce RTX 3060", 12, 6.1, 5.9, 5.1, "elevated"), ram(16, 9, 3)),
                         (model(MINISTRAL, "Ministral 8B Instruct 2410", "Q4_K_M", "cuda:0", 5.5),))
    down = NodeSnapshot("lab-z", "10.0.0.9:9477", "http://prom:9090", False, now - 40,
                        (gpu("cuda:0", "NVIDIA GeForce RTX 4090", 24, 11.5, 9.0, 12.0), ram(64, 20, 30)),
                        (model(LLAMA_8B, "Llama 3.1 8B Instruct", "Q8_0", "cuda:0", 8.6),),
                        error="the last scrape failed")
    return big, pair, small, down


class FakeSource:
    """A source as the view sees one: ``fetch()`` returns nodes or raises; it notes the thread it ran on."""

    def __init__(self, nodes: tuple[NodeSnapshot, ...] = (), error: BaseException | None = None,
                 gate: threading.Event | None = None) -> None:
        self.nodes = nodes
        self.error = error
        self.gate = gate
        self.threads: list[threading.Thread] = []

    def fetch(self) -> tuple[NodeSnapshot, ...]:
        self.threads.append(threading.current_thread())
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.nodes


@pytest.fixture
def fakes() -> dict[str, FakeSource]:
    return {PROM: FakeSource(lab_nodes(time.time()))}


@pytest.fixture
def view(qtbot, registry, fakes):
    v = ClusterView(registry, ViewPlanner(registry), source_factory=lambda spec: fakes.setdefault(spec, FakeSource()))
    qtbot.addWidget(v)
    v.resize(900, 700)
    v.show()
    qtbot.waitExposed(v)
    yield v
    v.shutdown(wait=True)


def _add(qtbot, view: ClusterView, spec: str) -> None:
    with qtbot.waitSignal(view.sigRefreshed, timeout=5000):
        assert view.add_source(spec)


def _card(view: ClusterView, node: str):
    return next(c for c in view.node_cards() if c.node.node == node)


# --- sources ---------------------------------------------------------------------------------------
def test_kinds_are_detected_from_the_url():
    assert detect_kind("http://gpu-box:9477") == "exporter"
    assert detect_kind("http://gpu-box:8000/metrics") == "exporter"
    assert detect_kind("http://localhost:9090") == "prometheus"
    assert parse_source("http://localhost:9090/") == "prometheus:http://localhost:9090"
    assert parse_source("http://gpu-box:9477") == "exporter:http://gpu-box:9477/metrics"
    assert parse_source("http://gpu-box:8000", "exporter") == "exporter:http://gpu-box:8000/metrics"
    assert parse_source("prometheus:http://gpu-box:9477") == "prometheus:http://gpu-box:9477"  # the prefix wins
    with pytest.raises(ClusterError, match="not an http"):
        parse_source("localhost:9090")


def test_adding_and_removing_sources_emits_sources_changed(qtbot, view):
    with qtbot.waitSignal(view.sigSourcesChanged) as added:
        qtbot.keyClicks(view.url_edit, "http://prom:9090")
        qtbot.keyClick(view.url_edit, Qt.Key.Key_Return)  # Enter in the field adds
    assert added.args == [[PROM]] and view.sources() == [PROM] and view.url_edit.text() == ""
    view.kind_combo.setCurrentIndex(view.kind_combo.findData("exporter"))
    with qtbot.waitSignal(view.sigSourcesChanged) as second:
        view.url_edit.setText("http://lab-d:9477")
        qtbot.mouseClick(view.add_button, Qt.MouseButton.LeftButton)
    assert second.args == [[PROM, EXPORTER]]
    assert [view.source_list.item(i).text() for i in range(view.source_list.count())] == [
        "Prometheus server · http://prom:9090", "Exporter · http://lab-d:9477/metrics"]
    view.source_list.setCurrentRow(0)
    with qtbot.waitSignal(view.sigSourcesChanged) as removed:
        qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    assert removed.args == [[EXPORTER]] and view.sources() == [EXPORTER]
    # Restoring saved sources is not a user's change: no signal.
    seen: list[list[str]] = []
    view.sigSourcesChanged.connect(seen.append)
    view.set_sources([PROM, "http://lab-d:9477"])
    assert view.sources() == [PROM, EXPORTER] and seen == []


def test_a_bad_url_shows_the_reason_on_one_line_and_is_not_added(qtbot, view):
    seen: list[list[str]] = []
    view.sigSourcesChanged.connect(seen.append)
    view.url_edit.setText("localhost:9090")
    qtbot.keyClick(view.url_edit, Qt.Key.Key_Return)
    assert view.sources() == [] and seen == []
    assert view.error_label.isVisible()
    text = view.error_label.text()
    assert "'localhost:9090' is not an http(s) URL" in text and "http://localhost:9090" in text
    assert "Traceback" not in text and len(text.splitlines()) == 1
    assert view.url_edit.text() == "localhost:9090"  # left for the user to correct


def test_an_unreadable_source_gets_one_error_line_and_the_others_still_show(qtbot, view, fakes):
    fakes[PROM_B] = FakeSource(error=ClusterError("cannot reach http://prom-b:9090: [Errno 111] Connection refused; "
                                                  "is it running, and is the URL right?"))
    fakes[EXPORTER] = FakeSource(error=RuntimeError("a reader's bug"))
    view.set_sources([PROM, PROM_B, EXPORTER])
    with qtbot.waitSignal(view.sigRefreshed, timeout=5000):
        view.refresh()
    lines = view.error_label.text().splitlines()
    assert lines == ["cannot reach http://prom-b:9090: [Errno 111] Connection refused; is it running, and is the "
                     "URL right?", "http://lab-d:9477/metrics: RuntimeError: a reader's bug"]
    assert view.error_label.isVisible() and "Traceback" not in view.error_label.text()
    assert {c.node.node for c in view.node_cards()} == {"lab-a", "lab-b", "lab-c", "lab-z"}
    assert re.fullmatch(r"Refreshed \d\d:\d\d:\d\d · 4 node\(s\), 1 down", view.status_label.text())


# --- nodes -----------------------------------------------------------------------------------------
def test_nodes_render_with_their_gpus_and_models(qtbot, view):
    _add(qtbot, view, PROM)
    assert [n.node for n in view.last_nodes] == ["lab-a", "lab-b", "lab-c", "lab-z"]  # by name, each once
    a = _card(view, "lab-a")
    assert a.header.text() == "lab-a · 10.0.0.1:9477 · up"
    lines = a.text().splitlines()
    assert "cuda:0 · NVIDIA GeForce RTX 4090" in lines and "cuda:1 · NVIDIA GeForce RTX 4090" in lines
    assert "6.2 / 24.0 GiB used · 5.8 GiB booked · 16.3 GiB bookable" in lines
    assert "0.6 / 24.0 GiB used · 0.0 GiB booked · 22.9 GiB bookable" in lines
    assert "Llama 3.1 8B Instruct · Q4_K_M · loaded · 5.4 GiB · pinned" in lines
    # The CPU-placed model is listed under the node's RAM, not under a GPU.
    ram_at = lines.index("RAM")
    assert lines[ram_at + 1] == "20.0 / 64.0 GiB used · 0.0 GiB booked · 8.0 GiB bookable"
    assert lines.index("Whisper Small · fp16 · loaded · 1.0 GiB") > ram_at
    b = _card(view, "lab-b")
    assert "Ministral 8B Instruct 2410 · Q4_K_M · loaded · 5.5 GiB" in b.text().splitlines()
    pills = [label.text() for label in b.findChildren(QLabel) if "border-radius" in label.styleSheet()]
    assert pills == ["elevated"]
    assert "77.5 GiB bookable" in _card(view, "lab-c").text() and a.body.isEnabled()


def test_a_down_node_says_when_it_was_last_seen_and_keeps_its_last_figures(qtbot, view):
    _add(qtbot, view, PROM)
    z = _card(view, "lab-z")
    match = re.fullmatch(r"lab-z · 10\.0\.0\.9:9477 · DOWN — last seen (\d\d:\d\d:\d\d) \((\d+) s ago\)",
                         z.header.text())
    assert match, z.header.text()
    assert match.group(1) == time.strftime("%H:%M:%S", time.localtime(z.node.last_seen))
    assert 39 <= int(match.group(2)) <= 45
    assert "color" in z.header.styleSheet()  # in the attention colour
    lines = z.text().splitlines()
    assert "the last scrape failed; figures below are as last seen" in lines
    assert "11.5 / 24.0 GiB used · 9.0 GiB booked · 12.0 GiB bookable" in lines  # not zero
    assert "Llama 3.1 8B Instruct · Q8_0 · loaded · 8.6 GiB" in lines
    assert not z.body.isEnabled()  # greyed: last known, not live


def test_a_node_never_seen_says_so(qtbot, view, fakes):
    never = NodeSnapshot("10.0.0.7:9477", "10.0.0.7:9477", "http://10.0.0.7:9477/metrics", False, None,
                         error="cannot reach http://10.0.0.7:9477: timed out")
    fakes[EXPORTER] = FakeSource((never,))
    _add(qtbot, view, EXPORTER)
    card = view.node_cards()[0]
    assert card.header.text() == "10.0.0.7:9477 · DOWN — never seen"
    assert "cannot reach http://10.0.0.7:9477: timed out" in card.text()
    assert "No figures: this node was never read." in card.text()


# --- where would it fit ------------------------------------------------------------------------------
def test_where_fits_ranks_the_80_gb_node_first_and_the_12_gb_node_does_not_fit(qtbot, view):
    _add(qtbot, view, PROM)
    answers = view.fits.ask(LLAMA_70B, "Q4_K_M")
    rows = view.fits.rows()
    assert [a.node.node for a in answers] == [r[0] for r in rows]
    assert rows[0][:3] == ("lab-c", FITS, "Q4_K_M on cuda:0")
    by_node = {r[0]: r for r in rows}
    assert by_node["lab-b"][1] == NO_FIT and "Q4_K_M" in by_node["lab-b"][2]
    assert rows[-1][0] == "lab-z" and rows[-1][1] == DOWN
    assert view.fits.table.item(0, 1).toolTip().startswith("lab-c (10.0.0.3:9477): Q4_K_M on cuda:0")
    assert "loads nothing on other machines" in view.fits.note.text()


def test_a_node_that_holds_it_only_partly_in_ram_is_not_a_plain_fit(qtbot, view, fakes):
    now = time.time()
    roomy = NodeSnapshot("lab-r", "10.0.0.5:9477", "http://prom-b:9090", True, now - 1,
                         (gpu("cuda:0", "NVIDIA GeForce RTX 4090", 24, 0.6, 0, 22.9), ram(512, 20, 480)))
    fakes[PROM_B] = FakeSource((roomy,))
    _add(qtbot, view, PROM_B)
    view.fits.ask(LLAMA_70B, "Q4_K_M")
    (row,) = view.fits.rows()
    assert row[:2] == ("lab-r", PARTIAL) and "partly" in row[3]
    assert view.fits.note.text().startswith("0 of 1 node(s) can hold it on GPUs")


def test_where_fits_from_the_choosers_with_the_planners_level_names(qtbot, view):
    _add(qtbot, view, PROM)
    view.fits.model_combo.setEditText("Llama 3.1 70B Instruct")  # by name, as the completer offers it
    levels = [view.fits.level_combo.itemText(i) for i in range(view.fits.level_combo.count())]
    assert levels[0] == "Best" and "Q4_K_M" in levels and "IQ2_M" in levels
    view.fits.level_combo.setCurrentIndex(view.fits.level_combo.findData("Q4_K_M"))
    qtbot.mouseClick(view.fits.find_button, Qt.MouseButton.LeftButton)
    assert view.fits.rows()[0][:2] == ("lab-c", FITS)
    # The question is asked again on each refresh's figures.
    before = view.fits.answers
    with qtbot.waitSignal(view.sigRefreshed, timeout=5000):
        view.refresh()
    assert view.fits.answers is not before and view.fits.rows()[0][0] == "lab-c"
    view.fits.model_combo.setEditText("no such model")
    qtbot.mouseClick(view.fits.find_button, Qt.MouseButton.LeftButton)
    assert view.fits.note.text().startswith("Unknown model 'no such model'")


# --- threads and timers ----------------------------------------------------------------------------
def test_the_fetch_runs_off_the_gui_thread(qtbot, view, fakes):
    _add(qtbot, view, PROM)
    assert fakes[PROM].threads and all(t is not threading.main_thread() for t in fakes[PROM].threads)
    assert QApplication.instance().thread().isCurrentThread()  # and the results were applied on this one


def test_a_refresh_asked_while_reading_reads_again_and_stale_results_are_dropped(qtbot, view, fakes):
    gate = threading.Event()
    fakes[PROM] = FakeSource(lab_nodes(time.time()), gate=gate)
    assert view.add_source(PROM)  # the read is held at the gate: the GUI is not
    qtbot.wait(50)
    assert view._fetcher.busy and view.last_nodes == ()
    view.remove_source(PROM)  # the held read's nodes are now stale
    with qtbot.waitSignal(view.sigRefreshed, timeout=5000):
        gate.set()
    assert view.last_nodes == () and view.node_cards() == []


def test_results_arriving_after_the_view_is_gone_are_ignored(qtbot, registry):
    gate = threading.Event()
    source = FakeSource(lab_nodes(time.time()), gate=gate)
    v = ClusterView(registry, source_factory=lambda spec: source)
    v.show()
    assert v.add_source(PROM)
    qtbot.waitUntil(lambda: bool(source.threads))
    pool = v._fetcher._pool
    v.deleteLater()  # gone without shutdown(): the read is still held
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    gate.set()
    pool.shutdown(wait=True)  # the worker emitted into nothing
    QApplication.processEvents()


def test_the_timer_refreshes_only_while_visible(qtbot, view):
    view.refresh_interval_s = 0.05
    view.hide()
    assert not view.timer.isActive()
    view.show()
    assert view.timer.isActive() and view.timer.interval() == 50
    _add(qtbot, view, PROM)
    with qtbot.waitSignal(view.sigRefreshed, timeout=2000):
        pass  # the timer's next refresh
    view.hide()
    assert not view.timer.isActive()
    view.show()
    assert view.timer.isActive()
    view.shutdown()  # stops it, and it stays stopped
    assert not view.timer.isActive()
    view.hide()
    view.show()
    assert not view.timer.isActive()


# --- the panel, and legibility ---------------------------------------------------------------------
def _mnemonics(root) -> list[str]:
    found = []
    widgets = [w for w in root.findChildren(QAbstractButton) if w.isVisible()]
    labels = [w for w in root.findChildren(QLabel) if w.isVisible() and w.buddy() is not None]
    for w in widgets + labels:
        m = re.search(r"&(\w)", w.text().replace("&&", ""))
        if m:
            found.append(m.group(1).lower())
    return found


def test_the_panel_has_a_cluster_tab_whose_mnemonics_clash_with_nothing(qtbot, sampler, registry):
    from app.shell import MainWindow

    window = MainWindow(sampler, registry)
    qtbot.addWidget(window)
    window.resize(1100, 800)
    window.show()
    panel = window.panel
    tabs = [panel.tabs.tabText(i) for i in range(panel.tabs.count())]
    assert tabs[panel.tabs.indexOf(panel.cluster)] == "Cl&uster"
    menus = [a.text() for a in window.menuBar().actions()]
    ours = {"u"}  # the tab's, active on every tab
    for i in range(panel.tabs.count()):
        panel.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        keys = [re.search(r"&(\w)", t).group(1).lower() for t in menus + tabs] + _mnemonics(panel.tabs.currentWidget())
        keys += _mnemonics(panel.splitter.widget(0))
        if panel.tabs.currentWidget() is panel.cluster:
            ours |= set(_mnemonics(panel.cluster))
            assert ours == {"u", "c", "a", "s", "o", "l", "n"}  # Remove: Delete in the list (Alt+R: Processes)
        assert [k for k in keys if k in ours and keys.count(k) > 1] == [], (tabs[i], sorted(keys))
    panel.shutdown()


def test_usable_in_a_narrow_dock(qtbot, view):
    _add(qtbot, view, PROM)
    assert view.minimumSizeHint().width() <= 384
    view.resize(384, 700)
    qtbot.waitUntil(lambda: view._columns == 1)
    qtbot.waitUntil(lambda: all(c.width() <= view.nodes_area.viewport().width() <= 384 for c in view.node_cards()))
    assert len({c.x() for c in view.node_cards()}) == 1  # stacked
    view.resize(900, 700)
    qtbot.waitUntil(lambda: view._columns == 2)


def test_render_at_900_by_700(qtbot, view, tmp_path):
    _add(qtbot, view, PROM)
    view.fits.ask(LLAMA_70B, "Q4_K_M")
    png = png_of(view, (900, 700))
    (tmp_path / "cluster.png").write_bytes(png)
    narrow = png_of(view, (384, 700))
    (tmp_path / "cluster_narrow.png").write_bytes(narrow)
    assert png.startswith(b"\x89PNG") and narrow.startswith(b"\x89PNG")
