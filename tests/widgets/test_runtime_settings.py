"""The picker's "Runtime" group: runtimes per model type, defaults shown, and every change re-planned at once
through the same requests (the profile inside PlacementRequest and estimate_model)."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QAbstractButton, QApplication, QGroupBox, QLabel, QWidget

from app.core.model_registry import ModelType
from app.core.quantization_strategy import estimate_model
from app.core.runtime_profile import RuntimeProfile
from app.core.units import GiB
from app.widgets.quantization_dialog import QuantizationDialog
from app.widgets.runtime_settings import RuntimeSettings
from app.widgets.shortcuts_dialog import mnemonic_of
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD

MINISTRAL = "mistralai/Ministral-8B-Instruct-2410"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
WHISPER = "openai/whisper-large-v3"


def _dialog(qtbot, registry, sampler, strategy, model_id, **kw) -> QuantizationDialog:
    dialog = QuantizationDialog(registry.get_model(model_id), sampler.latest, strategy, **kw)
    qtbot.addWidget(dialog)
    return dialog


def _shown_total(dialog: QuantizationDialog, level: str) -> int:
    """The "Total" cell of ``level``'s row, back in bytes (to 0.01 GiB)."""
    text = dialog.table.item(dialog.levels().index(level), 1).text()
    assert text.endswith(" GiB")
    return round(float(text.removesuffix(" GiB")) * GiB)


def _line(dialog: QuantizationDialog, pattern: str) -> str:
    lines = [ln for ln in dialog.breakdown() if re.match(pattern, ln)]
    assert len(lines) == 1, (pattern, dialog.breakdown())
    return lines[0]


def test_runtimes_offered_suit_the_model_type():
    def offered(model_type):
        w = RuntimeSettings(model_type)
        return [w.runtime_combo.itemData(i) for i in range(w.runtime_combo.count())]

    assert offered(ModelType.LLM) == [None, "llama.cpp", "ollama", "transformers"]
    assert offered(ModelType.TEXT_TO_IMAGE) == offered(ModelType.TEXT_TO_VIDEO) == [None, "diffusers"]
    assert offered(ModelType.SPEECH_TO_TEXT) == [None, "ctranslate2", "openai-whisper", "whisper.cpp", "transformers"]
    assert offered(ModelType.EMBEDDING) == [None, "transformers"]


def test_each_model_type_shows_only_its_settings(qtbot, registry, sampler, strategy):
    llm = _dialog(qtbot, registry, sampler, strategy, MINISTRAL).runtime_settings
    image = _dialog(qtbot, registry, sampler, strategy, SDXL).runtime_settings
    speech = _dialog(qtbot, registry, sampler, strategy, WHISPER).runtime_settings
    assert llm.controls() == [llm.runtime_combo, llm.flash_check, llm.kv_ram_check, llm.parallel_spin,
                              llm.ubatch_spin, llm.k_combo, llm.v_combo]
    assert image.controls() == [image.runtime_combo, image.width_spin, image.height_spin, image.images_spin,
                                image.offload_check, image.text_cpu_check, image.tiling_check]
    assert speech.controls() == [speech.runtime_combo, speech.beams_spin, speech.batch_spin]
    for w in (llm, image, speech):  # the other types' settings are not even in the group
        assert {c for c in w.findChildren(QWidget) if c.isVisibleTo(w)} >= set(w.controls())
        assert not any(c.parent() for c in (w.flash_check, w.offload_check, w.beams_spin) if c not in w.controls())


def test_controls_show_the_runtime_defaults(qtbot, registry, sampler, strategy):
    rs = _dialog(qtbot, registry, sampler, strategy, MINISTRAL).runtime_settings
    assert rs.parallel_spin.text() == "default (1)" and rs.ubatch_spin.text() == "default (512)"
    assert rs.flash_check.isChecked()  # llama.cpp -fa auto, transformers sdpa
    rs.set_runtime("ollama")
    assert not rs.flash_check.isChecked() and "OLLAMA_FLASH_ATTENTION" in rs.flash_check.toolTip()
    assert rs.profile() == RuntimeProfile(runtime="ollama")  # defaults stay None: the runtime decides
    rs.set_runtime("transformers")
    assert rs.flash_check.isChecked() and not rs.ubatch_spin.isEnabled()  # no micro-batch in transformers
    speech = _dialog(qtbot, registry, sampler, strategy, WHISPER).runtime_settings
    speech.set_runtime("ctranslate2")
    assert speech.beams_spin.text() == "default (5)" and "beam_size=5" in speech.beams_spin.toolTip()
    speech.set_runtime("transformers")
    assert speech.beams_spin.text() == "default (1)"


