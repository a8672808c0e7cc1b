"""RegistryBrowser: the table follows the registry; search and filters narrow it; add and scan."""

from __future__ import annotations

import json
import struct

import pytest
from PySide6.QtCore import Qt

from app.core.model_registry import ModelMetadata, ModelType
from app.widgets.registry_browser import RegistryBrowser
from app.widgets.registry_table_model import RegistryTableModel
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD


@pytest.fixture
def browser(qtbot, registry, sampler, strategy):
    b = RegistryBrowser(registry, strategy)
    qtbot.addWidget(b)
    b.set_profile(sampler.latest)
    b.resize(900, 420)
    return b


def _col(browser, row, col):
    return browser.proxy.index(row, col).data()


def test_rows_and_fit_columns_come_from_the_planner(browser, registry, sampler, strategy):
    from app.core.manager.placement import PlacementRequest

    assert browser.proxy.rowCount() == len(registry.list_models())
    model = browser.table_model
    row = model.row_of("mistralai/Ministral-8B-Instruct-2410")
    meta = model.metadata_at(row)
    # The core's planner, asked directly: as things are, nothing else touched, the CPU an answer too.
    answer = model.planner.manager.decide(PlacementRequest(meta, make_room=False, allow_cpu=True))
    idx = lambda c: model.index(row, c)  # noqa: E731
    assert idx(RegistryTableModel.LEVEL).data() == answer.placement.level
    assert idx(RegistryTableModel.FIT).data() == "fits" and answer.placement.kind == "gpu"
    assert idx(RegistryTableModel.SIZE).data() == f"{answer.placement.estimate.total_bytes / (1 << 30):.1f} GiB"
    assert idx(RegistryTableModel.FIT).data(Qt.ItemDataRole.ToolTipRole) == answer.reason
    # The planner keeps the strategy's margin free: the level fits the room left after it.
    room = next(r for r in model.planner.rooms() if r.device == answer.placement.device)
    assert room.margin_bytes == strategy.gpu_headroom_bytes
    assert answer.placement.estimate.total_bytes <= room.available_bytes


def test_choosing_a_device_replans(browser):
    model = browser.table_model
    row = model.row_of("mistralai/Ministral-8B-Instruct-2410")
    on_4090 = model.index(row, RegistryTableModel.SIZE).data()
    i = browser.device_combo.findData("cuda:1")
    browser.device_combo.setCurrentIndex(i)
    assert model.device == "cuda:1"
    assert model.plan_for(row).device.startswith("cuda:1")
    assert model.index(row, RegistryTableModel.SIZE).data() != on_4090  # a 12 GiB card picks a smaller level


def test_search_narrows_rows(browser):
    browser.search_edit.setText("whisper")
    ids = browser.visible_model_ids()
    assert ids and all("whisper" in i.lower() for i in ids)
    browser.search_edit.setText("")
    assert len(browser.visible_model_ids()) > len(ids)


def test_type_and_provider_filters(browser, registry):
    browser.type_combo.setCurrentIndex(browser.type_combo.findData(ModelType.TEXT_TO_IMAGE.value))
    rows = browser.visible_model_ids()
    assert rows and all(registry.get_model(i).model_type == ModelType.TEXT_TO_IMAGE for i in rows)
    browser.type_combo.setCurrentIndex(0)
    browser.provider_combo.setCurrentIndex(browser.provider_combo.findData("qwen"))
    rows = browser.visible_model_ids()
    assert rows and all(registry.get_model(i).provider_name == "qwen" for i in rows)


def test_registering_in_the_core_adds_a_row(qtbot, browser, registry):
    n = browser.proxy.rowCount()
    registry.register_model(ModelMetadata(name="Lab model", provider="other", model_type="llm", size_gb=3.0,
                                          model_id="lab/model"))
    browser.reload()  # the panel does this on the bridge's sigRegistryChanged
    assert browser.proxy.rowCount() == n + 1 and "lab/model" in browser.visible_model_ids()


def test_detail_pane_shows_the_breakdown(browser):
    assert browser.select_model("mistralai/Ministral-8B-Instruct-2410")
    text = browser.detail_text.toPlainText()
    for term in ("weights", "KV cache", "compute", "overhead", "total"):
        assert term in text
    assert "cuda:0" in browser.detail_reason.text()
    assert browser.load_button.isEnabled()


def test_load_button_emits_the_model_id(qtbot, browser):
    browser.select_model("mistralai/Ministral-8B-Instruct-2410")
    with qtbot.waitSignal(browser.sigLoadRequested) as blocker:
        browser.load_button.click()
    assert blocker.args == ["mistralai/Ministral-8B-Instruct-2410"]


