"""DeviceCard: numbers with units and tooltips; lost and unavailable devices say why."""

from __future__ import annotations

import dataclasses

from app.core.hardware.snapshot import BackendStatus
from app.core.units import GiB
from app.widgets.device_card import DeviceCard
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD


def _card(qtbot) -> DeviceCard:
    card = DeviceCard()
    qtbot.addWidget(card)
    return card


def test_gpu_numbers_are_labelled(qtbot, sampler):
    gpu = sampler.latest.gpus[0]
    card = _card(qtbot)
    card.set_gpu(gpu)
    card.set_pressure("elevated")
    t = card.texts()
    assert t["title"] == "GPU 0 · NVIDIA GeForce RTX 4090"
    assert t["used"] == f"{gpu.used_bytes / GiB:.1f} / 24.0 GiB used"
    assert t["free"].endswith("GiB free")
    assert t["util"] == f"Util {gpu.utilization_percent:.0f}%"
    assert t["temp"].endswith("°C") and t["power"].endswith(" W")
    assert t["pressure"] == "elevated" and t["message"] == ""
    assert "450 W limit" in card._power.toolTip()
    assert "cuda:0" in card._title.toolTip()


def test_unsupported_field_shows_na_with_the_reason(qtbot, sampler):
    gpu = dataclasses.replace(sampler.latest.gpus[0], power_w=None,
                              unavailable=(("power_w", "Not Supported"),))
    card = _card(qtbot)
    card.set_gpu(gpu)
    assert card.texts()["power"] == "n/a"
    assert "Not Supported" in card._power.toolTip()


def test_lost_gpu_says_so_and_why(qtbot, sampler):
    gpu = dataclasses.replace(sampler.latest.gpus[0], lost=True, total_bytes=0, used_bytes=0, free_bytes=0,
                              unavailable=(("memory", "GPU is lost (NVML_ERROR_GPU_IS_LOST)"),))
    card = _card(qtbot)
    card.set_gpu(gpu)
    assert card.message().startswith("Lost: GPU is lost (NVML_ERROR_GPU_IS_LOST)")
    card.set_gpu(sampler.latest.gpus[0])
    assert card.message() == ""


def test_no_gpu_backend_shows_the_reason(qtbot):
    card = _card(qtbot)
    card.set_backend_unavailable(BackendStatus("nvml", False, "NVIDIA driver not loaded (libnvidia-ml.so.1 not found)"))
    assert card.title == "No GPU"
    assert card.message() == "NVML unavailable: NVIDIA driver not loaded (libnvidia-ml.so.1 not found)"


def test_host_card(qtbot, sampler):
    card = _card(qtbot)
    card.set_host(sampler.latest.host)
    t = card.texts()
    assert t["title"] == "System RAM" and "64.0 GiB used" in t["used"] and t["free"].endswith("GiB available")


def test_screenshot_cards(qtbot, sampler, image_regression):
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    box = QWidget()
    qtbot.addWidget(box)
    layout = QVBoxLayout(box)
    cards = [DeviceCard() for _ in range(4)]
    for c in cards:
        layout.addWidget(c)
    layout.addStretch(1)
    cards[0].set_gpu(sampler.latest.gpus[0])
    cards[0].set_pressure("ok")
    cards[1].set_gpu(sampler.latest.gpus[1])
    cards[1].set_pressure("critical")
    cards[2].set_gpu(dataclasses.replace(sampler.latest.gpus[1], index=2, lost=True,
                                         unavailable=(("memory", "simulated GPU loss"),)))
    cards[3].set_backend_unavailable(BackendStatus("nvml", False, "NVIDIA driver not loaded"))
    image_regression.check(png_of(box, (360, 380)), diff_threshold=DIFF_THRESHOLD)
