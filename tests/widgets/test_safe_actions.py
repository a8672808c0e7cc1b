"""The Loaded tab never frees what the user did not name without saying so first.

An action on several rows (Ctrl+A included) asks in one dialog, names what it frees per device and
the pinned models it leaves alone; pinned models are never touched; an offload offers Undo. The
keyboard works (mnemonics, Tab out, Enter, Delete), the table re-reads the manager once per burst of
events, a model placed on the CPU is flagged, and the tab fits a 340 px dock.
"""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from app.core.model_resource_manager import ModelState
from app.core.units import format_gib
from app.widgets.bridge import CoreBridge
from app.widgets.loaded_actions import plan_bulk
from app.widgets.loaded_models_table import CPU_AMBER, LoadedModelsTable
from app.widgets.quit_guard import held_summary

LLM = "mistralai/Ministral-8B-Instruct-2410"
SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TTS = "hexgrad/Kokoro-82M"
SMALL = "meta-llama/Llama-3.2-1B-Instruct"


@pytest.fixture
def table(qtbot, manager):
    bridge = CoreBridge(manager=manager)
    view = LoadedModelsTable(manager, bridge)
    qtbot.addWidget(view)
    view.resize(720, 300)
    view.show()
    yield view
    bridge.close()


@pytest.fixture
def three(qtbot, manager, table):
    """Ministral on cuda:0, SD 1.5 pinned on cuda:0, Kokoro on cuda:1, all loaded."""
    manager.load(LLM, "Q4_K_M", "cuda:0")
    manager.load(SD, "fp16", "cuda:0", pin=True)
    manager.load(TTS, "fp16", "cuda:1")
    qtbot.waitUntil(lambda: table.model.rowCount() == 3)
    return table


def states(manager):
    return {m.model_id: m.state for m in manager.loaded_models()}


def booked(manager, model_id):
    return {d: b.bytes for d in manager.devices() for b in manager.bookings(d) if b.model_id == model_id}


def select_all(table):
    table.view.setFocus()
    QTest.keyClick(table.view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert len(table.selected_ids()) == table.model.rowCount()


def go_button(box: QMessageBox) -> QPushButton:
    return next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.DestructiveRole)


def test_pinned_models_are_left_alone_by_allowed_actions(manager, three):
    """What the user reported (Ctrl+A, Evict: the pinned model gone) is not what the manager allows."""
    assert not {"unload", "offload"} & manager.allowed_actions(SD)
    plan = plan_bulk(manager, manager.loaded_models(), "unload")
    assert [m.model_id for m in plan.targets] == [LLM, TTS]
    assert [m.model_id for m, why in plan.skipped if "pinned" in why] == [SD]


def test_ctrl_a_evict_asks_first_and_never_touches_the_pinned_model(qtbot, manager, three):
    before = states(manager)
    select_all(three)
    three.evict_button.click()
    box = three.confirm_box
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert states(manager) == before  # nothing happened yet
    text = box.informativeText()
    for name, mid in (("Ministral 8B Instruct 2410", LLM), ("Kokoro 82M", TTS)):
        ((device, nbytes),) = booked(manager, mid).items()
        assert f"• {name}: {format_gib(nbytes, 2)} on {device}" in text
    freed = {**booked(manager, LLM), **booked(manager, TTS)}
    assert f"Frees: cuda:0 {format_gib(freed['cuda:0'], 2)} · cuda:1 {format_gib(freed['cuda:1'], 2)}" in text
    left = text.split("Left as they are:")[1]
    assert "Stable Diffusion 1.5: pinned" in left and "Ministral" not in left
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)  # a stray Enter does nothing
    go_button(box).click()
    assert states(manager) == {SD: ModelState.LOADED}
    assert manager.loaded_models()[0].pinned
    assert "Left alone: Stable Diffusion 1.5" in three.notice.label.text()


def test_cancel_in_the_question_changes_nothing(qtbot, manager, three):
    before = [(m.model_id, m.state, m.device) for m in manager.loaded_models()]
    select_all(three)
    QTest.keyClick(three.view, Qt.Key.Key_Delete)  # Delete is Evict, with the same question
    box = three.confirm_box
    assert box is not None and box.isVisible()
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert [(m.model_id, m.state, m.device) for m in manager.loaded_models()] == before


