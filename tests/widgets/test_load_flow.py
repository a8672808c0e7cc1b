"""The dashboard's load path: a load that moves other models asks first; loads never block the GUI."""

from __future__ import annotations

import json

import pytest
from PySide6.QtWidgets import QMessageBox

from app.core.hardware_profiler import HardwareProfiler
from app.core.model_resource_manager import ModelResourceManager, ModelState
from app.core.runtime_profile import RuntimeProfile
from app.core.sampler import Sampler
from app.widgets.resource_panel import ResourcePanel

MINISTRAL = "mistralai/Ministral-8B-Instruct-2410"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture
def walk(qtbot, tmp_path, registry, clock):
    """The story on one RTX 3060 (others hold a fixed 2.0 GiB): Ministral 8B at Q4_K_M and SD 1.5 loaded.

    The browser holds 1.5 GiB, not 2.0: SDXL at fp16 with VAE tiling books 8.43 GiB on the GPU (8.88 GiB with
    the CUDA context), and with 2.5 GiB held by others only 8.32 GiB is bookable even once both models are
    offloaded (0.61 + 2.60 + 5.11), so the load would be refused, not made room for. At 1.5 GiB it fits with
    0.39 GiB to spare after making room, and still needs room while the two are loaded (1.11 GiB bookable).
    """
    rig = tmp_path / "rtx3060.json"
    rig.write_text(json.dumps({"gpus": [{"card": "rtx3060", "processes": [{"name": "Xorg", "used_gib": 0.5},
                                                                           {"name": "browser", "used_gib": 1.5}]}]}))
    profiler = HardwareProfiler(simulate=str(rig), clock=clock)
    sampler = Sampler(profiler, interval_s=1.0, clock=clock)
    sampler.tick()
    manager = ModelResourceManager(profiler=profiler, registry=registry, clock=clock)
    manager.runtime_profile = RuntimeProfile(vae_tiling=True)  # SDXL's fp32 VAE decode peaks ~10 GiB: 12 GB cards tile
    manager.load(MINISTRAL, "Q4_K_M")
    clock.advance(5)
    manager.load(SD15)
    clock.advance(5)
    panel = ResourcePanel(sampler, registry, manager=manager)
    qtbot.addWidget(panel)
    panel.resize(1100, 700)
    panel.show()
    yield panel, manager
    panel.shutdown()


def _pick_sdxl(panel):
    dialog = panel.open_picker(SDXL)
    decision = dialog.decision()
    assert decision is not None and [a.model_id for a in decision.actions]  # it needs room
    dialog.accept()
    return decision


def test_a_load_that_moves_others_asks_first_and_cancel_moves_nothing(qtbot, walk):
    panel, manager = walk
    before = {m.model_id: (m.state, m.device) for m in manager.loaded_models()}
    with qtbot.waitSignal(panel.sigStatus, check_params_cb=lambda text: text.startswith("Not loaded")):
        decision = _pick_sdxl(panel)
        box = panel.loads.confirm_box
        assert isinstance(box, QMessageBox) and box.isVisible()
        for action in decision.actions:  # what moves, where, how much is freed
            assert action.name in box.informativeText() and "GiB" in box.informativeText()
        assert "Stable Diffusion XL" in box.text()
        box.button(QMessageBox.StandardButton.Cancel).click()
    assert {m.model_id: (m.state, m.device) for m in manager.loaded_models()} == before
    assert manager.state_of(SDXL) == ModelState.UNLOADED


def test_agreeing_makes_room_and_loads_off_the_gui_thread(qtbot, walk):
    panel, manager = walk
    decision = _pick_sdxl(panel)
    box = panel.loads.confirm_box
    go = next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.AcceptRole)
    go.click()  # no event loop runs here: the load goes to a worker thread
    qtbot.waitUntil(lambda: manager.state_of(SDXL) == ModelState.LOADED, timeout=5000)
    moved = {a.model_id for a in decision.actions}
    for mid in moved:
        assert manager.state_of(mid) in (ModelState.OFFLOADED, ModelState.UNLOADED)
    loaded = next(m for m in manager.loaded_models() if m.model_id == SDXL)
    assert loaded.placement == decision.placement and loaded.device == "cuda:0"  # the very placement shown
    assert panel.loads.confirm_moves  # asked, and still asks next time


def test_dont_ask_again_turns_the_question_off(qtbot, walk):
    panel, manager = walk
    _pick_sdxl(panel)
    box = panel.loads.confirm_box
    box.checkBox().setChecked(True)
    with qtbot.waitSignal(panel.sigConfirmMovesChanged) as changed:
        next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.AcceptRole).click()
    assert changed.args == [False] and panel.loads.confirm_moves is False
    qtbot.waitUntil(lambda: manager.state_of(SDXL) == ModelState.LOADED, timeout=5000)
    manager.unload(SDXL)
    manager.restore(MINISTRAL)
    _pick_sdxl(panel)  # needs room again: loads without asking
    assert panel.loads.confirm_box is None
    qtbot.waitUntil(lambda: manager.state_of(SDXL) == ModelState.LOADED, timeout=5000)


def test_a_load_partly_in_ram_says_so_when_it_lands(qtbot, tmp_path, registry, clock):
    """On a bare RTX 3060, Ministral 8B at fp16 does not fit whole: the planner puts the rest in RAM."""
    profiler = HardwareProfiler(simulate="rtx3060", clock=clock)
    sampler = Sampler(profiler, interval_s=1.0, clock=clock)
    sampler.tick()
    manager = ModelResourceManager(profiler=profiler, registry=registry, clock=clock)
    panel = ResourcePanel(sampler, registry, manager=manager)
    qtbot.addWidget(panel)
    decision = manager.plan(MINISTRAL, "fp16", allow_cpu=True)
    placement = decision.placement
    assert placement.kind == "partial"
    with qtbot.waitSignal(panel.sigStatus, timeout=5000,
                          check_params_cb=lambda text: text.startswith("Loaded")) as landed:
        panel.load_decision(decision)
    assert landed.args == [f"Loaded Ministral 8B Instruct 2410: {placement.gpu_layers} of {placement.layers} layers "
                           "on cuda:0, the rest in RAM (slower than on a GPU)"]
    row = panel.loaded_view.model
    qtbot.waitUntil(lambda: row.rowCount() == 1)
    assert row.data(row.index(0, 1)).endswith("layers on GPU, rest in RAM: slower)")
    panel.shutdown()
