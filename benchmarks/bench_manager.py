"""Figure for the policy core: one `prepare_model_loading` decision with 10,000 registered models,
64 active reservations and 8 devices.

Run: .venv/bin/python benchmarks/bench_manager.py            (target: median <= 100 us per decision)
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.hardware_profiler import HardwareProfiler  # noqa: E402
from app.core.memory_allocator import AllocatorSettings  # noqa: E402
from app.core.model_registry import ModelMetadata, ModelRegistry, ModelType  # noqa: E402
from app.core.model_resource_manager import ManagerSettings, ModelResourceManager  # noqa: E402


def _reference_us() -> float:
    """A fixed pure-Python workload, timed in the same run: machines here are noisy, so figures are
    also given as a ratio to it."""
    rnd = random.Random(7)
    data = [rnd.random() for _ in range(2000)]
    samples = []
    for _ in range(500):
        start = time.perf_counter()
        sorted(data)
        {f"k{i}": i for i in range(500)}
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> None:
    registry = ModelRegistry(user_store=None)
    for i in range(10_000 - len(registry.models)):
        registry.register_model(ModelMetadata(name=f"model {i}", provider="other", model_type=ModelType.LLM,
                                              size_gb=0.5 + (i % 40) / 10, model_id=f"org/model-{i}"), persist=False)
    t = [0.0]
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate="8xh100", clock=lambda: t[0]),
                                   registry=registry, settings=ManagerSettings(allocator=AllocatorSettings()))
    devices = [f"cuda:{i}" for i in range(8)]
    for i in range(64):  # 64 active reservations spread over the 8 GPUs
        manager.load(f"org/model-{i}", "Q4_K_M", devices[i % 8])
    assert len(manager.memory_allocator.reservations()) == 64
    target = "meta-llama/Llama-3.1-8B-Instruct"
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        manager.prepare_model_loading(target)
        samples.append(time.perf_counter() - start)
        manager.cleanup_model(target)
    med = statistics.median(samples) * 1e6
    p95 = sorted(samples)[int(0.95 * len(samples))] * 1e6
    ref = _reference_us()
    print(f"prepare_model_loading (plan + book) with {len(registry.models):,} models, 64 reservations, 8 GPUs: "
          f"median {med:.1f} us, p95 {p95:.1f} us  (target <= 100 us)")
    print(f"reference (pure-Python kernel: sort 2,000 floats, build a 500-key dict), same run: median {ref:.1f} us; "
          f"prepare_model_loading = {med / ref:.2f} x reference")
    plan_samples = []
    for _ in range(2000):
        start = time.perf_counter()
        manager.plan(target)
        plan_samples.append(time.perf_counter() - start)
    print(f"manager.plan (decision only, no booking): median {statistics.median(plan_samples) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