def test_bulk_offload_asks_then_undo_restores_every_model_it_moved(qtbot, manager, three):
    select_all(three)
    three.offload_button.click()
    box = three.confirm_box
    assert box.windowTitle() == "Offload 2 models?" and "moved to system RAM" in box.text()
    go_button(box).click()
    assert states(manager) == {LLM: ModelState.OFFLOADED, SD: ModelState.LOADED, TTS: ModelState.OFFLOADED}
    assert three.notice.can_undo
    assert three.notice.label.text().startswith("Offloaded Ministral 8B Instruct 2410, Kokoro 82M to RAM (frees")
    three.notice.undo_button.click()
    assert states(manager) == {LLM: ModelState.LOADED, SD: ModelState.LOADED, TTS: ModelState.LOADED}
    assert not three.notice.can_undo


def test_a_single_named_evict_needs_no_question(qtbot, manager, three):
    three.view.selectRow(0)
    three.evict_button.click()
    assert three.confirm_box is None and manager.state_of(LLM) == ModelState.UNLOADED
    assert "Evicted Ministral 8B Instruct 2410 (frees" in three.notice.label.text()
    assert not three.notice.can_undo  # reloading from disk is no cheap undo


def test_a_single_offload_offers_undo_and_ctrl_z_does_it(qtbot, manager, three):
    three.view.selectRow(2)
    three.offload_button.click()
    assert manager.state_of(TTS) == ModelState.OFFLOADED and three.notice.can_undo
    assert "Restore Kokoro 82M" in three.notice.undo_button.toolTip()
    three.activateWindow()
    three.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is three.view)
    QTest.keyClick(three.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert manager.state_of(TTS) == ModelState.LOADED


def test_undo_is_withdrawn_once_the_model_was_restored_elsewhere(qtbot, manager, three):
    three.view.selectRow(0)
    three.offload_button.click()
    assert three.notice.can_undo
    manager.restore(LLM)
    qtbot.waitUntil(lambda: not three.notice.can_undo)


def test_without_the_question_bulk_still_skips_pinned_and_says_so(qtbot, manager, three):
    three.confirm_bulk = False
    messages: list[str] = []
    three.sigMessage.connect(messages.append)
    select_all(three)
    three.evict_button.click()
    assert three.confirm_box is None
    assert states(manager) == {SD: ModelState.LOADED}
    assert any(m.startswith("Did not evict Stable Diffusion 1.5: pinned") for m in messages)


def test_dont_ask_again_turns_the_question_off(qtbot, manager, three):
    select_all(three)
    three.offload_button.click()
    box = three.confirm_box
    box.checkBox().setChecked(True)
    with qtbot.waitSignal(three.sigConfirmBulkChanged) as changed:
        go_button(box).click()
    assert changed.args == [False] and three.confirm_bulk is False


# --- keyboard ---------------------------------------------------------------------------------------
#: Alt letters the panel around the tab already uses (its tabs, History, the browser's buttons, the menus).
TAKEN = set("MDEUYACLFVH")


def test_buttons_have_unique_mnemonics_clear_of_the_panel(qtbot, manager, three):
    letters = []
    for text in ("Ev&ict", "Stop load&ing", "Offload &to CPU", "Restore to &GPU", "&Pin", "Un&pin"):
        letters.append(re.search("&(.)", text).group(1).upper())
    buttons = (three.evict_button, three.offload_button, three.restore_button, three.pin_button)
    mine = [re.search("&(.)", b.text()).group(1).upper() for b in buttons]
    assert len(set(mine)) == len(mine) and not set(letters) & TAKEN
    three.view.selectRow(2)
    three.activateWindow()
    three.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is three.view)
    QTest.keyClick(three.view, Qt.Key.Key_T, Qt.KeyboardModifier.AltModifier)  # Alt+T: Offload to CPU
    qtbot.waitUntil(lambda: manager.state_of(TTS) == ModelState.OFFLOADED)  # a mnemonic clicks after a flash


