"""LoadedModelsTable and EventLog against a real manager on simulated hardware; and the panel
with a manager (Loaded/Events tabs, reserved bands, fit judged against the ledger, load via the picker)."""

from __future__ import annotations

import asyncio

import pytest

from app.core.model_resource_manager import ModelState
from app.widgets.bridge import CoreBridge
from app.widgets.event_log import EventLog
from app.widgets.loaded_models_table import COLUMNS, LoadedModelsTable, format_countdown
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD

LLM = "mistralai/Ministral-8B-Instruct-2410"
SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TTS = "hexgrad/Kokoro-82M"


@pytest.fixture
def views(qtbot, manager, clock):
    bridge = CoreBridge(manager=manager)
    table = LoadedModelsTable(manager, bridge)
    log = EventLog(bridge, clock=clock)
    table.sigMessage.connect(log.append)
    for w in (table, log):
        qtbot.addWidget(w)
    table.resize(720, 260)
    table.show()
    yield bridge, table, log
    bridge.close()


def cells(table, row):
    return [table.model.data(table.model.index(row, c)) for c in range(len(COLUMNS))]


def test_what_the_runtime_allocated_shows_beside_what_was_booked(qtbot, manager, views):
    """A loader that measures (llama.cpp's) reports its buffers: the ledger books them and the tab says so."""
    from app.core.manager.loaders import ReservationLoader
    from app.core.units import MiB

    class Measuring(ReservationLoader):
        def measured(self, handle):
            return {"cuda:0": {"weights": 4400 * MiB, "kv_cache": 512 * MiB, "output": 1 * MiB, "compute": 300 * MiB}}

    manager.loader = Measuring()
    _, table, _ = views
    manager.load(LLM, "Q4_K_M", "cuda:0")
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    row = cells(table, 0)
    assert row[4] == "5.09 GiB" and row[3] == "5.09 GiB"  # booked is now what was allocated
    tip = table.model.data(table.model.index(0, 4), 0x03)  # ToolTipRole
    assert "cuda:0 weights: 4.30 GiB" in tip and "cuda:0 kv_cache: 0.50 GiB" in tip
    # the graph's band for it is labelled as measured
    (band,) = [b for b in manager.bookings("cuda:0") if b.model_id == LLM]
    assert band.label == "Ministral 8B Instruct 2410 (measured)" and band.bytes == 5213 * 2**20


def test_a_load_in_progress_can_be_cancelled_from_the_loaded_tab(qtbot, manager, views):
    import threading

    from app.core.manager.errors import LoaderError
    from app.core.manager.loaders import ReservationLoader

    class Slow(ReservationLoader):
        """Loads until released; cancel() stops it, as llama.cpp's progress callback does."""

        def __init__(self):
            self.started, self.stop = threading.Event(), threading.Event()
            self.cancelled = []

        def load(self, metadata, placement):
            self.started.set()
            self.stop.wait(10)
            if self.cancelled:
                raise LoaderError(f"{metadata.id}: loading was cancelled")

        def cancel(self, model_id):
            self.cancelled.append(model_id)
            self.stop.set()

    loader = Slow()
    manager.loader = loader
    _, table, _ = views
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            manager.load(LLM, "Q4_K_M", "cuda:0")
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - checked below
            outcome.append(err)

    worker = threading.Thread(target=load)
    worker.start()
    assert loader.started.wait(5)
    table.refresh()
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    table.view.selectRow(0)
    assert table.evict_button.text() == "Stop load&ing" and table.evict_button.isEnabled()
    from PySide6.QtCore import Qt

    qtbot.mouseClick(table.evict_button, Qt.MouseButton.LeftButton)
    worker.join(5)
    assert loader.cancelled == [LLM] and not worker.is_alive()
    assert isinstance(outcome[0], LoaderError) and "cancelled" in str(outcome[0])
    assert manager.reservations() == () and manager.state_of(LLM).value == "failed"
    table.refresh()
    table.view.selectRow(0)
    assert table.evict_button.text() == "Ev&ict"  # a failed load is evicted, not cancelled
    with pytest.raises(Exception, match="only a load in progress can be cancelled"):
        manager.cancel_load(LLM)


def test_rows_follow_the_manager(qtbot, manager, views):
    _, table, _ = views
    manager.load(LLM, "Q4_K_M", "cuda:0")
    manager.load(SD, "fp16", "cuda:0", pin=True)
    qtbot.waitUntil(lambda: table.model.rowCount() == 2)
    rows = {cells(table, r)[0]: cells(table, r) for r in range(2)}
    llm = rows["Ministral 8B Instruct 2410"]
    assert llm[1:3] == ["cuda:0", "Q4_K_M"] and llm[3].endswith("GiB") and llm[5] == "loaded"
    assert llm[4] == "–"  # booked only: no runtime reported what it allocated
    assert llm[6] == "5:00"
    assert rows["Stable Diffusion 1.5"][6] == "pinned"
    assert "cuda:0: booked" in table.summary.text()
    manager.unload(LLM)
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)


