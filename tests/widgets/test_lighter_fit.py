"""The browser's Fit column: a pipeline that fits a GPU only with lighter runtime settings says so."""

from __future__ import annotations

import json

from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.placement import Decision
from app.core.model_resource_manager import ModelResourceManager
from app.core.runtime_profile import RuntimeProfile
from app.widgets.planning import ViewPlanner
from app.widgets.registry_browser import plan_lines
from app.widgets.registry_table_model import RegistryTableModel

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def _rig(tmp_path, registry, clock, used_gib: float):
    rig = tmp_path / "rtx3060.json"
    desktop = {"name": "desktop", "used_gib": used_gib}
    rig.write_text(json.dumps({"gpus": [{"card": "rtx3060", "processes": [desktop]}]}))
    profiler = HardwareProfiler(simulate=str(rig), clock=clock)
    manager = ModelResourceManager(profiler=profiler, registry=registry, clock=clock)
    return manager, profiler


def test_sdxl_fits_a_busy_3060_only_with_vae_tiling_and_the_browser_says_so(qtbot, tmp_path, registry, clock):
    manager, profiler = _rig(tmp_path, registry, clock, used_gib=2.0)
    sdxl = registry.get_model(SDXL)
    plain = manager.plan(SDXL, "fp16", make_room=False)
    assert not isinstance(plain, Decision)  # diffusers' defaults: the fp32 VAE decode does not fit
    planner = ViewPlanner(registry, manager=manager)
    answer = planner.best(sdxl)
    assert isinstance(answer, Decision) and answer.placement.kind == "gpu"
    assert planner.lighter_label(SDXL) == "with VAE tiling" and "VAE tiling" in answer.placement.estimate.runtime
    assert manager.loaded_models() == ()  # a proposal: nothing loaded, the manager's profile untouched
    assert manager.runtime_profile is None

    model = RegistryTableModel(registry, planner)
    model.set_profile(profiler.get_profile())
    row = model.row_of(SDXL)
    fit = model.index(row, model.FIT)
    assert model.data(fit) == "fits*"
    assert "with VAE tiling" in model.data(fit, 3)  # Qt.ToolTipRole
    reason, _ = plan_lines(answer, None, planner.lighter_label(SDXL))
    assert reason.startswith("fp16 on cuda:0 with VAE tiling (the runtime's defaults do not fit)")
    # a model that fits with the defaults is a plain "fits"
    assert model.data(model.index(model.row_of(SD15), model.FIT)) == "fits" and planner.lighter_label(SD15) is None


def test_with_the_hosts_tiling_profile_it_is_a_plain_fit(qtbot, tmp_path, registry, clock):
    manager, profiler = _rig(tmp_path, registry, clock, used_gib=2.0)
    manager.runtime_profile = RuntimeProfile(vae_tiling=True)
    planner = ViewPlanner(registry, manager=manager)
    answer = planner.best(registry.get_model(SDXL))
    assert isinstance(answer, Decision) and planner.lighter_label(SDXL) is None
