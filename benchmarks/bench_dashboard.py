"""Figures for the dashboard (offscreen, 4 simulated GPUs, a manager whose bookings change). Each figure
runs in its own process and comes with a ratio to a reference workload timed in that same process,
so a figure from a busy or slow machine can still be judged.

Run: .venv/bin/python benchmarks/bench_dashboard.py [--quick] [--only idle,repaint,start,rss]
Targets (issue 5): idle CPU <= 1% of one core at 1 Hz (a dashboard left open: its 10-minute window
full; the first minute after a start is reported beside it); repaint with 24 h of 1 Hz history on
4 GPUs <= 6 ms median per graph; cold start to first painted frame <= 1.5 s; RSS after an hour
<= 180 MB. The booking bands are history (models booked and expiring over the day or the hour).

The reference for the time figures is :func:`_reference_ms` (numpy and pure Python, fixed size);
the reference for RSS is a bare process with Qt, pyqtgraph and numpy loaded and one window shown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEC = "4xrtx4090"
#: Small models that load on any of the GPUs, cycled so bands start and end over the run.
CHURN = (("meta-llama/Llama-3.2-1B-Instruct", "int4"), ("meta-llama/Llama-3.2-3B-Instruct", "int4"),
         ("mistralai/Ministral-8B-Instruct-2410", "Q4_K_M"), ("openai/whisper-small", "int8"))


def _reference_ms() -> float:
    """A fixed CPU workload (what a frame does: numpy min/max over 86,400 points, then Python work),
    median of 30 runs, in ms."""
    import numpy as np

    y = np.sin(np.arange(86_400, dtype=float) / 500.0)
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        bins = y.reshape(2400, 36)
        np.fmax.reduce(bins, axis=1), np.fmin.reduce(bins, axis=1)
        sorted(f"{v:.3f}" for v in y[:20_000:4])
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def _app() -> Any:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.shell import _setup_app, apply_color_scheme

    app = QApplication.instance() or QApplication([])
    _setup_app(app)
    apply_color_scheme(app)
    return app


def _stack(clock: Any) -> tuple[Any, Any, Any]:
    """Sampler, registry and manager as the shell makes them (the manager ticks on each sample)."""
    from app.core.model_registry import ModelRegistry
    from app.core.model_resource_manager import ManagerSettings, ModelResourceManager, SimulatedLoader
    from app.core.sampler import Sampler
    from app.demo import demo_profiler

    profiler = demo_profiler(SPEC, clock)
    registry = ModelRegistry(user_store=None)
    manager = ModelResourceManager(profiler=profiler, registry=registry, clock=clock,
                                   loader=SimulatedLoader.for_profiler(profiler),
                                   settings=ManagerSettings(keep_alive_s=600))
    sampler = Sampler(profiler, interval_s=1.0, clock=clock)
    sampler.sampled.connect(manager.tick)
    return sampler, registry, manager


def _churn(manager: Any, step: int) -> None:
    """Load the next model of :data:`CHURN` on the next GPU; older ones expire by keep-alive."""
    model_id, level = CHURN[step % len(CHURN)]
    try:
        manager.unload(model_id, reason="benchmark churn")
    except Exception:  # noqa: BLE001 - not loaded (expired already)
        pass
    manager.load(model_id, level, f"cuda:{step % 4}")


def _window(sampler: Any, registry: Any, manager: Any, size: tuple[int, int] = (1280, 800)) -> Any:
    from PySide6.QtWidgets import QApplication

    from app.shell import MainWindow

    window = MainWindow(sampler, registry, manager=manager)
    window.resize(*size)
    window.show()
    QApplication.processEvents()
    return window


def _band_count(window: Any) -> int:
    return sum(len(g.booking_history()) for g in window.panel.graphs().values())


class _ShiftedClock:
    """Wall-clock time ``offset`` seconds off: history can be filled in the past, then run live."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


