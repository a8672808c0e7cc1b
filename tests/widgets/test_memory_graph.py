"""MemoryGraph: draws the profile sent to it with the sampler's history; total, reserve, booking bands as
history (the manager's or its own); windows; hover."""

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


def _advance(sampler, clock, graph, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(1.0)
        graph.refresh(sampler.tick())


def _band(graph, key):
    """A band's curve in seconds before the newest sample (curves are built once and moved left)."""
    curve = graph._bands_view.curves[key]
    x, y = curve.getData()
    return x + curve.pos().x(), y


def test_bands_are_history_and_the_past_stays_when_a_model_goes(qtbot, sampler, clock):
    graph = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]), window_s=60)
    graph.set_reserved({"Ministral 8B": int(5.3 * GiB), "empty": 0})
    _advance(sampler, clock, graph, 20)
    graph.set_reserved({"Ministral 8B": int(5.3 * GiB), "SD 1.5": int(1.7 * GiB)})
    _advance(sampler, clock, graph, 20)
    graph.set_reserved({"SD 1.5": int(1.7 * GiB)})  # Ministral expired
    _advance(sampler, clock, graph, 10)
    assert graph.reserved == {"SD 1.5": int(1.7 * GiB)}
    stacked = graph._bands_view.stacked
    now = graph._bands_view.now
    assert stacked.keys == ("Ministral 8B", "SD 1.5")
    assert stacked.at(now - 45) == {"Ministral 8B": int(5.3 * GiB)}  # before SD 1.5 was booked
    assert stacked.at(now - 20) == {"Ministral 8B": int(5.3 * GiB), "SD 1.5": int(1.7 * GiB)}
    assert stacked.at(now - 5) == {"SD 1.5": int(1.7 * GiB)}  # Ministral's past is still drawn
    x, y = _band(graph, "SD 1.5")
    assert x[0] <= -60 and x[-1] >= 0  # built over the window and a little beyond, then moved
    # SD 1.5 sits on Ministral while both are booked, on the floor once it is alone.
    assert y[np.searchsorted(x, -20)] == pytest.approx(7.0) and y[-1] == pytest.approx(1.7)
    assert graph._bands_view.labels["SD 1.5"].toPlainText() == "SD 1.5 1.7 GiB"
    assert not graph._bands_view.labels["SD 1.5"].isVisible()  # 1.7 of 24 GiB: too thin for text here
    assert graph._bands_view.labels["Ministral 8B"].isVisible()
    assert "7.0 GiB booked\n  SD 1.5 1.7 GiB\n  Ministral 8B 5.3 GiB" in graph.readout_at(-20)
    assert "booked" not in graph.readout_at(-59)
    label = graph._bands_view.labels["Ministral 8B"]
    before = label.pos().x()
    _advance(sampler, clock, graph, 5)  # moved left with the curves, not rebuilt
    assert label.pos().x() == pytest.approx(before - 5)
    _advance(sampler, clock, graph, 60)  # Ministral's interval leaves the 60 s window
    assert graph._bands_view.stacked.keys == ("SD 1.5",) and list(graph._bands_view.curves) == ["SD 1.5"]


def test_bands_follow_the_managers_booking_history(qtbot, sampler, clock, registry):
    from app.core.model_resource_manager import ManagerSettings, ModelResourceManager

    manager = ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock,
                                   settings=ManagerSettings(keep_alive_s=30))
    graph = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]), manager=manager, device="cuda:0",
                   window_s=600)
    manager.load("meta-llama/Llama-3.2-1B-Instruct", "int4", "cuda:0")
    graph.set_reserved({b.label: b.bytes for b in manager.bookings("cuda:0")})
    _advance(sampler, clock, graph, 40)
    manager.tick()  # idle past keep-alive: unloaded
    graph.set_reserved({b.label: b.bytes for b in manager.bookings("cuda:0")})
    _advance(sampler, clock, graph, 20)
    assert graph.reserved == {}
    keys = {i.key for i in graph.booking_history()}
    assert "meta-llama/Llama-3.2-1B-Instruct" in keys
    booked = graph._bands_view.stacked.at(graph._bands_view.now - 30)
    assert booked.get("meta-llama/Llama-3.2-1B-Instruct", 0) > 0
    assert graph._bands_view.stacked.at(graph._bands_view.now - 5) == {}
    # A reserve changed at runtime (the settings dialog) is drawn once the manager announces it.
    import dataclasses

    settings = manager.settings
    manager.update_settings(dataclasses.replace(settings, allocator=dataclasses.replace(
        settings.allocator, gpu_reserve_bytes=3 * GiB)))
    graph.set_reserved({b.label: b.bytes for b in manager.bookings("cuda:0")})
    _, reserve = graph._reserve.getData()
    assert reserve[0] == pytest.approx(graph.total_bytes / GiB - 3)
    # A new graph (the panel rebuilt its cells) starts with the past already there.
    again = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]), manager=manager, device="cuda:0")
    assert again.booking_history() == graph.booking_history()


