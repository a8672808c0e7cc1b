"""The Models tab manages the user's models: add, edit, delete, override a built-in and revert, scan
with a preview; the keyboard works in the table; the picker shows every level."""

from __future__ import annotations

import json
import re

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from app.core.quantization_strategy import candidate_levels, estimate_model
from app.widgets.registry_table_model import RegistryTableModel
from tests.core.test_importers import write_llama_gguf
from tests.core.test_scan_junk import usr_like
from tests.widgets import test_registry_browser
from tests.widgets._support import png_of

LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"
browser = test_registry_browser.browser  # the same fixture: a browser on the simulated machine


@pytest.fixture
def answer_yes(monkeypatch):
    """Every confirmation is answered Yes; the questions asked are kept."""
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def _saved(registry) -> dict[str, dict]:
    return {m.get("model_id") or m["huggingface_id"]: m for m in json.loads(registry._store.path.read_text())["models"]}


def _fill(dialog, name: str, model_id: str, billions: float) -> None:
    dialog.name_edit.setText(name)
    dialog.id_edit.setText(model_id)
    dialog.params_spin.setValue(billions)


def test_an_existing_builtin_id_is_refused_then_saved_as_a_copy(qtbot, browser, registry):
    builtin = registry.get_model(LLAMA8)
    before = estimate_model(builtin, "bf16", context=4096).total_bytes
    dialog = browser.open_add_dialog()
    _fill(dialog, "My 8B", LLAMA8, 1.2)
    dialog.accept()
    assert dialog.isVisible() and "built-in model" in dialog.error_for("model_id")
    assert dialog.copy_button.isVisibleTo(dialog) and dialog.override_button.isVisibleTo(dialog)
    assert dialog.id_edit.text() == LLAMA8 and dialog.name_edit.text() == "My 8B"  # what was typed stays
    assert registry.get_model(LLAMA8) is builtin
    dialog.save_as_copy()
    assert not dialog.isVisible()
    copy = registry.get_model(f"{LLAMA8}-copy")
    assert copy is not None and copy.name == "My 8B" and f"{LLAMA8}-copy" in _saved(registry)
    assert registry.get_model(LLAMA8) is builtin
    assert estimate_model(registry.get_model(LLAMA8), "bf16", context=4096).total_bytes == before


def test_an_override_is_shown_as_such_and_deleting_it_restores_the_builtin(qtbot, browser, registry, answer_yes):
    builtin = registry.get_model(LLAMA8)
    before = estimate_model(builtin, "bf16", context=4096).total_bytes
    dialog = browser.open_add_dialog()
    _fill(dialog, "My 8B", LLAMA8, 1.2)
    dialog.accept()
    dialog.save_as_override()
    assert not dialog.isVisible() and registry.is_override(LLAMA8)
    browser.reload()
    assert browser.select_model(LLAMA8)
    assert "user override of a built-in" in browser.detail_text.toPlainText()
    row = browser.table_model.row_of(LLAMA8)
    assert "override" in browser.table_model.index(row, RegistryTableModel.NAME).data()
    assert browser.delete_button.isEnabled()
    browser.delete_button.click()
    assert "built-in entry comes back" in answer_yes[0]
    assert registry.get_model(LLAMA8) is builtin and LLAMA8 not in _saved(registry)
    assert estimate_model(registry.get_model(LLAMA8), "bf16", context=4096).total_bytes == before
    browser.reload()
    browser.select_model(LLAMA8)
    assert not browser.delete_button.isEnabled() and not browser.edit_button.isEnabled()


def test_a_bad_id_and_no_size_are_named_beside_their_fields(qtbot, browser, registry):
    dialog = browser.open_add_dialog()
    _fill(dialog, "Junk", "has spaces/and/../slashes!!", 0)
    dialog.accept()
    assert "not a Hugging Face id" in dialog.error_for("model_id") and dialog.error_for("parameters") == ""
    dialog.id_edit.setText("me/junk")
    dialog.accept()
    assert dialog.error_for("model_id") == "" and "parameter count" in dialog.error_for("parameters")
    assert dialog.isVisible() and registry.get_model("me/junk") is None