def test_flash_attention_off_at_a_long_context_raises_the_total(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy, MINISTRAL, context=32768)
    rs = dialog.runtime_settings
    rs.set_runtime("llama.cpp")
    assert dialog.levels() and all(lv[0].isupper() for lv in dialog.levels())  # llama.cpp loads GGUF only
    dialog.select_level("Q4_K_M")
    before = _shown_total(dialog, "Q4_K_M")
    assert _line(dialog, "runtime ") == "runtime  llama.cpp on CUDA, flash attention"

    rs.flash_check.setChecked(False)

    after = _shown_total(dialog, "Q4_K_M")
    expected = estimate_model(registry.get_model(MINISTRAL), "Q4_K_M", context=32768,
                              profile=RuntimeProfile(runtime="llama.cpp", flash_attention=False))
    assert after > before + GiB  # the score matrix for 512 tokens × 32768 context
    assert after == pytest.approx(expected.total_bytes, abs=0.006 * GiB)
    assert _line(dialog, "runtime ") == "runtime  llama.cpp on CUDA, no flash attention"
    assert "no flash attention" in _line(dialog, r"  compute buffer")
    assert _line(dialog, "in RAM ")  # llama.cpp keeps the token embeddings in RAM
    # what Load hands over is the planner's answer to a request carrying this very profile
    assert dialog.request().runtime == dialog.runtime_profile() == RuntimeProfile(runtime="llama.cpp",
                                                                                  flash_attention=False)
    assert dialog.decision() is dialog.answer() and dialog.decision().placement.estimate.runtime.endswith(
        "no flash attention")


def test_text_encoders_on_the_cpu_lower_sdxls_gpu_total(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy, SDXL)
    dialog.select_level("fp16")
    before = _shown_total(dialog, "fp16")
    assert re.match(r"text_encoder_2 +text encoder +fp16 +GPU +1\.29 GiB$", _line(dialog, "text_encoder_2 "))

    dialog.runtime_settings.text_cpu_check.setChecked(True)

    after = _shown_total(dialog, "fp16")
    assert after < before - GiB  # both encoders, 1.52 GiB, leave the GPU
    for name in ("text_encoder", "text_encoder_2"):
        assert re.match(rf"{name} +text encoder +fp16 +CPU +\d+\.\d\d GiB$", _line(dialog, name + " "))
    assert re.match(r"unet +denoiser +fp16 +GPU ", _line(dialog, "unet "))
    assert _line(dialog, "in RAM ").split()[-2:] == ["1.52", "GiB"]
    assert "text encoders on the CPU" in _line(dialog, "runtime ")
    assert dialog.decision().placement.estimate.host_bytes > 0


def test_sd15_phases_are_listed_and_the_peak_marked(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy, SD15)
    dialog.select_level("fp16")
    est = dialog.decision().placement.estimate
    assert [p.name for p in est.phases] == ["encode", "denoise", "decode"]
    peak = max(est.phases, key=lambda p: p.peak_bytes)
    lines = dialog.breakdown()
    assert any(ln.startswith("phase ") and "device peak" in ln for ln in lines)
    marked = [ln for ln in lines if ln.endswith("← peak")]
    assert len(marked) == 1 and marked[0].split()[0] == peak.name
    for p in est.phases:
        row = _line(dialog, p.name + " ")
        assert f"{p.peak_bytes / GiB:.2f} GiB" in row
        assert f"  {p.explanation}" in lines  # its explanation under it
    # a larger image makes the denoiser's working memory grow: still one peak, re-planned after the debounce
    with qtbot.waitSignal(dialog.runtime_settings.sigProfileChanged, timeout=2000):
        dialog.width_spin.setValue(1024)
    assert len([ln for ln in dialog.breakdown() if ln.endswith("← peak")]) == 1
    assert "1024×512" in _line(dialog, "runtime ")


def test_pixel_spins_keep_multiples_of_8(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy, SDXL)
    spin = dialog.width_spin
    assert spin.fixup("1021 px") == "1024 px" and spin.fixup("1019 px") == "1016 px"
    dialog.show()
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, "1003")  # typed, not yet counted: the spin box tracks no keystrokes
    assert dialog.runtime_profile().width == 1024
    with qtbot.waitSignal(dialog.runtime_settings.sigProfileChanged, timeout=2000):
        qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert spin.value() == 1000 and spin.text() == "1000 px"
    assert dialog.runtime_profile().width == 1000 and "1000×1024" in _line(dialog, "runtime ")


def test_replanning_is_fast_enough_to_follow_each_change(qtbot, registry, sampler, strategy):
    dialog = _dialog(qtbot, registry, sampler, strategy, MINISTRAL, context=32768)
    times = []
    for checked in (False, True, False):
        dialog.runtime_settings.kv_ram_check.setChecked(checked)
        times.append(dialog.last_replan_s)
    assert min(times) < 0.5, times  # generous: a loaded CI machine; measured ~0.05 s


