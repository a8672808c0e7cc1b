"""The dashboard with the keyboard only: find a model, load it, see it in the Loaded tab, evict it, quit.

Every step is a key press sent to whatever has focus, as a user's keyboard would; the test never
clicks, and never sets focus itself after the first line.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QTableView

from app.core.model_resource_manager import ManagerSettings, ModelResourceManager, ModelState
from app.shell import MainWindow

LLM = "mistralai/Ministral-8B-Instruct-2410"


@pytest.fixture
def window(qtbot, sampler, registry, clock, tmp_path):
    manager = ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock,
                                   settings=ManagerSettings(keep_alive_s=300))
    w = MainWindow(sampler, registry, manager=manager,
                   settings=QSettings(str(tmp_path / "ModelDeck.conf"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(1100, 760)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    yield w, manager
    w.set_confirm("quit", False, save=False)
    w.close()


def press(key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    target = QApplication.focusWidget() or QApplication.activeWindow()
    assert target is not None, "nothing has the keyboard focus"
    QTest.keyClick(target, key, modifier)
    QApplication.processEvents()


def type_text(text: str) -> None:
    target = QApplication.focusWidget()
    assert target is not None
    QTest.keyClicks(target, text)
    QApplication.processEvents()


def tab_until(predicate, most: int = 25) -> int:
    """Press Tab until ``predicate(focus widget)``; how many presses it took (fails after ``most``)."""
    for n in range(1, most + 1):
        press(Qt.Key.Key_Tab)
        if predicate(QApplication.focusWidget()):
            return n
    raise AssertionError(f"Tab never reached it in {most} presses; focus is on {QApplication.focusWidget()!r}")


def test_a_row_reached_with_tab_loads_with_enter(qtbot, window):
    w, _ = window
    browser = w.panel.browser
    press(Qt.Key.Key_M, Qt.KeyboardModifier.AltModifier)
    tab_until(lambda f: f is browser.search_edit)
    type_text("Ministral 8B")
    qtbot.waitUntil(lambda: browser.visible_model_ids()[:1] == [LLM])
    tab_until(lambda f: f is browser.view)  # the current row is not selected yet
    with qtbot.waitSignal(browser.sigLoadRequested) as asked:
        press(Qt.Key.Key_Return)
    assert asked.args == [LLM] and browser.selected_model_id() == LLM


def test_find_load_evict_and_quit_with_the_keyboard_only(qtbot, window):
    w, manager = window
    panel = w.panel
    press(Qt.Key.Key_M, Qt.KeyboardModifier.AltModifier)  # Alt+M: the Models tab
    assert panel.tabs.currentWidget() is panel.browser
    tab_until(lambda f: f is panel.browser.search_edit)
    type_text("Ministral 8B")
    qtbot.waitUntil(lambda: panel.browser.visible_model_ids()[:1] == [LLM])
    press(Qt.Key.Key_Return)  # Enter in the search box: on to the results, the first one selected
    assert QApplication.focusWidget() is panel.browser.view
    qtbot.waitUntil(lambda: panel.browser.selected_model_id() == LLM)
    press(Qt.Key.Key_Return)  # Enter on a row: the load picker
    qtbot.waitUntil(lambda: panel.picker is not None and panel.picker.isVisible())
    picker = panel.picker
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None and QApplication.focusWidget().window() is picker)
    press(Qt.Key.Key_Return)  # Enter in the picker: load at the level it proposes
    qtbot.waitUntil(lambda: manager.state_of(LLM) == ModelState.LOADED, timeout=10_000)
    # Focus is back in the main window, where it was.
    qtbot.waitUntil(lambda: QApplication.focusWidget() is panel.browser.view)

    press(Qt.Key.Key_D, Qt.KeyboardModifier.AltModifier)  # Alt+D: the Loaded tab
    loaded = panel.loaded_view
    assert panel.tabs.currentWidget() is loaded
    tab_until(lambda f: f is loaded.view)
    qtbot.waitUntil(lambda: loaded.selected_ids() == [LLM])  # the row Tab reached is the one selected
    press(Qt.Key.Key_Delete)  # evicts the one model named
    qtbot.waitUntil(lambda: manager.state_of(LLM) == ModelState.UNLOADED)
    # Tab leaves the table again (it is not a trap).
    tab_until(lambda f: f is not loaded.view and not isinstance(f, QTableView), most=3)

    press(Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)  # nothing is loaded: quits without a question
    qtbot.waitUntil(lambda: not w.isVisible())