def test_an_llm_without_architecture_is_warned_and_its_missing_kv_cache_said(qtbot, browser, registry):
    dialog = browser.open_add_dialog()
    _fill(dialog, "Bare", "me/bare", 7.0)
    assert dialog.kv_hint.isVisibleTo(dialog) and "KV cache" in dialog.kv_hint.text()
    dialog.accept()
    browser.reload()
    assert browser.select_model("me/bare")
    text = browser.detail_text.toPlainText()
    assert "KV cache NOT estimated" in text and "Edit" in text


def test_the_architecture_is_read_from_a_gguf_file(qtbot, browser, registry, tmp_path):
    gguf = write_llama_gguf(tmp_path / "tiny.gguf")
    dialog = browser.open_add_dialog()
    dialog.name_edit.setText("Tiny")
    assert dialog.read_file(str(gguf))
    assert dialog.arch_spins["layers"].value() == 1 and dialog.arch_spins["kv_heads"].value() == 2
    assert dialog.parameters() == 366_848 and not dialog.kv_hint.isVisibleTo(dialog)
    assert dialog.id_edit.text() == str(gguf)  # a GGUF's path is a valid id
    dialog.accept()
    meta = registry.get_model(str(gguf))
    assert meta is not None and meta.architecture.layers == 1
    assert estimate_model(meta, "bf16", context=4096).kv_cache_bytes > 0
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    dialog = browser.open_add_dialog()
    assert not dialog.read_file(str(junk)) and "config.json" in dialog.error_for("architecture")


def test_config_json_fills_the_architecture_without_a_parameter_count(qtbot, browser, registry, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 512,
                                  "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
                                  "intermediate_size": 1024, "max_position_embeddings": 4096}))
    dialog = browser.open_add_dialog()
    _fill(dialog, "From config", "me/from-config", 0)
    assert dialog.read_file(str(config))
    assert dialog.arch_spins["hidden_size"].value() == 512 and dialog.params_spin.value() > 0
    dialog.accept()
    meta = registry.get_model("me/from-config")
    assert meta.architecture.intermediate_size == 1024  # what the file said beyond the form's fields is kept


def test_edit_and_delete_round_trip_through_the_user_file(qtbot, browser, registry, answer_yes):
    dialog = browser.open_add_dialog()
    _fill(dialog, "Lab", "lab/model", 3.0)
    dialog.accept()
    assert _saved(registry)["lab/model"]["name"] == "Lab"
    browser.reload()
    browser.select_model("lab/model")
    assert browser.edit_button.isEnabled()
    browser.edit_button.click()
    edit = next(w for w in QApplication.topLevelWidgets() if w.isVisible() and w.windowTitle() == "Edit Lab")
    assert edit.id_edit.text() == "lab/model" and edit.params_spin.value() == 3.0
    edit.name_edit.setText("Lab v2")
    edit.id_edit.setText("lab/model-v2")
    edit.params_spin.setValue(4.0)
    edit.accept()
    saved = _saved(registry)
    assert "lab/model" not in saved and saved["lab/model-v2"]["name"] == "Lab v2"
    assert saved["lab/model-v2"]["parameters"] == 4_000_000_000
    assert browser.delete_model("lab/model-v2")
    assert "Lab v2" in answer_yes[-1] and "lab/model-v2" in answer_yes[-1]
    assert "lab/model-v2" not in _saved(registry) and registry.get_model("lab/model-v2") is None


def test_delete_asks_and_cancel_keeps_the_model(qtbot, browser, registry, monkeypatch):
    dialog = browser.open_add_dialog()
    _fill(dialog, "Kept", "me/kept", 1.0)
    dialog.accept()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Cancel)
    assert not browser.delete_model("me/kept")
    assert "me/kept" in _saved(registry)
    assert browser.open_edit_dialog(LLAMA8) is None and not browser.delete_model(LLAMA8)  # built-ins stay


def test_scan_shows_a_preview_and_registers_only_what_is_confirmed(qtbot, browser, registry, tmp_path):
    gguf = usr_like(tmp_path / "usr")
    browser.start_scan(str(tmp_path / "usr"))
    qtbot.waitUntil(lambda: browser._scan is None and browser.scan_preview is not None, timeout=10_000)
    preview = browser.scan_preview
    assert registry.user_models() == []
    assert [m.path for m in preview.models] == [str(gguf)]  # junk never offered
    assert preview.skipped.rowCount() == 5 and "not a model" in preview.skipped.item(0, 1).text()
    level = preview.table.item(0, 2).text()
    assert level == preview.models[0].file_type
    preview.set_checked(0, False)
    assert not preview.register_button.isEnabled()
    preview.set_checked(0, True)
    preview.accept()
    (meta,) = registry.user_models()
    assert meta.path == str(gguf) and candidate_levels(meta) == (level,)  # planned at its own level only


