"""Figures for estimation and the registry: `plan` for one model, search over 10,000 entries.

Run: .venv/bin/python benchmarks/bench_registry.py
Targets (issue: truthful numbers): plan <= 50 us; search over 10,000 <= 5 ms.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.hardware_profiler import HardwareProfiler  # noqa: E402
from app.core.model_registry import ModelMetadata, ModelRegistry, ModelType  # noqa: E402
from app.core.quantization_strategy import QuantizationStrategy  # noqa: E402


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def us(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1e6:.1f} us, p95 {sorted(xs)[int(0.95 * len(xs))] * 1e6:.1f} us"


def main() -> None:
    registry = ModelRegistry(user_store=None)
    profile = HardwareProfiler(simulate="rtx4090", clock=lambda: 0.0).get_profile()
    strategy = QuantizationStrategy()
    model = registry.get_model("mistralai/Ministral-8B-v0.1")
    strategy.plan(model, profile)
    print(f"plan(Ministral 8B, rtx4090), estimates memoised: {us(timed(lambda: strategy.plan(model, profile), 5000))}"
          "  (target <= 50 us)")

    def cold() -> None:
        model.estimate_cache.clear()
        strategy.plan(model, profile)

    print(f"plan, cold (every candidate estimated anew, 15 levels): {us(timed(cold, 2000))}")

    rng = random.Random(7)
    families = ["llama", "qwen", "mistral", "gemma", "phi", "deepseek", "falcon", "mpt", "olmo", "granite"]
    words = ["instruct", "chat", "coder", "math", "vision", "base", "uncensored", "roleplay", "distill", "long"]
    big = ModelRegistry(user_store=None)
    t = time.perf_counter()
    for i in range(10_000 - len(big.models)):
        fam = rng.choice(families)
        size = rng.choice([0.5, 1, 3, 7, 8, 13, 14, 32, 70])
        name = f"{fam}-{size}b-{rng.choice(words)}-{rng.choice(words)}-v{i}"
        big.register_model(ModelMetadata(name=name, provider=fam, model_type=ModelType.LLM, size_gb=size,
                                         model_id=f"org{i % 97}/{name}", aliases=(f"{fam}{size}b-{i}",)),
                           persist=False)
    print(f"(built a {len(big.models):,}-entry registry in {time.perf_counter() - t:.1f} s)")
    big.search("warm up")
    for query in ("qwen 7b coder", "llama 70b instruct", "ministral", "whispr larg"):
        print(f"search {query!r} over {len(big.models):,}: {us(timed(lambda q=query: big.search(q), 200))}"
              f"  ({len(big.search(query))} hits)  (target <= 5 ms)")


if __name__ == "__main__":
    main()
