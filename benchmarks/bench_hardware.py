"""Figures for the hardware layer: one sampling tick over 8 simulated GPUs, and `import app.core`.

Run: .venv/bin/python benchmarks/bench_hardware.py
Targets (issue: foundation): tick <= 1 ms; import app.core <= 150 ms, without Qt.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_tick(n: int = 2000) -> None:
    from app.core.hardware.simulated import SimulatedBackend
    from app.core.hardware_profiler import HardwareProfiler
    from app.core.sampler import Sampler

    t = [0.0]
    clock = lambda: t[0]  # noqa: E731
    profiler = HardwareProfiler(backends=[SimulatedBackend.from_spec("8xrtx4090", clock=clock)], clock=clock)
    sampler = Sampler(profiler, clock=clock)  # default capacity: 24 h at 1 Hz
    sampler.sampled.connect(lambda p: None)
    for _ in range(50):  # warm up
        t[0] += 1
        sampler.tick()
    samples = []
    for _ in range(n):
        t[0] += 1
        start = time.perf_counter()
        sampler.tick()
        samples.append(time.perf_counter() - start)
    gpu_only = []
    backend = profiler.backends[0]
    for _ in range(n):
        start = time.perf_counter()
        backend.read()
        gpu_only.append(time.perf_counter() - start)
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    p95 = lambda xs: sorted(xs)[int(0.95 * len(xs))] * 1e3  # noqa: E731
    print(f"sampling tick, 8 simulated GPUs + host (psutil), ring buffers 86,400 deep: "
          f"median {ms(samples):.3f} ms, p95 {p95(samples):.3f} ms  (target <= 1 ms)")
    print(f"  of which the 8-GPU simulated read: median {ms(gpu_only):.3f} ms")


def bench_import(runs: int = 15) -> None:
    code = (
        "import time, sys; t = time.perf_counter(); import app.core; a = time.perf_counter() - t; "
        "from app.core import HardwareProfiler; b = time.perf_counter() - t; "
        "import app.core.sampler; c = time.perf_counter() - t; "
        "gui = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'qasync', 'shiboken6')]; "
        "print(a, b, c, len(gui))"
    )
    rows = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        a, b, c, gui = out.stdout.split()
        rows.append((float(a), float(b), float(c), int(gui)))
    med = lambda i: statistics.median(r[i] for r in rows) * 1e3  # noqa: E731
    print(f"import app.core: median {med(0):.1f} ms  (target <= 150 ms); GUI modules loaded: {max(r[3] for r in rows)}")
    print(f"  + HardwareProfiler: {med(1):.1f} ms cumulative; + sampler (numpy): {med(2):.1f} ms cumulative")


if __name__ == "__main__":
    bench_tick()
    bench_import()