def test_tab_leaves_the_table(qtbot, three):
    three.activateWindow()
    three.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is three.view)
    three.view.selectRow(0)
    QTest.keyClick(three.view, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not three.view
    assert not three.view.tabKeyNavigation()


def test_enter_restores_an_offloaded_model_and_never_unloads_a_loaded_one(qtbot, manager, three):
    manager.offload(TTS)
    three.refresh()
    three.view.setFocus()
    three.view.setCurrentIndex(three.model.index(2, 0))
    QTest.keyClick(three.view, Qt.Key.Key_Return)
    assert manager.state_of(TTS) == ModelState.LOADED
    three.view.setCurrentIndex(three.model.index(0, 0))
    QTest.keyClick(three.view, Qt.Key.Key_Return)
    assert states(manager) == {LLM: ModelState.LOADED, SD: ModelState.LOADED, TTS: ModelState.LOADED}
    assert three.notice.label.text().startswith("Ministral 8B Instruct 2410: loaded, Q4_K_M on cuda:0, booked")


def test_delete_on_one_row_evicts_it(qtbot, manager, three):
    three.activateWindow()
    three.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is three.view)
    three.view.selectRow(2)
    QTest.keyClick(three.view, Qt.Key.Key_Delete)
    assert manager.state_of(TTS) == ModelState.UNLOADED and three.confirm_box is None


# --- one refresh per change -----------------------------------------------------------------------------
def test_one_load_rereads_once_and_never_resets_the_model(qtbot, manager, table):
    """Measured before the change: four model resets per load (a state change and a booking per device)."""
    resets, reads = [], []
    table.model.modelReset.connect(lambda: resets.append(1))
    real = manager.loaded_models
    manager.loaded_models = lambda: reads.append(1) or real()
    table.view.selectRow(0)
    manager.load(LLM, "Q4_K_M", "cuda:0")  # its events queue up for the GUI thread
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    QApplication.processEvents()
    assert len(resets) <= 1 and len(reads) == 1
    table.view.selectRow(0)
    manager.load(TTS, "fp16", "cuda:1")
    qtbot.waitUntil(lambda: table.model.rowCount() == 2)
    assert resets == [] and table.selected_ids() == [LLM]  # the selection survives a row added
    manager.unload(LLM)
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    assert resets == [] and table.model.row(0).model_id == TTS


# --- a model placed on the CPU ------------------------------------------------------------------------------
def test_a_model_placed_on_the_cpu_is_flagged(qtbot, manager, table):
    decision = manager.plan(SMALL, device="cpu")
    manager.load(SMALL, placement=decision)
    qtbot.waitUntil(lambda: table.model.rowCount() == 1)
    cell = table.model.index(0, 1)
    assert table.model.data(cell) == "cpu (in RAM: slower)"
    assert table.model.data(cell, Qt.ItemDataRole.BackgroundRole) == CPU_AMBER
    assert "much slower than on a GPU" in table.model.data(cell, Qt.ItemDataRole.ToolTipRole)
    manager.load(TTS, "fp16", "cuda:1")
    manager.offload(TTS)  # offloaded is not "placed on the CPU": its state says so already
    qtbot.waitUntil(lambda: table.model.rowCount() == 2)
    tts = table.model.index(1, 1)
    assert table.model.data(tts) == "cpu" and table.model.data(tts, Qt.ItemDataRole.BackgroundRole) is None


# --- narrow docks, and quitting --------------------------------------------------------------------------------
def test_the_tab_fits_a_340_px_dock_with_every_button_whole(qtbot, manager, three):
    assert three.minimumSizeHint().width() <= 340
    three.resize(340, 320)
    QApplication.processEvents()
    for b in (three.evict_button, three.offload_button, three.restore_button, three.pin_button):
        assert b.isVisible() and b.width() >= b.sizeHint().width()
        assert b.mapTo(three, b.rect().bottomRight()).x() <= three.width()
    assert three.evict_button.y() != three.restore_button.y()  # two rows
    three.resize(900, 320)
    QApplication.processEvents()
    assert three.evict_button.y() == three.pin_button.y()  # one row when there is room


def test_held_summary_tells_a_host_what_quitting_ends(manager, three):
    text = held_summary(manager)
    assert text.startswith("3 models held by ModelDeck (1 pinned): Ministral 8B Instruct 2410")
    assert "Booked: cuda:0" in text and "cuda:1" in text
    for mid in (LLM, TTS):
        manager.unload(mid)
    manager.pin(SD, False)
    manager.unload(SD)
    assert held_summary(manager) == ""
