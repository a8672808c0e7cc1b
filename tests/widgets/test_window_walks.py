"""The main window tried as a user would: a long message, 800×600, quitting with models loaded,
the shortcuts in Help, and the history window kept between starts."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from app.shell import MainWindow
from app.widgets.shortcuts_dialog import collect_shortcuts, mnemonic_of

LLM = "mistralai/Ministral-8B-Instruct-2410"
SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.fixture
def settings_file(tmp_path):
    """A settings file of this test's own (Qt fixes the user's settings folder once per process)."""
    path = str(tmp_path / "ModelDeck.conf")
    return lambda: QSettings(path, QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, sampler, registry, manager, settings_file):
    w = MainWindow(sampler, registry, manager=manager, settings=settings_file())
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.set_confirm("quit", False, save=False)
    w.close()


def test_a_long_message_never_widens_the_window_and_its_start_shows(qtbot, window):
    bar = window.statusBar()
    assert bar.isVisible()  # there from the start: the first message does not shift the layout
    before_bar = bar.geometry()
    before = (window.width(), window.minimumSizeHint().width())
    message = "Could not register scanned models: " + "/usr/lib/firmware/some/very/long/path.bin is not a model; " * 40
    window.panel.sigStatus.emit(message)
    QApplication.processEvents()
    assert (window.width(), window.minimumSizeHint().width()) == before
    assert bar.geometry() == before_bar
    shown = window.panel.status_label.elided()
    assert shown.startswith("Could not register") and shown.endswith("…")
    assert window.panel.status_label.toolTip() == " ".join(message.split())  # whole, in the tooltip
    assert bar.currentMessage().startswith("Could not register")


@pytest.mark.parametrize("spec", ["rtx3060", "2xrtx4090", "3xrtx4090"])
def test_the_window_fits_800_by_600_with_every_device(qtbot, clock, registry, spec):
    from tests.widgets._support import make_sampler

    sampler = make_sampler(clock, spec, samples=10)
    w = MainWindow(sampler, registry)
    qtbot.addWidget(w)
    w.resize(800, 600)
    w.show()
    qtbot.waitExposed(w)
    assert w.minimumSizeHint().height() <= 600 and w.minimumSizeHint().width() <= 800
    assert (w.width(), w.height()) == (800, 600)
    # Every device has its card: those that do not fit the height scroll into view.
    gpus = int(spec[0]) if spec[0].isdigit() else 1
    assert len(w.panel.cards()) == gpus + 1  # and RAM
    scroll = w.panel.cells
    assert scroll.height() >= scroll.MIN_HEIGHT
    for card in w.panel.cards().values():
        for label in card.findChildren(QLabel):
            if label.isVisible() and label.text() and not label.wordWrap():
                need = label.fontMetrics().horizontalAdvance(label.text())
                assert need <= label.contentsRect().width() + 1, f"clipped at 800×600: {label.text()!r}"
    w.panel.shutdown()


def test_quitting_with_models_loaded_asks_and_cancel_keeps_them(qtbot, window, manager):
    manager.load(LLM, "Q4_K_M", "cuda:0")
    manager.load(SD, "fp16", "cuda:0")
    manager.pin(SD)
    window.close()
    assert window.isVisible()
    box = window.quit_box
    assert box is not None
    assert "2 model(s) are loaded" in box.text()
    assert "Ministral 8B" in box.informativeText() and "pinned" in box.informativeText()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)  # Enter does not unload
    box.button(QMessageBox.StandardButton.Cancel).click()
    qtbot.waitUntil(lambda: window.quit_box is None)
    assert window.isVisible() and len(manager.loaded_models()) == 2
    window.close()
    quit_button = next(b for b in window.quit_box.buttons() if b.text() == "&Quit and unload")
    quit_button.click()
    qtbot.waitUntil(lambda: not window.isVisible())


def test_quitting_with_nothing_loaded_does_not_ask(qtbot, window):
    window.close()
    assert window.quit_box is None and not window.isVisible()


def test_dont_ask_again_is_kept(qtbot, window, manager, sampler, registry, settings_file):
    manager.load(LLM, "Q4_K_M", "cuda:0")
    window.close()
    window.quit_box.checkBox().setChecked(True)
    next(b for b in window.quit_box.buttons() if b.text() == "&Quit and unload").click()
    qtbot.waitUntil(lambda: not window.isVisible())
    again = MainWindow(sampler, registry, manager=manager, settings=settings_file())
    qtbot.addWidget(again)
    assert again.confirm["quit"] is False
    again.close()


def test_help_lists_the_shortcuts_and_every_alt_key_is_unique(qtbot, window):
    rows = collect_shortcuts(window)
    keys = dict(rows)
    assert keys["Ctrl+Q"] == "File › Quit" and keys["F1"] == "Help › Keyboard shortcuts"
    assert keys["Alt+M"] == "Models tab" and keys["Alt+Y"] == "Go to History"
    # The keys that act inside a view are listed too, from the views themselves.
    assert ("Delete", "Loaded: evict the selected models (several: asks first)") in rows
    assert ("Ctrl+Z", "Loaded: undo the last offload") in rows and keys["Ctrl+F"] == "Models: go to the search box"
    for tab in range(window.panel.tabs.count()):  # whatever tab is open, one press of Alt+letter is one thing
        window.panel.tabs.setCurrentIndex(tab)
        QApplication.processEvents()
        alt = [key for key, _ in collect_shortcuts(window) if key.startswith("Alt+")]
        assert len(alt) == len(set(alt)), sorted(k for k in alt if alt.count(k) > 1)
    dialog = window.show_shortcuts()
    shown = [(dialog.table.item(r, 0).text(), dialog.table.item(r, 1).text()) for r in range(dialog.table.rowCount())]
    assert shown == collect_shortcuts(window)
    dialog.close()


def test_mnemonic_of_reads_qt_ampersands():
    assert mnemonic_of("Loa&ded") == "D"
    assert mnemonic_of("Save && quit") is None
    assert mnemonic_of("&&Fish && &chips") == "C"


def test_the_history_window_is_kept_as_soon_as_it_is_chosen(qtbot, window, sampler, registry, settings_file):
    window.panel.set_window(3600)
    assert int(settings_file().value("panel/window_s")) == 3600  # no need to close first
    again = MainWindow(sampler, registry, settings=settings_file())
    qtbot.addWidget(again)
    assert again.panel.window_s == 3600
    again.panel.shutdown()


def test_focus_comes_back_to_the_table_when_the_picker_closes(qtbot, window):
    table = window.panel.browser.view
    window.activateWindow()
    table.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is table)
    picker = window.panel.open_picker(LLM)
    qtbot.waitUntil(lambda: picker.isVisible())
    picker.reject()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is table)


def test_focus_comes_back_after_the_shortcuts_dialog(qtbot, window):
    combo = window.panel.window_combo
    window.activateWindow()
    combo.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is combo)
    window.show_shortcuts().reject()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is combo)


def test_settings_apply_to_the_running_window_and_are_kept(qtbot, window, manager, sampler, registry, settings_file):
    dialog = window.open_settings()
    assert set(dialog.confirm_boxes) == {"moves", "bulk", "quit"}
    assert all(box.isChecked() for box in dialog.confirm_boxes.values())
    dialog.edits["keep_alive_s"].setText("-1")
    dialog.confirm_boxes["bulk"].setChecked(False)
    dialog.accept()
    assert manager.settings.keep_alive_s == -1
    assert window.confirm["bulk"] is False and window.panel.loaded_view.confirm_bulk is False
    assert window.panel.loads.confirm_moves is True
    again = MainWindow(sampler, registry, manager=manager, settings=settings_file())
    qtbot.addWidget(again)
    assert again.confirm == {"moves": True, "bulk": False, "quit": True}
    assert again.panel.loaded_view.confirm_bulk is False
    again.panel.shutdown()


def test_the_processes_tab_lists_what_each_sample_carries(qtbot, window, sampler):
    tabs = window.panel.tabs
    assert tabs.tabText(tabs.indexOf(window.panel.processes)) == "P&rocesses"
    tabs.setCurrentWidget(window.panel.processes)
    sampler.tick()
    profile = sampler.latest
    expected = sum(len(g.processes) for g in profile.gpus)
    qtbot.waitUntil(lambda: len(window.panel.processes.rows()) == expected)