@pytest.mark.parametrize("model_id", [MINISTRAL, SDXL, WHISPER])
def test_mnemonics_do_not_clash_and_the_dialog_fits_800x600(qtbot, registry, sampler, strategy, model_id):
    dialog = _dialog(qtbot, registry, sampler, strategy, model_id)
    dialog.resize(800, 600)
    dialog.show()
    QApplication.processEvents()
    assert dialog.size().width() <= 800 and dialog.size().height() <= 600
    texts = [w.text() for w in dialog.findChildren(QLabel) + dialog.findChildren(QAbstractButton) if w.isVisible()]
    letters = [m for m in map(mnemonic_of, texts) if m]
    assert len(letters) == len(set(letters)), sorted(zip(letters, texts, strict=False))
    assert not any(mnemonic_of(g.title()) for g in dialog.findChildren(QGroupBox))
    rect = dialog.rect()
    for control in dialog.runtime_settings.controls():  # every setting visible and reachable by Tab
        assert control.isVisible() and rect.contains(QRect(control.mapTo(dialog, QPoint(0, 0)), control.size()))
        assert control.focusPolicy() & control.focusPolicy().TabFocus


def test_screenshot_sdxl_pipeline_breakdown(qtbot, registry, sampler, strategy, image_regression):
    dialog = _dialog(qtbot, registry, sampler, strategy, SDXL)
    dialog.select_level("fp16")
    dialog.runtime_settings.text_cpu_check.setChecked(True)
    dialog.resize(900, 760)
    dialog.splitter.setSizes([150, 400])
    image_regression.check(png_of(dialog, (900, 760)), diff_threshold=DIFF_THRESHOLD)


@pytest.mark.parametrize(("model_type", "profile"), [
    (ModelType.LLM, RuntimeProfile(runtime="ollama", flash_attention=True, parallel=4, ubatch=256,
                                   cache_type_k="q8_0", cache_type_v="q4_0", kv_offload=False)),
    (ModelType.LLM, RuntimeProfile(runtime="llama.cpp", flash_attention=False)),
    (ModelType.TEXT_TO_IMAGE, RuntimeProfile(runtime="diffusers", width=768, height=1344, batch=3, offload="model",
                                             text_encoder_device="cpu", vae_tiling=True)),
    (ModelType.TEXT_TO_IMAGE, RuntimeProfile(width=1024, height=1024, vae_tiling=True)),
    (ModelType.SPEECH_TO_TEXT, RuntimeProfile(runtime="ctranslate2", beams=2, batch=8)),
])
def test_set_profile_round_trips_and_emits_once(qtbot, model_type, profile):
    rs = RuntimeSettings(model_type, levels=("Q4_K_M", "fp16"))
    qtbot.addWidget(rs)
    sent = []
    rs.sigProfileChanged.connect(sent.append)
    rs.set_profile(profile)
    assert rs.profile() == profile and sent == [profile]  # one signal for every control set
    rs.set_profile(profile)
    assert sent == [profile]  # nothing changed: nothing sent
    rs.set_profile(RuntimeProfile(width=1024, height=1024) if rs.is_image else RuntimeProfile())
    assert len(sent) == 2 and rs.profile() == sent[-1]  # back to the defaults
    assert rs.runtime() is None and not rs.tiling_check.isChecked() and not rs.kv_ram_check.isChecked()


def test_initial_profile_sets_the_controls_without_a_signal(qtbot):
    initial = RuntimeProfile(runtime="ollama", flash_attention=True, parallel=2, cache_type_v="q8_0")
    sent = []
    rs = RuntimeSettings(ModelType.LLM, initial=initial)
    qtbot.addWidget(rs)
    rs.sigProfileChanged.connect(sent.append)
    QApplication.processEvents()
    assert rs.profile() == initial and not sent
    assert rs.runtime() == "ollama" and rs.flash_check.isChecked()  # Ollama's default is off: the profile's on
    assert rs.parallel_spin.value() == 2 and rs.v_combo.currentData() == "q8_0"
    rs.flash_check.setChecked(False)  # the user's change still counts, once
    assert len(sent) == 1 and sent[0].flash_attention is None  # off is Ollama's default
    image = RuntimeSettings(ModelType.TEXT_TO_IMAGE, resolution=(1024, 1024), initial=RuntimeProfile(vae_tiling=True))
    qtbot.addWidget(image)
    assert image.tiling_check.isChecked() and image.profile() == RuntimeProfile(width=1024, height=1024,
                                                                                vae_tiling=True)
