"""SettingsDialog: typed values checked in one line, applied to the running manager, saved atomically."""

from __future__ import annotations

import pytest

from app.core.model_resource_manager import ModelResourceManager
from app.core.settings import UserSettings, load_settings, save_settings
from app.core.units import MiB
from app.widgets.settings_dialog import SettingsDialog
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD


@pytest.fixture
def manager(sampler, registry, clock):
    return ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock)


def _dialog(qtbot, settings=None, manager=None, **kw) -> SettingsDialog:
    dialog = SettingsDialog(settings or UserSettings(), manager, **kw)
    qtbot.addWidget(dialog)
    return dialog


def _type(dialog: SettingsDialog, **values: str) -> None:
    for name, text in values.items():
        dialog.edits[name].setText(text)


def test_fields_show_the_current_settings(qtbot):
    dialog = _dialog(qtbot, UserSettings(keep_alive_s=-1, gpu_reserve_mib=1024), confirm={"moves": False})
    assert dialog.edits["keep_alive_s"].text() == "-1"
    assert dialog.edits["gpu_reserve_mib"].text() == "1024" and dialog.edits["ram_reserve_mib"].text() == "2048"
    assert not dialog.confirm_boxes["moves"].isChecked()


@pytest.mark.parametrize(("field", "text", "expected"), [
    ("keep_alive_s", "soon", "Keep models loaded for (s): 'soon' is not a number"),
    ("keep_alive_s", "-5", "Keep models loaded for (s): Input should be greater than or equal to -1"),
    ("keep_alive_s", "-0.5", "Keep models loaded for (s): -0.5 is neither -1 (keep loaded) nor a number of seconds"),
    ("gpu_reserve_mib", "512.5", "GPU safety reserve (MiB): '512.5' is not a whole number"),
    ("ram_reserve_mib", "-1", "RAM safety reserve (MiB): Input should be greater than or equal to 0"),
])
def test_a_wrong_value_is_one_clear_line_and_changes_nothing(qtbot, manager, tmp_path, field, text, expected):
    path = tmp_path / "settings.json"
    dialog = _dialog(qtbot, manager=manager, path=path)
    before = manager.settings
    _type(dialog, **{field: text})
    dialog.accept()
    line = dialog.error_label.text()
    assert line.startswith(expected) and "\n" not in line and "allowed:" in line
    assert dialog.result() != SettingsDialog.DialogCode.Accepted
    assert manager.settings is before and not path.exists()
    dialog.edits[field].textEdited.emit("x")  # typing again clears the line
    assert dialog.error_label.text() == ""


def test_ok_applies_to_the_manager_and_saves(qtbot, manager, tmp_path):
    path = tmp_path / "cfg" / "settings.json"
    dialog = _dialog(qtbot, UserSettings(max_loaded_models=3), manager, path=path)
    _type(dialog, keep_alive_s="-1", gpu_reserve_mib="1024", ram_reserve_mib="4096")
    with qtbot.waitSignal(dialog.sigSettingsChanged) as changed:
        dialog.accept()
    assert dialog.result() == SettingsDialog.DialogCode.Accepted and dialog.error_label.text() == ""
    assert manager.settings.keep_alive_s == -1
    assert manager.safety_margin("cuda:0") == 1024 * MiB and manager.safety_margin("cpu") == 4096 * MiB
    saved = load_settings(path)
    assert saved == changed.args[0] == dialog.settings()
    assert saved.max_loaded_models == 3 and saved.keep_alive_s == -1 and saved.gpu_reserve_mib == 1024
    assert not list(path.parent.glob(".settings.json.*.tmp"))  # the temporary file of the atomic write is gone


def test_ask_before_making_room_leaves_by_its_signal(qtbot):
    dialog = _dialog(qtbot, confirm={"moves": True})
    dialog.confirm_boxes["moves"].setChecked(False)
    with qtbot.waitSignal(dialog.sigConfirmChanged) as blocker:
        dialog.accept()
    assert blocker.args == ["moves", False] and dialog.confirm == {"moves": False}
    again = _dialog(qtbot, confirm={"moves": False})
    with qtbot.assertNotEmitted(again.sigConfirmChanged):
        again.accept()


def test_each_question_given_has_its_box_and_only_changed_ones_leave(qtbot):
    labels = {"moves": "Ask before making room", "bulk": "Ask before several", "quit": "Ask before quitting"}
    dialog = _dialog(qtbot, confirm={"moves": True, "bulk": True, "quit": False}, labels=labels)
    assert [b.text() for b in dialog.confirm_boxes.values()] == list(labels.values())
    assert [b.isChecked() for b in dialog.confirm_boxes.values()] == [True, True, False]
    dialog.confirm_boxes["bulk"].setChecked(False)
    dialog.confirm_boxes["quit"].setChecked(True)
    emitted = []
    dialog.sigConfirmChanged.connect(lambda key, on: emitted.append((key, on)))
    dialog.accept()
    assert emitted == [("bulk", False), ("quit", True)]


def test_a_file_that_cannot_be_written_is_one_line_and_nothing_changes(qtbot, manager, tmp_path):
    folder = tmp_path / "settings.json"
    folder.mkdir()  # a folder where the file should go
    dialog = _dialog(qtbot, manager=manager, path=folder)
    before = manager.settings
    _type(dialog, keep_alive_s="60")
    dialog.accept()
    assert dialog.error_label.text().startswith(f"Could not save {folder}")
    assert manager.settings is before


def test_save_settings_round_trips_and_replaces_atomically(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"keep_alive_s": 10}')
    settings = UserSettings(keep_alive_s=600, preload=["llama3.1:8b", ("openai/whisper-small", "int8")])
    assert save_settings(settings, path) == path
    assert load_settings(path) == settings


def test_screenshot_settings_dialog_with_an_error(qtbot, image_regression):
    dialog = _dialog(qtbot, path="/home/user/.config/modeldeck/settings.json")
    _type(dialog, keep_alive_s="-5")
    dialog.accept()
    image_regression.check(png_of(dialog, (460, 260)), diff_threshold=DIFF_THRESHOLD)
