"""MemoryGraph: reads the sampler's history; total, reserve, reserved bands; windows; hover."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.sampler import device_key
from app.core.units import GiB
from app.widgets.memory_graph import TIME_WINDOWS, MemoryGraph
from tests.widgets._support import make_sampler, png_of
from tests.widgets.conftest import DIFF_THRESHOLD


def _graph(qtbot, sampler, key, **kw) -> MemoryGraph:
    graph = MemoryGraph(sampler, key, **kw)
    qtbot.addWidget(graph)
    graph.resize(480, 240)
    graph.show()
    qtbot.waitExposed(graph)
    return graph


def test_curve_matches_the_sampler_and_follows_new_samples(qtbot, sampler, clock):
    gpu = sampler.latest.gpus[0]
    graph = _graph(qtbot, sampler, device_key(gpu), reserve_bytes=GiB)
    assert graph.latest_used_bytes() == pytest.approx(gpu.used_bytes)
    assert graph.total_bytes == gpu.total_bytes
    before = graph.latest_used_bytes()
    clock.advance(13.0)
    new = sampler.tick()
    graph.refresh()
    assert graph.latest_used_bytes() == pytest.approx(new.gpus[0].used_bytes)
    assert graph.latest_used_bytes() != before


def test_host_graph_reads_ram(qtbot, sampler):
    graph = _graph(qtbot, sampler, None)
    assert graph.latest_used_bytes() == pytest.approx(sampler.latest.host.used_bytes)
    assert graph.total_bytes == sampler.latest.host.total_bytes


def test_time_window_limits_the_points(qtbot, sampler):
    graph = _graph(qtbot, sampler, None)
    graph.set_window(TIME_WINDOWS["1 min"])
    x, _ = graph._used.getData()
    assert x.min() >= -60 and len(x) == 61
    graph.set_window(TIME_WINDOWS["10 min"])
    x, _ = graph._used.getData()
    assert len(x) == 120  # all the history there is
    with pytest.raises(ValueError):
        graph.set_window(0)


def test_hidden_graph_does_not_redraw_until_shown(qtbot, sampler, clock):
    graph = _graph(qtbot, sampler, None)
    graph.hide()
    old = graph.latest_used_bytes()
    clock.advance(20.0)
    sampler.tick()
    graph.refresh()
    assert graph.latest_used_bytes() == old
    graph.show()
    assert graph.latest_used_bytes() == pytest.approx(sampler.latest.host.used_bytes)


def test_reserved_bands_stack_from_the_bottom_with_labels(qtbot, sampler):
    graph = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]))
    graph.set_reserved({"Ministral 8B Q4_K_M": int(5.3 * GiB), "SD 1.5": int(1.7 * GiB), "empty": 0})
    assert graph.reserved == {"Ministral 8B Q4_K_M": int(5.3 * GiB), "SD 1.5": int(1.7 * GiB)}
    (_, c1, l1), (_, c2, l2) = graph._band_items
    assert c1.opts["fillLevel"] == 0.0 and c1.getData()[1][0] == pytest.approx(5.3)
    assert c2.opts["fillLevel"] == pytest.approx(5.3) and c2.getData()[1][0] == pytest.approx(7.0)
    assert "Ministral 8B Q4_K_M 5.3 GiB" in l1.toPlainText() and "SD 1.5 1.7 GiB" in l2.toPlainText()
    items = len(graph.plot_widget().getPlotItem().items)
    graph.set_reserved({"SD 1.5": int(1.7 * GiB)})
    assert len(graph._band_items) == 1
    assert len(graph.plot_widget().getPlotItem().items) == items - 2
    graph.set_reserved({})
    assert graph._band_items == []


def test_hover_readout_says_time_and_gib(qtbot, sampler):
    graph = _graph(qtbot, sampler, None)
    text = graph.readout_at(-30.2)
    _, used = sampler.window(None, "ram_used_bytes", 31)
    assert "(-30 s)" in text and f"{used[0] / GiB:.2f} GiB used" in text
    vb = graph.plot_widget().getPlotItem().getViewBox()
    with qtbot.waitSignal(graph.sigHoverChanged) as blocker:
        graph._on_mouse_moved(vb.mapViewToScene(vb.mapToView(vb.boundingRect().center())))
    assert "GiB used" in blocker.args[0]
    graph.leaveEvent(None)
    assert graph._hover_text == ""


def test_update_uses_one_curve_not_new_items(qtbot, sampler, clock):
    graph = _graph(qtbot, sampler, None)
    items = list(graph.plot_widget().getPlotItem().items)
    for _ in range(5):
        clock.advance(1.0)
        sampler.tick()
        graph.refresh()
    assert graph.plot_widget().getPlotItem().items == items


def test_lost_gpu_leaves_a_gap(qtbot, clock):
    sampler = make_sampler(clock, "rtx4090", samples=10)
    backend = sampler._profiler.backends[0]
    backend.set_lost(0)
    for _ in range(3):
        clock.advance(1.0)
        sampler.tick()
    graph = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]))
    _, y = graph._used.getData()
    assert np.isnan(y[-1]) and graph.total_bytes == 24 * GiB


def test_screenshot_gpu_graph_with_reserved_bands(qtbot, sampler, image_regression):
    graph = MemoryGraph(sampler, device_key(sampler.latest.gpus[1]), reserve_bytes=GiB, window_s=60)
    qtbot.addWidget(graph)
    graph.set_reserved({"Ministral 8B": int(5.34 * GiB), "SD 1.5": int(1.72 * GiB)})
    image_regression.check(png_of(graph, (480, 240)), diff_threshold=DIFF_THRESHOLD)


def test_peak_decimation_keeps_extremes_and_gaps():
    from app.widgets.memory_graph import _peak_decimate

    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 500.0)
    y[5000] = 7.0  # a one-sample spike must survive
    y[60_000:61_000] = np.nan  # a lost GPU: a gap must stay a gap
    dx, dy = _peak_decimate(x, y, 400)
    assert dx.size == dy.size == 1600
    assert np.nanmax(dy) == 7.0
    assert np.isnan(dy).any()
    assert np.nanmin(dy) == pytest.approx(np.nanmin(y), abs=1e-3)
    small_x, small_y = _peak_decimate(x[:500], y[:500], 400)
    assert small_x is not None and small_x.size == 500  # short windows are drawn as they are