def test_evict_offload_restore_and_pin_buttons_act_on_the_core(qtbot, manager, views):
    _, table, log = views
    manager.load(LLM, "Q4_K_M", "cuda:0")
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    table.view.selectRow(0)
    assert table.offload_button.isEnabled() and not table.restore_button.isEnabled()
    table.offload_button.click()
    assert manager.state_of(LLM) == ModelState.OFFLOADED
    table.view.selectRow(0)
    assert table.restore_button.isEnabled()
    table.restore_button.click()
    assert manager.state_of(LLM) == ModelState.LOADED
    table.view.selectRow(0)
    table.pin_button.click()
    assert manager.loaded_models()[0].pinned and table.pin_button.text() == "Un&pin"
    table.pin_button.click()
    assert not manager.loaded_models()[0].pinned
    table.view.selectRow(0)
    table.evict_button.click()
    assert manager.state_of(LLM) == ModelState.UNLOADED
    qtbot.waitUntil(lambda: any("Evicted" in line for line in log.lines()))
    qtbot.waitUntil(lambda: any("is unloaded" in line for line in log.lines()))


def test_refusals_are_shown_not_raised(qtbot, manager, views):
    _, table, _ = views
    manager.load(LLM, "Q4_K_M", "cuda:0")
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    manager.begin_use(LLM)  # busy: cannot be evicted
    table.refresh()
    table.view.selectRow(0)
    assert not table.evict_button.isEnabled()
    messages = []
    table.sigMessage.connect(messages.append)
    table.evict_selected()  # even when called directly, the refusal is a message
    assert messages and "busy" in messages[-1]
    manager.end_use(LLM)


def test_automatic_evictions_appear_with_their_reason(qtbot, manager, views, clock):
    _, _, log = views
    manager.load(TTS, "fp16", "cuda:1", keep_alive_s=0)
    clock.advance(1.0)
    manager.tick()
    qtbot.waitUntil(lambda: any("keep-alive" in line for line in log.lines()))


def test_countdown_format():
    assert format_countdown(160.0, 100.0, ModelState.LOADED, False) == "1:00"
    assert format_countdown(None, 0.0, ModelState.LOADED, False) == "never"
    assert format_countdown(10_000.0, 0.0, ModelState.LOADED, False) == "2 h 46 min"
    assert format_countdown(50.0, 0.0, ModelState.BUSY, False) == "-"


def test_screenshot_loaded_models(qtbot, manager, views, image_regression):
    _, table, _ = views
    manager.load(LLM, "Q4_K_M", "cuda:0")
    manager.load(SD, "fp16", "cuda:0", pin=True)
    manager.load(TTS, "fp16", "cuda:1")
    manager.offload(TTS)
    qtbot.waitUntil(lambda: table.model.rowCount() == 3)
    table.view.selectRow(0)
    image_regression.check(png_of(table, (720, 260)), diff_threshold=DIFF_THRESHOLD)


def test_panel_with_a_manager(qtbot, sampler, registry, manager):
    from app.widgets.resource_panel import ResourcePanel

    panel = ResourcePanel(sampler, registry, manager=manager)
    qtbot.addWidget(panel)
    panel.resize(1200, 760)
    panel.show()
    qtbot.waitExposed(panel)
    assert panel.tabs.widget(1) is panel.loaded_view and panel.tabs.widget(2) is panel.event_log
    before = panel.browser.table_model
    manager.load(LLM, "Q4_K_M", "cuda:0")
    graph = panel.graph_for_device("cuda:0")
    qtbot.waitUntil(lambda: "Ministral 8B Instruct 2410" in graph.reserved)
    # Fit is judged against the manager's own ledger: what it booked is no longer bookable.
    room = next(r for r in panel.planner.rooms() if r.device == "cuda:0")
    assert panel.planner.manager is manager and room.available_bytes == manager.available_bytes("cuda:0")
    ledger = next(x for x in manager.ledgers() if x.device == "cuda:0")
    assert ledger.reserved_bytes == manager.loaded_models()[0].reserved_bytes + ledger.runtime_bytes
    assert before is panel.browser.table_model
    manager.unload(LLM)
    qtbot.waitUntil(lambda: graph.reserved == {})
    panel.close()


def test_picker_ok_loads_through_the_manager_on_the_event_loop(qtbot, sampler, registry, manager):
    from app.widgets.resource_panel import ResourcePanel

    panel = ResourcePanel(sampler, registry, manager=manager)
    qtbot.addWidget(panel)

    decision = manager.plan(LLM, "Q4_K_M", "cuda:0", context=8192)

    async def pick_and_wait() -> None:
        panel.load_decision(decision)
        while panel.loads.pending:
            await asyncio.sleep(0.01)

    asyncio.run(pick_and_wait())
    assert manager.state_of(LLM) == ModelState.LOADED
    loaded = manager.loaded_models()[0]
    assert loaded.quantization == "Q4_K_M" and loaded.placement == decision.placement  # the very plan shown
    panel.close()