def test_scan_preview_cancelled_registers_nothing(qtbot, browser, registry, tmp_path):
    usr_like(tmp_path / "usr")
    browser.start_scan(str(tmp_path / "usr"))
    qtbot.waitUntil(lambda: browser._scan is None and browser.scan_preview is not None, timeout=10_000)
    browser.scan_preview.reject()
    assert registry.user_models() == []


def test_keyboard_tab_leaves_the_table_and_enter_asks_to_load(qtbot, browser):
    browser.show()
    browser.activateWindow()
    qtbot.waitUntil(browser.isActiveWindow)
    browser.select_model("mistralai/Ministral-8B-Instruct-2410")
    browser.view.setFocus()
    assert browser.view.hasFocus()
    with qtbot.waitSignal(browser.sigLoadRequested) as asked:
        qtbot.keyClick(browser.view, Qt.Key.Key_Return)
    assert asked.args == ["mistralai/Ministral-8B-Instruct-2410"]
    qtbot.keyClick(browser.view, Qt.Key.Key_Tab)
    assert not browser.view.hasFocus() and QApplication.focusWidget() is not None
    assert browser.selected_model_id() == "mistralai/Ministral-8B-Instruct-2410"  # Tab did not move the row


def test_button_mnemonics_are_unique_and_clear_of_the_panels(browser):
    panel = set("MDEUYFVH")  # tab and menu mnemonics; C is Scan's own
    letters = {}
    for button in browser.findChildren(QPushButton):
        match = re.search(r"&(\w)", button.text())
        if match:
            letters.setdefault(match.group(1).upper(), []).append(button.text())
    assert all(len(texts) == 1 for texts in letters.values()), letters
    assert {"I", "T"} <= set(letters) and not (set(letters) - {"C"}) & panel


def test_the_picker_shows_every_level_and_column_at_its_default_size(qtbot, registry, sampler, strategy):
    from app.widgets.quantization_dialog import QuantizationDialog

    dialog = QuantizationDialog(registry.get_model("mistralai/Ministral-8B-Instruct-2410"), sampler.latest, strategy)
    qtbot.addWidget(dialog)
    dialog.show()
    QApplication.processEvents()
    assert dialog.width() <= 1280 and dialog.height() <= 760  # a 1280x800 screen, less a title bar
    table = dialog.table
    assert table.rowCount() >= 14
    bottom = table.visualRect(table.model().index(table.rowCount() - 1, 0)).bottom()
    assert bottom <= table.viewport().height()  # every level visible
    assert table.horizontalScrollBar().maximum() == 0  # no column clipped
    last = table.columnCount() - 1
    assert table.horizontalHeaderItem(last).text() == "Quality"
    assert table.columnViewportPosition(last) + table.columnWidth(last) <= table.viewport().width()


def test_render_the_dialogs_for_a_person(qtbot, browser, registry, tmp_path):
    """Not a comparison: the add form (with a conflict) and the scan preview rendered at their own
    sizes, within a 1280x800 screen, and written where a reviewer can look at them."""
    out = tmp_path / "renders"
    out.mkdir()
    dialog = browser.open_add_dialog()
    _fill(dialog, "My 8B", LLAMA8, 1.2)
    dialog.accept()
    QApplication.processEvents()
    size = dialog.size()
    assert size.width() <= 1280 and size.height() <= 760
    (out / "add_conflict.png").write_bytes(png_of(dialog, (size.width(), size.height())))
    usr_like(tmp_path / "usr")
    browser.start_scan(str(tmp_path / "usr"))
    qtbot.waitUntil(lambda: browser._scan is None and browser.scan_preview is not None, timeout=10_000)
    preview = browser.scan_preview
    (out / "scan_preview.png").write_bytes(png_of(preview, (900, 480)))
    assert (out / "scan_preview.png").stat().st_size > 0
