"""ResourcePanel and ResourceDock: composed from core objects, docked in a host, closed cleanly."""

from __future__ import annotations

import gc
import threading

import pytest
from PySide6.QtCore import QEvent, Qt, QThread, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow, QTextEdit

from app.core.sampler import device_key
from app.core.units import GiB
from app.widgets.quantization_dialog import QuantizationDialog
from app.widgets.resource_dock import DOCK_OBJECT_NAME, ResourceDock
from app.widgets.resource_panel import HOST_KEY, ResourcePanel
from tests.widgets._support import make_sampler, png_of
from tests.widgets.conftest import DIFF_THRESHOLD

MINISTRAL = "mistralai/Ministral-8B-Instruct-2410"


@pytest.fixture
def panel(qtbot, sampler, registry, strategy):
    p = ResourcePanel(sampler, registry, strategy)
    qtbot.addWidget(p)
    p.resize(1200, 760)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()


def test_is_lazy_until_shown(qtbot, sampler, registry):
    p = ResourcePanel(sampler, registry)
    qtbot.addWidget(p)
    assert p.cards() == {}
    p.show()
    assert set(p.cards()) == {*(device_key(g) for g in sampler.latest.gpus), HOST_KEY}
    p.shutdown()


def test_a_new_sample_updates_cards_and_graphs(qtbot, panel, sampler, clock):
    key = device_key(sampler.latest.gpus[0])
    clock.advance(29.0)
    with qtbot.waitSignal(panel.bridge.sigSampled, timeout=2000):
        threading.Thread(target=sampler.tick).start()  # the sampler thread, as in the app
    gpu = sampler.latest.gpus[0]
    assert panel.cards()[key].texts()["used"] == f"{gpu.used_bytes / GiB:.1f} / 24.0 GiB used"
    assert panel.graphs()[key].latest_used_bytes() == pytest.approx(gpu.used_bytes)


def test_window_choice_reaches_every_graph(panel):
    panel.window_combo.setCurrentIndex(panel.window_combo.findData(3600))
    assert {g.window_s for g in panel.graphs().values()} == {3600}


def test_reserved_and_pressure_by_device_id(panel, sampler):
    panel.set_reserved("cuda:1", {"Ministral 8B": 5 * GiB})
    assert panel.graph_for_device("cuda:1").reserved == {"Ministral 8B": 5 * GiB}
    # The card shows the core's own pressure for each device, never one of its own.
    for gpu in sampler.latest.gpus:
        assert panel.cards()[device_key(gpu)].pressure == panel.planner.manager.pressure(gpu.device_id).value


def test_registry_change_in_the_core_shows_in_the_view(qtbot, panel, registry):
    from app.core.model_registry import ModelMetadata

    n = panel.browser.proxy.rowCount()
    with qtbot.waitSignal(panel.bridge.sigRegistryChanged, timeout=1000):
        registry.register_model(ModelMetadata(name="Lab", provider="other", model_type="llm", size_gb=2.0,
                                              model_id="lab/x"))
    assert panel.browser.proxy.rowCount() == n + 1


def test_load_opens_the_picker_and_ok_emits_the_request(qtbot, panel):
    panel.browser.select_model(MINISTRAL)
    panel.browser.load_button.click()
    dialog = panel.picker
    assert isinstance(dialog, QuantizationDialog) and dialog.isVisible()
    dialog.select_device("cuda:1")
    dialog.select_level("Q4_K_M")
    with qtbot.waitSignal(panel.sigPlacementChosen) as chosen, qtbot.waitSignal(panel.sigLoadRequested) as blocker:
        dialog.accept()
    model_id, level, device, context = blocker.args
    assert (model_id, level, device, context) == (MINISTRAL, "Q4_K_M", "cuda:1", 4096)
    assert chosen.args[0].placement.device == "cuda:1" and chosen.args[0].placement.level == "Q4_K_M"


def test_no_gpu_machine_says_why(qtbot, registry, clock):
    from app.core.hardware.host import HostBackend
    from app.core.hardware.snapshot import BackendStatus
    from app.core.hardware_profiler import HardwareProfiler
    from app.core.sampler import Sampler
    from app.demo import SimulatedPsutil

    class NoNvml:
        name = "nvml"

        def status(self):
            return BackendStatus("nvml", False, "NVIDIA driver not loaded (libnvidia-ml.so.1 not found)")

        def read(self):
            return []

        def close(self):
            pass

    profiler = HardwareProfiler([NoNvml()], host=HostBackend(SimulatedPsutil(clock)), clock=clock)
    sampler = Sampler(profiler, clock=clock)
    sampler.tick()
    p = ResourcePanel(sampler, registry)
    qtbot.addWidget(p)
    p.show()
    assert set(p.cards()) == {HOST_KEY}
    assert p.notice_card.title == "No GPU"
    assert p.notice_card.message() == "NVML unavailable: NVIDIA driver not loaded (libnvidia-ml.so.1 not found)"
    p.shutdown()


