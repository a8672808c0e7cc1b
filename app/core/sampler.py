"""The sampler: a background thread that polls the profiler into fixed-size ring buffers.

Views never call the driver: they read ``Sampler.latest`` and the histories, or subscribe to
``sampled``, which fires on the sampler thread (the dashboard's bridge moves it to the GUI thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.core.events import Signal
from app.core.hardware.faults import FaultLog
from app.core.hardware.snapshot import GpuDevice, HardwareProfile
from app.core.hardware_profiler import HardwareProfiler

__all__ = ["RingBuffer", "SeriesHistory", "Sampler", "SamplerHealth", "GPU_METRICS", "HOST_METRICS", "MIN_INTERVAL_S"]

_log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1
DEFAULT_INTERVAL_S = 1.0
#: 24 hours at 1 Hz.
DEFAULT_CAPACITY = 24 * 60 * 60


class RingBuffer:
    """A fixed-capacity numpy ring. Missing values are NaN.

    Reads come as views of the storage (``segments``) or as a copy of only what was asked
    (``latest(n)``), never as a copy of the whole 24 hours.
    """

    __slots__ = ("_data", "_next", "_size")

    def __init__(self, capacity: int, dtype: type | np.dtype = np.float64) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be at least 1, got {capacity}")
        self._data = np.full(capacity, np.nan, dtype=dtype)
        self._next = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return int(self._data.shape[0])

    def __len__(self) -> int:
        return self._size

    def append(self, value: float | None) -> None:
        self._data[self._next] = np.nan if value is None else value
        self._next = (self._next + 1) % self.capacity
        if self._size < self.capacity:
            self._size += 1

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored values oldest first, as two read-only views (the second may be empty)."""
        if self._size < self.capacity:
            parts = (self._data[: self._size], self._data[:0])
        else:
            parts = (self._data[self._next :], self._data[: self._next])
        for p in parts:
            p.flags.writeable = False
        return parts

    def latest(self, n: int | None = None) -> np.ndarray:
        """A copy of the newest ``n`` values (all when ``None``), oldest first."""
        n = self._size if n is None else max(0, min(n, self._size))
        if n == 0:
            return self._data[:0].copy()
        start = (self._next - n) % self.capacity
        if start < self._next:
            return self._data[start : self._next].copy()
        return np.concatenate((self._data[start:], self._data[: self._next]))

    def last(self) -> float:
        """The newest value; NaN when empty."""
        if self._size == 0:
            return float("nan")
        return float(self._data[(self._next - 1) % self.capacity])


GPU_METRICS: dict[str, type] = {
    "used_bytes": np.float64,
    "free_bytes": np.float64,
    "total_bytes": np.float64,
    "utilization_percent": np.float32,
    "temperature_c": np.float32,
    "power_w": np.float32,
}
HOST_METRICS: dict[str, type] = {
    "ram_used_bytes": np.float64,
    "ram_available_bytes": np.float64,
    "swap_used_bytes": np.float64,
    "process_rss_bytes": np.float64,
}


@dataclass
class SeriesHistory:
    """Timestamps and one ring per metric, for one device (or the host)."""

    times: RingBuffer
    metrics: dict[str, RingBuffer] = field(default_factory=dict)

    @classmethod
    def create(cls, capacity: int, metrics: dict[str, type]) -> SeriesHistory:
        return cls(RingBuffer(capacity), {k: RingBuffer(capacity, dt) for k, dt in metrics.items()})

    def __len__(self) -> int:
        return len(self.times)


@dataclass(frozen=True, slots=True)
class SamplerHealth:
    """How sampling has gone: counts since start, and the newest success and failure."""

    samples: int
    failures: int
    #: Wall-clock time of the newest sample (None before the first).
    last_success: float | None
    #: The newest failure's message (None when sampling never failed).
    last_error: str | None
    interval_s: float


def device_key(gpu: GpuDevice) -> str:
    """A stable key for a GPU's history: its UUID, or its kind and index."""
    return gpu.uuid or f"{gpu.kind}:{gpu.index}"