def test_add_model_form_validates_then_registers(qtbot, browser, registry):
    dialog = browser.open_add_dialog()
    dialog.id_edit.setText("me/tiny-llm")
    dialog.params_spin.setValue(1.5)
    dialog.accept()  # no name: pydantic's error, naming the field, and the dialog stays open
    assert dialog.isVisible()
    assert dialog.error_for("name").startswith("name:")  # beside the Name field
    assert dialog.id_edit.text() == "me/tiny-llm" and dialog.params_spin.value() == 1.5  # what was typed stays
    assert registry.get_model("me/tiny-llm") is None
    dialog.name_edit.setText("Tiny LLM")
    dialog.accept()
    meta = registry.get_model("me/tiny-llm")
    assert meta is not None and meta.origin == "user" and meta.parameters == 1_500_000_000
    assert meta.min_vram_gb is not None  # requirements filled from estimates
    browser.reload()
    assert browser.selected_model_id() == "me/tiny-llm"


def test_add_model_without_an_id_names_the_problem(qtbot, browser):
    dialog = browser.open_add_dialog()
    dialog.name_edit.setText("Nameless")
    dialog.accept()
    assert "model_id or huggingface_id is required" in dialog.error_for("model_id")
    dialog.reject()


def test_add_model_to_a_store_that_cannot_be_written_says_so_and_keeps_the_dialog(qtbot, browser, registry,
                                                                                  monkeypatch):
    import errno
    import tempfile

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_space)
    dialog = browser.open_add_dialog()
    dialog.id_edit.setText("me/tiny-llm")
    dialog.name_edit.setText("Tiny LLM")
    dialog.params_spin.setValue(1.5)
    dialog.accept()  # one line in the dialog, no traceback, nothing registered
    assert dialog.isVisible() and dialog.error_label.isVisibleTo(dialog) and dialog.error_for("")
    assert "could not be written" in dialog.error_label.text() and "No space left" in dialog.error_label.text()
    assert registry.get_model("me/tiny-llm") is None
    dialog.reject()


def _write_safetensors(path, n: int = 64) -> None:
    header = {"model.embed.weight": {"dtype": "F16", "shape": [n, n], "data_offsets": [0, n * n * 2]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (n * n * 2))


def test_scan_folder_registers_off_the_ui_thread(qtbot, browser, registry, tmp_path):
    folder = tmp_path / "models"
    (folder / "tiny").mkdir(parents=True)
    _write_safetensors(folder / "tiny" / "model.safetensors")
    browser.start_scan(str(folder))
    assert not browser.scan_button.isEnabled()
    qtbot.waitUntil(lambda: browser._scan is None and browser.scan_preview is not None, timeout=5000)
    assert registry.user_models() == []  # nothing registered before the preview is confirmed
    with qtbot.waitSignal(browser.sigStatus, timeout=5000) as blocker:
        browser.scan_preview.accept()
    assert blocker.args[0].startswith("1 model(s) registered")
    assert any(m.origin == "scanned" for m in registry.user_models())
    assert browser.scan_button.isEnabled()


def test_cancelled_scan_registers_nothing(qtbot, browser, registry, tmp_path):
    folder = tmp_path / "many"
    for i in range(3):
        (folder / f"m{i}").mkdir(parents=True)
        _write_safetensors(folder / f"m{i}" / "model.safetensors")
    scan = browser.start_scan(str(folder))
    scan.cancel()  # before the first file: the progress callback raises and the scan stops
    qtbot.waitUntil(lambda: browser._scan is None, timeout=5000)
    assert scan.cancelled
    assert registry.user_models() == []


def test_screenshot_registry_browser(qtbot, browser, image_regression):
    browser.select_model("mistralai/Ministral-8B-Instruct-2410")
    image_regression.check(png_of(browser, (900, 420)), diff_threshold=DIFF_THRESHOLD)


def test_keyboard_find_then_enter_twice_asks_to_load(qtbot, browser):
    from PySide6.QtCore import Qt as _Qt

    browser.show()
    browser.activateWindow()
    qtbot.waitUntil(browser.isActiveWindow)
    qtbot.keyClick(browser.view, _Qt.Key.Key_F, _Qt.KeyboardModifier.ControlModifier)  # Ctrl+F: the search box
    assert browser.search_edit.hasFocus()
    qtbot.keyClicks(browser.search_edit, "ministral 8b")
    qtbot.keyClick(browser.search_edit, _Qt.Key.Key_Return)  # on to the results, the first selected
    assert browser.view.hasFocus() and browser.selected_model_id() == "mistralai/Ministral-8B-Instruct-2410"
    with qtbot.waitSignal(browser.sigLoadRequested) as asked:
        qtbot.keyClick(browser.view, _Qt.Key.Key_Return)  # Enter on the row opens the picker
    assert asked.args == ["mistralai/Ministral-8B-Instruct-2410"]