def bench_idle(seconds: float, history_s: int = 660) -> dict[str, Any]:
    """The real app's loop: a sampler thread at 1 Hz, two models loaded, the window shown, nothing else.

    ``history_s`` seconds of 1 Hz samples exist before the window opens (660: the default 10-minute
    window is full, the steady state of a dashboard left open; 0: the first minute after a start,
    while the graphs span the short history they have and redraw at every sample)."""
    from PySide6.QtCore import QTimer

    app = _app()
    clock = _ShiftedClock(-float(history_s))
    sampler, registry, manager = _stack(clock)
    for _ in range(history_s):
        sampler.tick()
        clock.offset += 1.0
    clock.offset = 0.0
    sampler.tick()
    for step in range(2):
        _churn(manager, step)
    window = _window(sampler, registry, manager)
    sampler.start()
    warm = 3.0
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = time.process_time()
        marks[name + "_wall"] = time.perf_counter()

    QTimer.singleShot(int(warm * 1000), lambda: mark("start"))
    QTimer.singleShot(int((warm + seconds) * 1000), lambda: (mark("end"), app.exit(0)))  # quit() asks first
    app.exec()
    sampler.stop()
    window.close()
    cpu = marks["end"] - marks["start"]
    wall = marks["end_wall"] - marks["start_wall"]
    ref = _reference_ms()
    cpu_ms_per_s = 1000 * cpu / wall
    return {"idle_cpu_percent_of_one_core": round(100 * cpu / wall, 2), "cpu_ms_per_s": round(cpu_ms_per_s, 2),
            "reference_ms": round(ref, 2), "ratio": round(cpu_ms_per_s / ref, 2),
            "seconds": round(wall, 1), "window": "10 min (default)", "history_s": history_s, "gpus": 4}


def bench_idle_fresh(seconds: float) -> dict[str, Any]:
    """The same, in the first minute after a start (no history yet)."""
    return bench_idle(seconds, history_s=0)


