"""The manager under churn: 8 threads of random calls with a loader that sleeps and fails.

Prints what must stay zero — crashes (errors nobody documented), over-committed devices seen during
the run, orphaned bookings (booked but not held), double bookings (a model booked where its
placement says it is not), records left after everything is unloaded — and the throughput, with a
same-run reference (the same calls with a loader that never fails or sleeps).

Run: .venv/bin/python benchmarks/bench_manager_churn.py [--ops N]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.hardware_profiler import HardwareProfiler  # noqa: E402
from app.core.memory_allocator import AllocationError  # noqa: E402
from app.core.model_registry import ModelRegistry  # noqa: E402
from app.core.model_resource_manager import (  # noqa: E402
    InvalidTransitionError,
    LoaderError,
    ModelResourceManager,
    PinnedModelError,
    UnknownModelError,
)
from app.core.quantization_strategy import PlacementError  # noqa: E402

MODELS = ["meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct", "meta-llama/Llama-3.1-8B-Instruct",
          "openai/whisper-small", "hexgrad/Kokoro-82M", "stable-diffusion-v1-5/stable-diffusion-v1-5"]
EXPECTED = (InvalidTransitionError, UnknownModelError, AllocationError, PlacementError, PinnedModelError, LoaderError)


class Fault(Exception):
    pass


class FlakyLoader:
    def __init__(self, fail_rate: float, sleep_s: float, seed: int) -> None:
        self.fail_rate, self.sleep_s = fail_rate, sleep_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def _maybe(self, what: str) -> None:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        with self.lock:
            bad = self.rng.random() < self.fail_rate
        if bad:
            raise Fault(what)

    def load(self, metadata, placement):
        self._maybe("load")
        return metadata.id

    def unload(self, model_id, handle):
        self._maybe("unload")

    def offload(self, model_id, handle):
        self._maybe("offload")

    def restore(self, model_id, handle, device):
        self._maybe("restore")


def churn(ops: int, fail_rate: float, sleep_s: float, rig: str) -> dict[str, float]:
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=rig), registry=ModelRegistry(user_store=None),
                                   loader=FlakyLoader(fail_rate, sleep_s, 1))
    crashes: list[BaseException] = []
    overcommits = [0]
    done = [0]

    def audit() -> None:
        for ledger in manager.ledgers():
            if ledger.device != "cpu" and ledger.reserved_bytes > ledger.total_bytes - ledger.safety_reserve_bytes:
                overcommits[0] += 1

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(ops):
            mid = rnd.choice(MODELS)
            op = rnd.choice(["load", "load", "unload", "offload", "restore", "move", "pin", "unpin", "tick"])
            try:
                if op == "load":
                    manager.load(mid, rnd.choice([None, "Q4_K_M", "fp16"]), rnd.choice([None, "cuda:0", "cuda:1"]))
                elif op == "unload":
                    manager.unload(mid)
                elif op == "offload":
                    manager.offload(mid)
                elif op == "restore":
                    manager.restore(mid)
                elif op == "move":
                    manager.move(mid, rnd.choice(["cuda:0", "cuda:1"]))
                elif op in ("pin", "unpin"):
                    manager.pin(mid, op == "pin")
                else:
                    manager.tick()
            except (*EXPECTED, Fault, NotImplementedError):
                pass
            except BaseException as err:  # noqa: BLE001 - what the run counts
                crashes.append(err)
            audit()
            done[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    held = {m.model_id: m for m in manager.loaded_models()}
    booked: dict[str, set[str]] = {}
    for device in manager.devices():
        for b in manager.bookings(device):
            if b.model_id is not None:
                booked.setdefault(b.model_id, set()).add(device)
    orphans = [mid for mid in booked if mid not in held]
    doubles = [mid for mid, devices in booked.items() if mid in held and held[mid].placement is not None
               and held[mid].state.value != "offloaded"
               and not devices <= set(held[mid].placement.devices) | {"cpu"}]
    for mid in list(held):
        manager.unpin(mid)
        try:
            manager.unload(mid)
        except LoaderError:
            manager.loader = FlakyLoader(0.0, 0.0, 2)  # the runtime recovers: unload again
            manager.unload(mid)
    left = len(manager.loaded_models()) + sum(len(manager.bookings(d)) for d in manager.devices())
    return {"crashes": len(crashes), "overcommits": overcommits[0], "orphans": len(orphans),
            "doubles": len(doubles), "left": left, "calls": done[0], "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=150, help="calls per thread (8 threads)")
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the failing loads are the point; their log lines are not
    with tempfile.TemporaryDirectory() as tmp:
        rig = Path(tmp) / "rig.json"
        rig.write_text(json.dumps({"gpus": [{"name": "Test 12 GiB", "memory_gib": 12, "compute_capability": [8, 6],
                                             "processes": []} for _ in range(2)]}))
        faulty = churn(args.ops, 0.2, 0.001, str(rig))
        clean = churn(args.ops, 0.0, 0.0, str(rig))
    print(f"churn, 8 threads x {args.ops} calls, loader sleeping 1 ms and failing 20%: "
          f"crashes {faulty['crashes']}, over-committed devices seen {faulty['overcommits']}, "
          f"orphaned bookings {faulty['orphans']}, double bookings {faulty['doubles']}, "
          f"records or bookings left after unloading everything {faulty['left']}")
    rate, ref = faulty["calls"] / faulty["seconds"], clean["calls"] / clean["seconds"]
    print(f"throughput {rate:,.0f} calls/s; reference (same calls, a loader that never fails or sleeps) "
          f"{ref:,.0f} calls/s, so {rate / ref:.2f} x reference; reference run: crashes {clean['crashes']}, "
          f"orphans {clean['orphans']}, left {clean['left']}")


if __name__ == "__main__":
    main()