class Sampler:
    """Polls a :class:`HardwareProfiler` on a background thread.

    Signals:
        sampled(profile): after each sample, on the sampler thread.
    """

    def __init__(
        self,
        profiler: HardwareProfiler,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._profiler = profiler
        self._interval = self._check_interval(interval_s)
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._faults = FaultLog(_log)
        self._gpu_history: dict[str, SeriesHistory] = {}
        self._host_history = SeriesHistory.create(capacity, HOST_METRICS)
        self._latest: HardwareProfile | None = None
        self._samples = 0
        self._failures = 0
        self._last_error: str | None = None
        self.sampled: Signal[Callable[[HardwareProfile], None]] = Signal("sampled")

    @staticmethod
    def _check_interval(value: float) -> float:
        if not value >= MIN_INTERVAL_S:  # also rejects NaN
            raise ValueError(f"sampling interval must be at least {MIN_INTERVAL_S} s, got {value!r}")
        return float(value)

    @property
    def interval_s(self) -> float:
        return self._interval

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self._interval = self._check_interval(value)
        self._wake.set()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def latest(self) -> HardwareProfile | None:
        """The newest profile; reading it never waits on the driver."""
        return self._latest

    def health(self) -> SamplerHealth:
        """Counts of samples and failures, and the newest of each (never waits on the driver)."""
        latest = self._latest
        return SamplerHealth(self._samples, self._failures, latest.timestamp if latest else None,
                             self._last_error, self._interval)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- sampling -----------------------------------------------------------------------------
    def tick(self) -> HardwareProfile | None:
        """Take one sample now, record it and announce it. Never raises."""
        try:
            profile = self._profiler.get_profile()
        except Exception as err:  # noqa: BLE001 - the profiler is built not to raise; belt and braces
            kind = type(err)
            self._failures += 1
            self._last_error = f"sampling failed: {err!r}"
            self._faults.fault(("tick", kind.__module__, kind.__qualname__), f"sampling failed: {err!r}", logging.ERROR)
            return None
        self._faults.clear_matching(lambda _k: True)
        self._record(profile)
        self._latest = profile
        self._samples += 1
        self.sampled.emit(profile)
        return profile

    def _record(self, profile: HardwareProfile) -> None:
        t = profile.timestamp
        with self._lock:
            for gpu in profile.gpus:
                key = device_key(gpu)
                hist = self._gpu_history.get(key)
                if hist is None:
                    hist = self._gpu_history[key] = SeriesHistory.create(self._capacity, GPU_METRICS)
                hist.times.append(t)
                m = hist.metrics
                lost = gpu.lost
                m["used_bytes"].append(None if lost else gpu.used_bytes)
                m["free_bytes"].append(None if lost else gpu.free_bytes)
                m["total_bytes"].append(None if lost else gpu.total_bytes)
                m["utilization_percent"].append(gpu.utilization_percent)
                m["temperature_c"].append(gpu.temperature_c)
                m["power_w"].append(gpu.power_w)
            host = profile.host
            h = self._host_history
            h.times.append(t)
            h.metrics["ram_used_bytes"].append(host.used_bytes)
            h.metrics["ram_available_bytes"].append(host.available_bytes)
            h.metrics["swap_used_bytes"].append(host.swap_used_bytes)
            h.metrics["process_rss_bytes"].append(host.process_rss_bytes)

    def gpu_history(self, key: str) -> SeriesHistory | None:
        """History of one GPU by :func:`device_key`."""
        return self._gpu_history.get(key)

    def gpu_keys(self) -> list[str]:
        with self._lock:
            return list(self._gpu_history)

    @property
    def host_history(self) -> SeriesHistory:
        return self._host_history

    def window(self, key: str | None, metric: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the newest ``n`` (timestamps, values) of one series; ``key=None`` is the host."""
        hist = self._host_history if key is None else self._gpu_history.get(key)
        if hist is None:
            raise KeyError(f"no history for device {key!r}; known: {self.gpu_keys()}")
        with self._lock:
            return hist.times.latest(n), hist.metrics[metric].latest(n)

    # --- thread -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling in a daemon thread; a no-op if it is already running."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modeldeck-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread (at most ``timeout`` seconds)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        next_due = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_due += self._interval
            delay = next_due - time.monotonic()
            if delay < 0:  # fell behind (a slow driver call): don't burst to catch up
                next_due = time.monotonic()
                delay = 0.0
            self._wake.wait(delay)
            if self._wake.is_set():
                self._wake.clear()
                next_due = time.monotonic()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
