"""The NVML fault-storm run: 12,000 ticks over a fake pynvml (4 GPUs) with randomized fault storms.

Storms, one at a time with 30-50 clean ticks between them, each kind once per shuffled round:
per-field errors (NVML codes, an unknown code, Python exceptions from the binding), NOT_SUPPORTED,
driver loss and re-init (after NOT_SUPPORTED answers), odd values (None, 2^64-1, -273 °C, pid -1,
250 %, used > total, bad bus ids ...), flapping faults, an absurd device count, a GPU off the bus.
One tick is one second of an injected clock; the retry interval is 10 s.

Run: .venv/bin/python benchmarks/bench_faults.py [--ticks N] [--seed S] [--app-root PATH]
(--app-root runs the same storm against another checkout's ``app`` package, e.g. the one before a fix.)
Targets: 0 crashes, 0 hidden devices, 0 implausible values, every storm recovered within one retry
interval, <= 5 log lines per storm, faulted tick <= 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ms(xs: list[float], q: float | None = None) -> float:
    if not xs:
        return float("nan")
    if q is None:
        return statistics.median(xs) * 1e3
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--retry", type=float, default=10.0, help="retry interval, s (= ticks)")
    parser.add_argument("--app-root", type=Path, default=None, help="import app from this tree instead")
    parser.add_argument("--device-counts", default="100000,65,257,2147483648",
                        help="what nvmlDeviceGetCount answers in a device-count storm")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.app_root is not None:
        sys.path.insert(0, str(args.app_root.resolve()))
    import app.core.hardware.nvml as nvml_module
    from tests.core.fake_nvml import StormRun

    counts = tuple(int(c) for c in args.device_counts.split(","))
    run = StormRun(ticks=args.ticks, gpus=args.gpus, seed=args.seed, retry_interval_s=args.retry,
                   device_counts=counts)
    start = time.perf_counter()
    report = run.run()
    wall = time.perf_counter() - start

    storms = report.storms
    late = report.not_recovered_within(args.retry)
    worst = max(storms, key=lambda s: s.lines) if storms else None
    faulted_med, faulted_p99 = _ms(report.faulted_s), _ms(report.faulted_s, 0.99)
    clean_med, clean_p99 = _ms(report.clean_s), _ms(report.clean_s, 0.99)
    ok = (report.crashes == 0 and report.hidden_device_ticks == 0 and report.collateral_field_ticks == 0
          and report.implausible_ticks == 0 and not late and report.max_lines_per_storm <= 5
          and faulted_p99 <= 5.0)

    print(f"NVML fault storms: {args.ticks} ticks, {args.gpus} fake GPUs, seed {args.seed}, "
          f"retry interval {args.retry:g} s, backend {Path(nvml_module.__file__).resolve()}")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(s.kind for s in storms).items()))
    print(f"  storms: {len(storms)}  ({kinds})")
    print(f"  crashes (exceptions escaping read/status):        {report.crashes}")
    print(f"  ticks where a device was hidden (missing/lost):   {report.hidden_device_ticks}")
    print(f"  ticks where a field outside the fault was lost:   {report.collateral_field_ticks}")
    print(f"  ticks with an implausible value passed through:   {report.implausible_ticks}")
    print(f"  storms not recovered within one retry interval:   {len(late)}"
          f" ({', '.join(f'{k} {n}' for k, n in sorted(Counter(s.kind for s in late).items())) or 'none'})")
    print(f"  max log lines per storm:                          {report.max_lines_per_storm}"
          f"  (total {report.log_lines}; worst: {worst.kind + ': ' + worst.detail if worst else '-'})")
    print(f"  faulted ticks: {len(report.faulted_s):6d}  median {faulted_med:.3f} ms  p99 {faulted_p99:.3f} ms  "
          f"max {_ms([max(report.faulted_s)]) if report.faulted_s else float('nan'):.3f} ms")
    print(f"  clean ticks:   {len(report.clean_s):6d}  median {clean_med:.3f} ms  p99 {clean_p99:.3f} ms  "
          f"max {_ms([max(report.clean_s)]) if report.clean_s else float('nan'):.3f} ms")
    print(f"  faulted / clean (same run): median x{faulted_med / clean_med:.2f}, p99 x{faulted_p99 / clean_med:.2f}"
          f" of the clean median")
    print(f"  wall {wall:.1f} s")
    for example in (report.crash_examples + report.hidden_examples + report.implausible_examples)[:6]:
        print(f"    e.g. {example}")
    if worst is not None and worst.lines > 5:
        for line in worst.log_examples[:6]:
            print(f"    log: {line}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
