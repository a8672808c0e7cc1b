"""DeviceCard: numbers with units and tooltips; lost and unavailable devices say why."""

from __future__ import annotations

import dataclasses

import pytest

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


def _ledger(gpu, booked_gib: float, unreflected_gib: float, level: str):
    from app.core.memory_allocator import DeviceLedger, PressureLevel

    reserve = GiB // 2
    balance = gpu.free_bytes - int(unreflected_gib * GiB) - reserve
    return DeviceLedger(gpu.device_id, gpu.name, gpu.total_bytes, gpu.free_bytes, gpu.used_bytes, None,
                        int(booked_gib * GiB), int(unreflected_gib * GiB), reserve, max(0, balance),
                        PressureLevel(level), balance_bytes=balance)


def test_booked_and_bookable_beside_the_pressure_that_they_explain(qtbot, sampler):
    gpu = sampler.latest.gpus[1]
    card = _card(qtbot)
    card.set_gpu(gpu)
    assert card.texts()["booked"] == "" and card._booked.isHidden()
    ledger = _ledger(gpu, 9.0, 9.0, "high")
    card.set_ledger(ledger)
    card.set_pressure("high")
    t = card.texts()
    assert t["free"].endswith("GiB free")
    assert t["booked"] == "Booked 9.0 GiB" and t["bookable"] == f"{ledger.available_bytes / GiB:.1f} GiB bookable"
    tip = card._pill.toolTip()
    assert "high" in tip and "9.0 GiB booked by ModelDeck and not in use yet" in tip
    assert f"{100 * ledger.committed_fraction:.0f}% of 12.0 GiB" in tip
    card.set_ledger(None)
    assert card._booked.isHidden() and "booked by ModelDeck" not in card._pill.toolTip()


class _Manager:
    """A manager whose answers a test sets: the card must show them, not work its own out."""

    def __init__(self, ledgers, level: str) -> None:
        self._ledgers, self._level = tuple(ledgers), level

    def ledgers(self):
        return self._ledgers

    def pressure(self, device: str):
        from app.core.memory_allocator import PressureLevel

        return PressureLevel(self._level)


def test_refresh_asks_the_manager_for_pressure_and_ledger(qtbot, sampler):
    gpu = sampler.latest.gpus[0]
    manager = _Manager([_ledger(gpu, 2.0, 0.0, "ok")], "high")  # the manager's level, whatever the figures
    card = DeviceCard(manager, "cuda:0")
    qtbot.addWidget(card)
    card.refresh(sampler.latest)
    t = card.texts()
    assert t["title"].startswith("GPU 0") and t["pressure"] == "high" and t["booked"] == "Booked 2.0 GiB"
    host = DeviceCard(_Manager([], "ok"), "cpu")
    qtbot.addWidget(host)
    host.refresh(sampler.latest)
    assert host.texts()["title"] == "System RAM" and host.texts()["booked"] == "" and host.pressure == "ok"
    lost = dataclasses.replace(sampler.latest, gpus=(dataclasses.replace(
        gpu, lost=True, total_bytes=0, used_bytes=0, free_bytes=0, unavailable=(("memory", "gone"),)),))
    card.refresh(lost)
    assert card.message().startswith("Lost: gone") and card.pressure == ""
    with pytest.raises(RuntimeError):
        _card(qtbot).refresh(sampler.latest)


def test_refresh_with_a_real_manager_shows_its_bookings(qtbot, sampler, clock, registry):
    from app.core.model_resource_manager import ModelResourceManager

    manager = ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock)
    manager.load("meta-llama/Llama-3.2-1B-Instruct", "int4", "cuda:0")
    card = DeviceCard(manager, "cuda:0")
    qtbot.addWidget(card)
    card.refresh(sampler.latest)
    ledger = next(x for x in manager.ledgers() if x.device == "cuda:0")
    assert ledger.reserved_bytes > 0
    assert card.texts()["booked"] == f"Booked {ledger.reserved_bytes / GiB:.1f} GiB"
    assert card.pressure == manager.pressure("cuda:0").value


def test_screenshot_cards(qtbot, sampler, image_regression):
    """At the narrowest cell (280 px): nothing may be cut off."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    box = QWidget()
    qtbot.addWidget(box)
    layout = QVBoxLayout(box)
    cards = [DeviceCard() for _ in range(4)]
    for c in cards:
        layout.addWidget(c)
    layout.addStretch(1)
    cards[0].set_gpu(sampler.latest.gpus[0])
    cards[0].set_ledger(_ledger(sampler.latest.gpus[0], 5.5, 0.0, "ok"))
    cards[0].set_pressure("ok")
    cards[1].set_gpu(sampler.latest.gpus[1])
    cards[1].set_ledger(_ledger(sampler.latest.gpus[1], 10.6, 10.6, "critical"))
    cards[1].set_pressure("critical")
    cards[2].set_gpu(dataclasses.replace(sampler.latest.gpus[1], index=2, lost=True,
                                         unavailable=(("memory", "simulated GPU loss"),)))
    cards[3].set_backend_unavailable(BackendStatus("nvml", False, "NVIDIA driver not loaded"))
    image_regression.check(png_of(box, (280, 400)), diff_threshold=DIFF_THRESHOLD)
