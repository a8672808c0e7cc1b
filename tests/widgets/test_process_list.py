"""ProcessList: every process on every GPU from the profile the sampler took; ModelDeck's own named."""

from __future__ import annotations

import dataclasses
import os

import pytest

from app.core.hardware.snapshot import GpuProcess
from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader
from app.core.reports import gpu_processes, status_document
from app.core.units import GiB
from app.widgets.process_list import COLUMNS, ProcessList
from tests.widgets._support import png_of
from tests.widgets.conftest import DIFF_THRESHOLD

LLAMA_1B = "meta-llama/Llama-3.2-1B-Instruct"


@pytest.fixture
def manager(sampler, registry, clock):
    return ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock,
                                loader=SimulatedLoader.for_profiler(sampler._profiler))


def _cells(view: ProcessList) -> list[list[str]]:
    t = view.table
    return [[t.item(r, c).text() for c in range(t.columnCount())] for r in range(t.rowCount())]


def _shown(qtbot, view: ProcessList) -> ProcessList:
    qtbot.addWidget(view)
    view.resize(640, 300)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_lists_every_process_with_its_memory_and_names_ours(qtbot, sampler, manager, clock):
    manager.load(LLAMA_1B, "int4", "cuda:0")
    clock.advance(1.0)
    profile = sampler.tick()
    view = _shown(qtbot, ProcessList(manager))
    view.refresh(profile)
    expected = [(g.device_id, p.pid, p.used_bytes) for g in profile.gpus for p in g.processes]
    assert sorted((r.device, r.pid, r.used_bytes) for r in view.rows()) == sorted(expected)
    assert [view.table.horizontalHeaderItem(c).text() for c in range(len(COLUMNS))] == list(COLUMNS)
    ours = [row for row in _cells(view) if row[1] == str(os.getpid())]
    assert len(ours) == 1 and ours[0][0] == "cuda:0" and "RTX 4090" in view.table.item(0, 0).toolTip()
    assert ours[0][2] == "ModelDeck (this app): Llama 3.2 1B Instruct"
    mine = next(p for p in profile.gpus[0].processes if p.pid == os.getpid())
    assert ours[0][3] == f"{mine.used_bytes / GiB:.2f} GiB"
    assert "ModelDeck holds" in view.summary.text()


def test_largest_first_per_gpu_and_unknown_memory_says_why(qtbot, sampler):
    profile = sampler.latest
    gpu = dataclasses.replace(profile.gpus[0], processes=(
        GpuProcess(10, "small", GiB), GpuProcess(11, "big", 5 * GiB), GpuProcess(12, "wddm", None)))
    view = _shown(qtbot, ProcessList(own_pids=()))
    view.refresh(dataclasses.replace(profile, gpus=(gpu,)))
    assert [row[2] for row in _cells(view)] == ["big", "small", "wddm"]
    assert _cells(view)[2][3] == "n/a" and "does not say" in view.table.item(2, 3).toolTip()


def test_hidden_list_fills_when_shown_and_no_gpu_says_so(qtbot, sampler):
    view = ProcessList(own_pids=())
    qtbot.addWidget(view)
    view.refresh(sampler.latest)
    assert view.rows() == ()  # hidden: nothing drawn yet
    view.show()
    qtbot.waitExposed(view)
    assert len(view.rows()) == sum(len(g.processes) for g in sampler.latest.gpus) > 0
    view.refresh(dataclasses.replace(sampler.latest, gpus=()))
    assert view.rows() == () and view.table.rowCount() == 0 and "No GPU" in view.summary.text()


def test_cli_status_and_the_list_share_one_query(sampler):
    """status --json's process entries are the rows of gpu_processes (the same query)."""
    doc = status_document(sampler.latest)
    from_doc = sorted((d["device_id"], p["pid"], p["used_bytes"]) for d in doc["devices"] for p in d["processes"])
    rows = gpu_processes(sampler.latest)
    assert from_doc == sorted((r.device, r.pid, r.used_bytes or 0) for r in rows)


def test_screenshot_process_list(qtbot, sampler, registry, clock, image_regression):
    """ModelDeck's row with a fixed pid (the real one changes per run) and the model it runs there."""
    manager = ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock)
    manager.load(LLAMA_1B, "int4", "cuda:1")
    profile = sampler.latest
    gpu = profile.gpus[1]
    gpu = dataclasses.replace(gpu, processes=(*gpu.processes, GpuProcess(4242, "python3", int(1.81 * GiB))))
    view = ProcessList(manager, own_pids=(4242,))
    qtbot.addWidget(view)
    view.refresh(dataclasses.replace(profile, gpus=(profile.gpus[0], gpu)))
    image_regression.check(png_of(view, (640, 240)), diff_threshold=DIFF_THRESHOLD)
