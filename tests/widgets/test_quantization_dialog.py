"""QuantizationDialog: every level, fit per device, live estimates, the strategy's choice first."""

from __future__ import annotations

import pytest

from app.core.manager.placement import Decision
from app.core.quantization_strategy import candidate_levels, estimate_model
from app.core.runtime_profile import RuntimeProfile
from app.core.units import GiB
from app.widgets.planning import ViewPlanner
from app.widgets.quantization_dialog import QuantizationDialog
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD

MINISTRAL = "mistralai/Ministral-8B-Instruct-2410"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


def _dialog(qtbot, registry, sampler, strategy, model_id=MINISTRAL) -> QuantizationDialog:
    dialog = QuantizationDialog(registry.get_model(model_id), sampler.latest, strategy)
    qtbot.addWidget(dialog)
    return dialog


def test_lists_every_candidate_with_the_planners_choice_selected(qtbot, registry, sampler, strategy):
    meta = registry.get_model(MINISTRAL)
    dialog = _dialog(qtbot, registry, sampler, strategy)
    assert dialog.table.rowCount() == len(candidate_levels(meta))
    answer = dialog._planner.decide(meta, context=4096)
    assert dialog.selected_device() == "best"
    assert dialog.selection() == (answer.placement.level, answer.placement.device, 4096)
    assert dialog.decision().placement == answer.placement  # OK returns the very placement shown
    # 2 GPUs and the CPU each get a fit column
    headers = [dialog.table.horizontalHeaderItem(c).text() for c in range(dialog.table.columnCount())]
    assert headers[-4:] == ["GPU 0", "GPU 1", "CPU (RAM)", "Quality"]


def test_fit_is_free_minus_headroom_and_a_miss_says_by_how_much(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy)
    gpu1 = sampler.latest.gpus[1]
    est = estimate_model(registry.get_model(MINISTRAL), "bf16", context=4096)
    expected = est.total_bytes - (gpu1.free_bytes - strategy.gpu_headroom_bytes)
    assert dialog.shortfall("bf16", "cuda:1") == expected > 0
    dialog.select_device("cuda:1")
    dialog.select_level("bf16")
    text = dialog.fit_label.text()
    assert text.startswith("Cannot load") and "on cuda:1" in text
    assert f"needs {est.total_bytes / GiB:.2f} GiB" in text
    assert f"{(gpu1.free_bytes - strategy.gpu_headroom_bytes) / GiB:.2f} GiB is bookable" in text
    assert not dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()
    row = list(candidate_levels(registry.get_model(MINISTRAL))).index("bf16")
    assert dialog.table.item(row, len(dialog.FIXED_COLUMNS) + 1).text().startswith("short ")


def test_context_changes_the_estimates_live(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy)
    level = dialog.selected_level()
    kv_before = dialog.estimate(level, "cuda:0").kv_cache_bytes
    dialog.context_spin.setValue(16384)
    assert dialog.estimate(level, "cuda:0").kv_cache_bytes == pytest.approx(4 * kv_before, rel=0.01)
    assert dialog.selected_level() == level and dialog.context() == 16384


def test_diffusion_models_get_resolution_and_batch(qtbot, registry, sampler, strategy):
    sd = next(m for m in registry.list_models(model_type="text_to_image"))
    dialog = _dialog(qtbot, registry, sampler, strategy, sd.id)
    assert dialog.context() is None and set(dialog.options()) == {"width", "height", "batch"}
    level = dialog.selected_level()
    before = dialog.estimate(level, "cuda:0").total_bytes
    dialog.batch_spin.setValue(4)
    dialog.runtime_settings.flush()  # spin boxes re-plan once the user stops stepping
    assert dialog.estimate(level, "cuda:0").total_bytes > before


def test_ok_returns_level_device_context(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy)
    dialog.select_level("Q4_K_M")
    dialog.select_device("cuda:1")
    dialog.accept()
    level, device, context = dialog.selection()
    assert device == "cuda:1" and context == 4096 and level is not None


def test_screenshot_quantization_dialog(qtbot, registry, sampler, strategy, image_regression):
    dialog = _dialog(qtbot, registry, sampler, strategy)
    image_regression.check(png_of(dialog, (900, 660)), diff_threshold=DIFF_THRESHOLD)


def test_the_picker_starts_from_the_managers_runtime_profile_and_plans_what_plan_does(
        qtbot, registry, sampler, manager):
    """One decision, one object: a host whose runtimes tile SDXL's VAE gets the same plan from the picker as
    from ``manager.plan`` (same level, device and bytes), with "VAE tiling" shown checked."""
    manager.observe(sampler.latest)
    manager.runtime_profile = RuntimeProfile(vae_tiling=True)
    meta = registry.get_model(SDXL)
    dialog = QuantizationDialog(meta, sampler.latest, ViewPlanner(registry, manager))
    qtbot.addWidget(dialog)
    assert dialog.runtime_settings.tiling_check.isChecked()
    assert dialog.runtime_profile().vae_tiling and dialog.request().runtime == dialog.runtime_profile()

    planned = manager.plan(SDXL)
    picked = dialog.decision()
    assert isinstance(planned, Decision) and picked is not None
    assert picked.placement.level == planned.placement.level
    assert picked.placement.device == planned.placement.device
    assert picked.placement.estimate.total_bytes == planned.placement.estimate.total_bytes
    assert "VAE tiling" in picked.placement.estimate.runtime
    # the profile matters here: without it SDXL's fp32 decode of the whole image is the peak
    untiled = estimate_model(meta, picked.placement.level, profile=RuntimeProfile())
    assert picked.placement.estimate.total_bytes < untiled.total_bytes

    manager.runtime_profile = None  # and a host that names none gets the runtime's defaults, as plan does
    plain = QuantizationDialog(meta, sampler.latest, ViewPlanner(registry, manager))
    qtbot.addWidget(plain)
    assert not plain.runtime_settings.tiling_check.isChecked()
    assert plain.decision().placement.estimate.total_bytes == manager.plan(SDXL).placement.estimate.total_bytes


def test_a_port_without_a_runtime_profile_starts_from_the_defaults(qtbot, registry, sampler, manager):
    class Port:  # a host's facade over the manager that predates runtime_profile
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            if name == "runtime_profile":
                raise AttributeError(name)
            return getattr(self._inner, name)

    manager.observe(sampler.latest)
    manager.runtime_profile = RuntimeProfile(vae_tiling=True)
    dialog = QuantizationDialog(registry.get_model(SDXL), sampler.latest, ViewPlanner(registry, Port(manager)))
    qtbot.addWidget(dialog)
    assert not dialog.runtime_settings.tiling_check.isChecked()
    assert dialog.request().runtime == dialog.runtime_profile()