def test_a_changed_booking_is_a_step(qtbot, sampler, clock):
    graph = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]), window_s=60)
    graph.set_reserved({"Ministral 8B": 6 * GiB})
    _advance(sampler, clock, graph, 30)
    graph.set_reserved({"Ministral 8B": 5 * GiB})  # measured replaces the estimate
    _advance(sampler, clock, graph, 10)
    x, y = _band(graph, "Ministral 8B")
    assert set(np.round(y, 3)) == {0.0, 6.0, 5.0}  # not booked before the window's first 20 s
    assert y[np.searchsorted(x, -35)] == pytest.approx(6.0) and y[-1] == pytest.approx(5.0)


def test_graph_draws_the_profile_it_is_sent(qtbot, sampler, clock):
    """refresh(profile) uses that profile's total: the sampler's ``latest`` is not pulled again."""
    import dataclasses

    graph = _graph(qtbot, sampler, device_key(sampler.latest.gpus[0]), window_s=60)  # redraws every sample
    clock.advance(1.0)
    profile = sampler.tick()
    bigger = dataclasses.replace(profile, gpus=(dataclasses.replace(profile.gpus[0], total_bytes=48 * GiB),
                                                *profile.gpus[1:]))
    graph.refresh(bigger)
    assert graph.total_bytes == 48 * GiB


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
    assert graph._hover.text == ""


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


def test_screenshot_gpu_graph_with_reserved_bands(qtbot, sampler, clock, image_regression):
    """Ministral booked for the whole minute; SD 1.5 booked 40 s ago and gone 10 s ago."""
    graph = MemoryGraph(sampler, device_key(sampler.latest.gpus[1]), reserve_bytes=GiB, window_s=60)
    qtbot.addWidget(graph)
    graph.set_reserved({"Ministral 8B": int(5.34 * GiB)})
    _advance(sampler, clock, graph, 20)
    graph.set_reserved({"Ministral 8B": int(5.34 * GiB), "SD 1.5": int(1.72 * GiB)})
    _advance(sampler, clock, graph, 30)
    graph.set_reserved({"Ministral 8B": int(5.34 * GiB)})
    _advance(sampler, clock, graph, 10)
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


def test_a_window_longer_than_the_history_spans_the_history_in_whole_minutes(qtbot, clock):
    sampler = make_sampler(clock, "rtx3060", samples=90)  # a minute and a half since start
    key = device_key(sampler.latest.gpus[0])
    graph = _graph(qtbot, sampler, key, window_s=TIME_WINDOWS["10 min"])
    graph.refresh(sampler.latest)
    assert graph.shown_s == 120  # not ten minutes with the curve in the last sixth
    view_range = graph.plot_widget().getPlotItem().getViewBox().viewRange()[0]
    assert view_range[0] == pytest.approx(-120, abs=3)
    for _ in range(600):
        clock.advance(1.0)
        sampler.tick()
    graph.refresh(sampler.latest)
    assert graph.shown_s == 600  # the history fills the window: the window it is
    graph.set_window(TIME_WINDOWS["24 h"])
    assert graph.shown_s == 720  # 11.5 min of history, in whole minutes
