"""Figures for the dashboard (offscreen, 4 simulated GPUs). Each figure runs in its own process.

Run: .venv/bin/python benchmarks/bench_dashboard.py [--quick] [--only idle,repaint,start,rss]
Targets (issue 5): idle CPU <= 1% of one core at 1 Hz; repaint with 24 h of 1 Hz history on
4 GPUs <= 6 ms median; cold start to first painted frame <= 1.5 s; RSS after an hour <= 180 MB.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEC = "4xrtx4090"


def _app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.shell import _setup_app, apply_color_scheme

    app = QApplication.instance() or QApplication([])
    _setup_app(app)
    apply_color_scheme(app)
    return app


def _window(sampler, registry, size=(1280, 800)):
    from PySide6.QtWidgets import QApplication

    from app.shell import MainWindow

    window = MainWindow(sampler, registry)
    window.resize(*size)
    window.show()
    QApplication.processEvents()
    return window


def bench_idle(seconds: float) -> dict:
    """The real app's loop: a sampler thread at 1 Hz, the window shown, nothing else happening."""
    from PySide6.QtCore import QTimer

    from app.core.model_registry import ModelRegistry
    from app.core.sampler import Sampler
    from app.demo import demo_profiler

    app = _app()
    sampler = Sampler(demo_profiler(SPEC, time.time), interval_s=1.0)
    sampler.tick()
    window = _window(sampler, ModelRegistry(user_store=None))
    sampler.start()
    warm = 3.0
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = time.process_time()
        marks[name + "_wall"] = time.perf_counter()

    QTimer.singleShot(int(warm * 1000), lambda: mark("start"))
    QTimer.singleShot(int((warm + seconds) * 1000), lambda: (mark("end"), app.quit()))
    app.exec()
    sampler.stop()
    window.close()
    cpu = marks["end"] - marks["start"]
    wall = marks["end_wall"] - marks["start_wall"]
    return {"idle_cpu_percent_of_one_core": round(100 * cpu / wall, 2), "seconds": round(wall, 1),
            "window": "10 min (default)", "gpus": 4}


def bench_repaint(frames: int) -> dict:
    """24 h of 1 Hz history on 4 GPUs, the 24 h window; one frame = new data into a graph + paint."""
    from PySide6.QtWidgets import QApplication

    from app.core.model_registry import ModelRegistry
    from app.core.sampler import Sampler, device_key
    from app.demo import ManualClock, demo_profiler

    app = _app()
    clock = ManualClock()
    sampler = Sampler(demo_profiler(SPEC, clock), interval_s=1.0, clock=clock)
    t0 = time.perf_counter()
    for _ in range(86_400):
        sampler.tick()
        clock.advance(1.0)
    fill_s = time.perf_counter() - t0
    window = _window(sampler, ModelRegistry(user_store=None), size=(1600, 1000))
    window.panel.set_window(86_400)
    graphs = [window.panel.graphs()[device_key(g)] for g in sampler.latest.gpus]
    for g in graphs:
        g.plot_widget().resize(1200, 400)
    QApplication.processEvents()
    per_graph, per_frame = [], []
    for _ in range(frames):
        clock.advance(1.0)
        sampler.tick()
        frame = time.perf_counter()
        for g in graphs:
            start = time.perf_counter()
            g._redraw(force=True)
            g.plot_widget().grab()
            per_graph.append(time.perf_counter() - start)
        per_frame.append(time.perf_counter() - frame)
    window.close()
    app.processEvents()
    x, _ = graphs[0]._used.getData()
    return {"repaint_median_ms_per_graph": round(1000 * statistics.median(per_graph), 2),
            "repaint_median_ms_all_4_gpus": round(1000 * statistics.median(per_frame), 2),
            "points_per_graph": int(len(x)), "plot_size": "1200x400", "fill_86400_ticks_s": round(fill_s, 1)}


COLD_START = r"""
import os, sys, time
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, %r)
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication
from app.shell import MainWindow, _setup_app, apply_color_scheme
from app.core.model_registry import ModelRegistry
from app.core.sampler import Sampler
from app.core.hardware_profiler import HardwareProfiler
app = QApplication([])
_setup_app(app); apply_color_scheme(app)
sampler = Sampler(HardwareProfiler(simulate=%r), interval_s=1.0)
sampler.tick()
window = MainWindow(sampler, ModelRegistry(user_store=None))
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


def bench_start(runs: int) -> dict:
    """Process start (interpreter included) to the main window's first paint event."""
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
    return {"cold_start_median_s": round(statistics.median(times), 3), "runs": runs,
            "min_s": round(min(times), 3)}


def bench_rss(samples: int) -> dict:
    """An hour of 1 Hz samples (time-compressed) delivered through the bridge to a shown window."""
    import psutil
    from PySide6.QtWidgets import QApplication

    from app.core.model_registry import ModelRegistry
    from app.core.sampler import Sampler
    from app.demo import ManualClock, demo_profiler

    app = _app()
    clock = ManualClock()
    sampler = Sampler(demo_profiler(SPEC, clock), interval_s=1.0, clock=clock)
    sampler.tick()
    window = _window(sampler, ModelRegistry(user_store=None))
    for _ in range(samples):
        clock.advance(1.0)
        sampler.tick()
        QApplication.processEvents()
    rss = psutil.Process().memory_info().rss
    window.close()
    app.processEvents()
    return {"rss_mb_after_hour": round(rss / 1e6, 1), "samples": samples, "gpus": 4}


BENCHES = {"idle": bench_idle, "repaint": bench_repaint, "start": bench_start, "rss": bench_rss}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs (idle 10 s, fewer frames)")
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = {"idle": 10.0 if args.quick else 60.0, "repaint": 15 if args.quick else 40,
             "start": 3 if args.quick else 5, "rss": 3600}
    if args.child:
        print(json.dumps(BENCHES[args.child](sizes[args.child])))
        return
    targets = {"idle": "<= 1%", "repaint": "<= 6 ms median", "start": "<= 1.5 s", "rss": "<= 180 MB"}
    for name in args.only.split(","):
        cmd = [sys.executable, __file__, "--child", name] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{name}: FAILED\n{out.stderr[-2000:]}")
            continue
        print(f"{name:<8} (target {targets[name]}): {lines[-1]}")


if __name__ == "__main__":
    main()