def bench_repaint(frames: int) -> dict[str, Any]:
    """24 h of 1 Hz history on 4 GPUs with a day of bookings, the 24 h window; one frame = the newest
    profile pushed into a graph (a forced redraw) + its paint."""
    from PySide6.QtWidgets import QApplication

    from app.core.sampler import device_key
    from app.demo import ManualClock

    _app()
    clock = ManualClock()
    sampler, registry, manager = _stack(clock)
    sampler.tick()
    window = _window(sampler, registry, manager, size=(1600, 1000))
    window.hide()  # the cells exist; hidden graphs only keep the profile while the day is filled in
    t0 = time.perf_counter()
    for i in range(86_400):
        clock.advance(1.0)
        sampler.tick()
        if i % 1800 == 0:
            _churn(manager, i // 1800)
        if i % 600 == 0:
            QApplication.processEvents()
    fill_s = time.perf_counter() - t0
    window.show()
    window.panel.set_window(86_400)
    graphs = [window.panel.graphs()[device_key(g)] for g in sampler.latest.gpus]
    for g in graphs:
        g.plot_widget().resize(1200, 400)
    QApplication.processEvents()
    per_graph, per_frame = [], []
    for _ in range(frames):
        clock.advance(1.0)
        profile = sampler.tick()
        frame = time.perf_counter()
        for g in graphs:
            start = time.perf_counter()
            g.refresh(profile)
            g._redraw(force=True)
            g.plot_widget().grab()
            per_graph.append(time.perf_counter() - start)
        per_frame.append(time.perf_counter() - frame)
    bands = _band_count(window)
    window.close()
    QApplication.processEvents()
    x, _ = graphs[0]._used.getData()
    ref = _reference_ms()
    median_ms = 1000 * statistics.median(per_graph)
    return {"repaint_median_ms_per_graph": round(median_ms, 2),
            "repaint_median_ms_all_4_gpus": round(1000 * statistics.median(per_frame), 2),
            "reference_ms": round(ref, 2), "ratio": round(median_ms / ref, 2),
            "points_per_graph": int(len(x)), "booking_intervals_drawn": bands, "plot_size": "1200x400",
            "fill_86400_ticks_s": round(fill_s, 1)}


COLD_START = r"""
import os, sys, time
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, %r)
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication
from app.shell import MainWindow, _setup_app, apply_color_scheme
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader
from app.core.sampler import Sampler
from app.core.hardware_profiler import HardwareProfiler
app = QApplication([])
_setup_app(app); apply_color_scheme(app)
profiler = HardwareProfiler(simulate=%r)
registry = ModelRegistry(user_store=None)
manager = ModelResourceManager(profiler=profiler, registry=registry, loader=SimulatedLoader.for_profiler(profiler))
sampler = Sampler(profiler, interval_s=1.0)
sampler.sampled.connect(manager.tick)
sampler.tick()
window = MainWindow(sampler, registry, manager=manager)
window.resize(1280, 800)
class First(QObject):
    def eventFilter(self, obj, ev):
        if ev.type() == QEvent.Type.Paint:
            print("painted", flush=True)
            os._exit(0)
        return False
f = First(); window.installEventFilter(f)
window.show()
app.exec()
"""


def bench_start(runs: int) -> dict[str, Any]:
    """Process start (interpreter included) to the main window's first paint event, as the shell starts."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    code = COLD_START % (str(ROOT), SPEC)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        elapsed = time.perf_counter() - start
        if "painted" not in out.stdout:
            raise RuntimeError(out.stderr[-2000:])
        times.append(elapsed)
    ref = _reference_ms()
    median = statistics.median(times)
    return {"cold_start_median_s": round(median, 3), "runs": runs, "min_s": round(min(times), 3),
            "reference_ms": round(ref, 2), "ratio": round(1000 * median / ref, 1)}


BARE_QT = r"""
import os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
import numpy, psutil, pyqtgraph
from PySide6.QtWidgets import QApplication, QWidget
app = QApplication([])
w = QWidget(); w.resize(1280, 800); w.show(); app.processEvents()
print(psutil.Process().memory_info().rss)
"""


def bench_rss(samples: int) -> dict[str, Any]:
    """An hour of 1 Hz samples (time-compressed, on a manual clock) delivered through the bridge to a
    shown window, with models booked and expiring every few minutes (history bands)."""
    import psutil
    from PySide6.QtWidgets import QApplication

    from app.demo import ManualClock

    app = _app()
    clock = ManualClock()
    sampler, registry, manager = _stack(clock)
    sampler.tick()
    window = _window(sampler, registry, manager)
    for i in range(samples):
        clock.advance(1.0)
        sampler.tick()
        if i % 300 == 0:
            _churn(manager, i // 300)
        QApplication.processEvents()
    rss = psutil.Process().memory_info().rss
    bands = _band_count(window)
    window.close()
    app.processEvents()
    out = subprocess.run([sys.executable, "-c", BARE_QT], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    bare = int(out.stdout.split()[-1])
    return {"rss_mb_after_hour": round(rss / 1e6, 1), "samples": samples, "gpus": 4,
            "booking_intervals_drawn": bands, "reference_bare_qt_mb": round(bare / 1e6, 1),
            "ratio": round(rss / bare, 2)}


BENCHES = {"idle": bench_idle, "idle-fresh": bench_idle_fresh, "repaint": bench_repaint, "start": bench_start,
           "rss": bench_rss}
TARGETS = {"idle": "<= 1%", "idle-fresh": "none: the first minute", "repaint": "<= 6 ms median per graph",
           "start": "<= 1.5 s", "rss": "<= 180 MB"}


def _summary(name: str, r: dict[str, Any]) -> str:
    if name.startswith("idle"):
        return (f"{r['idle_cpu_percent_of_one_core']}% of a core ({r['cpu_ms_per_s']} ms CPU a second; "
                f"reference {r['reference_ms']} ms, {r['ratio']}x)")
    if name == "repaint":
        return (f"{r['repaint_median_ms_per_graph']} ms a graph, {r['repaint_median_ms_all_4_gpus']} ms all 4 "
                f"(reference {r['reference_ms']} ms, {r['ratio']}x; {r['booking_intervals_drawn']} booking intervals)")
    if name == "start":
        return f"{r['cold_start_median_s']} s (reference {r['reference_ms']} ms, {r['ratio']}x)"
    return (f"{r['rss_mb_after_hour']} MB (bare Qt process {r['reference_bare_qt_mb']} MB, {r['ratio']}x; "
            f"{r['booking_intervals_drawn']} booking intervals)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs (idle 10 s, fewer frames)")
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    idle_s = 10.0 if args.quick else 60.0
    sizes = {"idle": idle_s, "idle-fresh": idle_s, "repaint": 15 if args.quick else 40,
             "start": 3 if args.quick else 5, "rss": 3600}
    if args.child:
        print(json.dumps(BENCHES[args.child](sizes[args.child])))
        return
    for name in args.only.split(","):
        cmd = [sys.executable, __file__, "--child", name] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{name}: FAILED\n{out.stderr[-2000:]}")
            continue
        print(f"{name:<10} (target {TARGETS[name]}): {_summary(name, json.loads(lines[-1]))}")
        print(f"         {lines[-1]}")


if __name__ == "__main__":
    main()