def test_screenshot_panel(qtbot, sampler, clock, registry, strategy, image_regression):
    p = ResourcePanel(sampler, registry, strategy)
    qtbot.addWidget(p)
    p.set_window(60)
    p.show()
    p.browser.select_model(MINISTRAL)
    # Booked half a minute ago: the band starts there, not at the left edge (bookings are history).
    p.set_reserved("cuda:1", {"Ministral 8B": int(5.34 * GiB)})
    for _ in range(30):
        clock.advance(1.0)
        sampler.tick()
    QApplication.processEvents()
    image_regression.check(png_of(p, (1200, 760)), diff_threshold=DIFF_THRESHOLD)
    p.shutdown()


def test_dock_in_a_host_window_round_trips_its_state(qtbot, sampler, registry):
    def host():
        window = QMainWindow()
        window.setObjectName("HostWindow")
        window.setCentralWidget(QTextEdit())
        dock = ResourceDock(sampler, registry, parent=window)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        qtbot.addWidget(window)
        window.resize(1400, 900)
        window.show()
        return window, dock

    window, dock = host()
    assert dock.objectName() == DOCK_OBJECT_NAME
    window.removeDockWidget(dock)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    dock.show()
    window.resizeDocks([dock], [420], Qt.Orientation.Vertical)
    QApplication.processEvents()
    state = window.saveState()
    assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.BottomDockWidgetArea
    dock.shutdown()
    window.close()

    window2, dock2 = host()
    assert window2.dockWidgetArea(dock2) == Qt.DockWidgetArea.RightDockWidgetArea
    assert window2.restoreState(state)
    assert window2.dockWidgetArea(dock2) == Qt.DockWidgetArea.BottomDockWidgetArea
    assert dock2.panel.cards()  # the panel is live in the host
    dock2.shutdown()
    window2.close()


def test_panel_state_round_trip(qtbot, panel, sampler, registry):
    panel.set_window(3600)
    panel.tabs.setCurrentIndex(2)
    state = panel.save_state()
    other = ResourcePanel(sampler, registry)
    qtbot.addWidget(other)
    other.restore_state(state)
    assert other.window_s == 3600 and other.tabs.currentIndex() == 2
    other.shutdown()


def _counts() -> tuple[int, int, int]:
    gc.collect()
    app = QApplication.instance()
    threads = len(app.findChildren(QThread))
    timers = len(app.findChildren(QTimer))
    panels = sum(1 for o in gc.get_objects() if isinstance(o, ResourcePanel))
    return threads, timers, panels


def test_building_and_closing_the_panel_100_times_leaks_nothing(qtbot, registry, clock):
    sampler = make_sampler(clock, "rtx4090,rtx3060", samples=30)
    before_listeners = (len(sampler.sampled), len(registry.registry_changed))

    def cycle():
        p = ResourcePanel(sampler, registry)
        p.resize(900, 600)
        p.show()
        QApplication.processEvents()
        p.close()
        p.deleteLater()

    for _ in range(5):
        cycle()
    QApplication.processEvents()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    start = _counts()
    python_objects = len(gc.get_objects())
    for _ in range(100):
        cycle()
    QApplication.processEvents()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    QApplication.processEvents()
    end = _counts()
    assert end[0] <= start[0] and end[1] <= start[1], (start, end)
    assert end[2] <= start[2] + 1, (start, end)
    assert len(gc.get_objects()) - python_objects < 5000
    assert (len(sampler.sampled), len(registry.registry_changed)) == before_listeners


def test_a_long_status_message_never_widens_the_panel(qtbot, panel):
    before = panel.minimumSizeHint().width()
    panel.sigStatus.emit("Could not load a model: " + "a very long reason, " * 100)
    assert panel.minimumSizeHint().width() == before
    assert panel.status_label.toolTip().startswith("Could not load a model:")  # whole, in the tooltip


def test_a_narrow_dock_stacks_the_cells_and_folds_the_browser(qtbot, sampler, registry):
    from PySide6.QtCore import Qt as _Qt

    p = ResourcePanel(sampler, registry)
    qtbot.addWidget(p)
    p.resize(1200, 760)
    p.show()
    qtbot.waitExposed(p)
    wide = [p.cells.grid.getItemPosition(p.cells.grid.indexOf(c))[:2] for c in p.cells.cells.values()]
    assert wide == [(0, 0), (0, 1), (0, 2)]  # two GPUs and RAM side by side
    assert p.minimumSizeHint().width() <= 400  # a host can dock it at about 360-400 px
    p.resize(390, 760)
    qtbot.waitUntil(lambda: p.cells.columns == 1)
    narrow = [p.cells.grid.getItemPosition(p.cells.grid.indexOf(c))[:2] for c in p.cells.cells.values()]
    assert narrow == [(0, 0), (1, 0), (2, 0)]
    assert p.browser.splitter.orientation() == _Qt.Orientation.Vertical  # the detail under the table
    assert p.browser._bar.getItemPosition(p.browser._bar.indexOf(p.browser.type_combo))[0] == 1  # second row
    p.resize(1200, 760)
    qtbot.waitUntil(lambda: p.cells.columns == 3)
    p.shutdown()
