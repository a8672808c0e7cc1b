"""Deterministic hardware for screenshots, widget tests and benchmarks (no Qt here).

``--simulate`` covers GPUs; system RAM is still the real machine's, which would make a
screenshot differ from one computer to the next. ``SimulatedPsutil`` stands in for psutil with
RAM that follows an injected clock, and ``ManualClock`` is a clock a caller advances itself.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from app.core.hardware.host import HostBackend
from app.core.hardware_profiler import HardwareProfiler
from app.core.units import GiB, MiB

__all__ = ["ManualClock", "SimulatedPsutil", "demo_profiler", "DEMO_SPEC", "DEMO_START"]

#: The cards shown when a screenshot names none: two sizes, so the layout shows how they differ.
DEMO_SPEC = "rtx4090,rtx3060"
#: 2026-01-01 00:00:00 UTC: a fixed start keeps simulated waveforms identical between runs.
DEMO_START = 1_767_225_600.0


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = DEMO_START) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


class SimulatedPsutil:
    """The parts of psutil that ``HostBackend`` reads, with RAM use as a smooth function of time."""

    def __init__(self, clock: Any, total_bytes: int = 64 * GiB, cores: int = 8) -> None:
        self._clock = clock
        self._total = total_bytes
        self._cores = cores

    def virtual_memory(self) -> SimpleNamespace:
        t = self._clock()
        used = int(self._total * (0.34 + 0.05 * math.sin(2 * math.pi * t / 90.0) + 0.02 * math.sin(t / 7.0)))
        return SimpleNamespace(total=self._total, used=used, available=self._total - used - 2 * GiB)

    def swap_memory(self) -> SimpleNamespace:
        return SimpleNamespace(total=8 * GiB, used=256 * MiB)

    def cpu_count(self, logical: bool = True) -> int:
        return self._cores * 2 if logical else self._cores

    def Process(self) -> SimpleNamespace:  # noqa: N802 - psutil's name
        return SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=142 * MiB))


def demo_profiler(simulate: str | None, clock: Any) -> HardwareProfiler:
    """Simulated GPUs (``simulate`` or :data:`DEMO_SPEC`) and simulated RAM, both on ``clock``."""
    host = HostBackend(SimulatedPsutil(clock), system="Linux", machine="x86_64")
    return HardwareProfiler(simulate=simulate or DEMO_SPEC, host=host, clock=clock)
