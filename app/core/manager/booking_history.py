"""BookingHistory: what was booked on each device, and when, as intervals (the graphs' bands).

The allocator knows only what is booked now; a graph of the last hour needs what was booked then.
Each time a device's bookings change, :meth:`BookingHistory.record` is handed that device's bookings
and the time: a booking that appears opens an interval, one that goes closes it, and one whose bytes
or label changed (a measurement replaced the estimate) closes and reopens at the same instant, a
step. :func:`stack` turns intervals into the stacked steps a graph draws. Memory is bounded:
closed intervals older than ``max_age_s`` (24 h, the sampler's history) are dropped, and at most
``max_intervals`` are kept per device.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["BookingInterval", "BookingHistory", "DEFAULT_MAX_AGE_S", "StackedBookings", "stack"]

#: As long as the sampler's history (24 h at 1 Hz): a graph never shows an older band.
DEFAULT_MAX_AGE_S = 24 * 60 * 60


@dataclass(frozen=True, slots=True)
class BookingInterval:
    """One booking on one device from ``start`` to ``end`` (``None`` while it is still booked).

    ``key`` identifies the booking across changes (a model id, or the label of a shared booking
    such as the runtime context); times are on the clock the history was fed with.
    """

    device: str
    key: str
    label: str
    bytes: int
    start: float
    end: float | None = None

    @property
    def open(self) -> bool:
        return self.end is None

    def overlaps(self, since: float) -> bool:
        return self.end is None or self.end >= since


class BookingHistory:
    """Intervals per device, fed with each device's bookings whenever they change. Thread-safe."""

    def __init__(self, *, max_age_s: float = DEFAULT_MAX_AGE_S, max_intervals: int = 4096) -> None:
        if max_age_s <= 0 or max_intervals < 1:
            raise ValueError(f"a booking history needs a positive age and size, got {max_age_s} s, {max_intervals}")
        self._max_age_s = float(max_age_s)
        self._max_intervals = int(max_intervals)
        self._lock = threading.Lock()
        #: device -> closed intervals, oldest first; device -> key -> open interval.
        self._closed: dict[str, deque[BookingInterval]] = {}
        self._open: dict[str, dict[str, BookingInterval]] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """Bumped on every change: a view redraws its bands only when this moved."""
        return self._version

    def record(self, device: str, bookings: Iterable[tuple[str, str, int]], now: float) -> None:
        """``device``'s bookings at ``now``, each ``(key, label, bytes)``; what is absent has ended."""
        current = {key: (label, int(nbytes)) for key, label, nbytes in bookings if nbytes > 0}
        with self._lock:
            opened = self._open.setdefault(device, {})
            closed = self._closed.setdefault(device, deque(maxlen=self._max_intervals))
            changed = False
            for key, interval in list(opened.items()):
                if current.get(key) != (interval.label, interval.bytes):
                    closed.append(_ended(interval, now))
                    del opened[key]
                    changed = True
            for key, (label, nbytes) in current.items():
                if key not in opened:
                    opened[key] = BookingInterval(device, key, label, nbytes, now)
                    changed = True
            horizon = now - self._max_age_s
            while closed and closed[0].end is not None and closed[0].end < horizon:
                closed.popleft()
            if changed:
                self._version += 1

    def intervals(self, device: str, since: float | None = None) -> tuple[BookingInterval, ...]:
        """``device``'s intervals that reach ``since`` or later, by start time (open ones included)."""
        with self._lock:
            out = [i for i in self._closed.get(device, ()) if since is None or i.overlaps(since)]
            out += self._open.get(device, {}).values()
        return tuple(sorted(out, key=lambda i: i.start))

    def devices(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._open)


def _ended(interval: BookingInterval, now: float) -> BookingInterval:
    return BookingInterval(interval.device, interval.key, interval.label, interval.bytes, interval.start,
                           max(interval.start, now))


@dataclass(frozen=True)
class StackedBookings:
    """Bookings between two times as stacked steps: ``edges`` (S + 1 times) bound S segments, and
    ``tops[k, s]`` is the top of key ``keys[k]``'s band in segment ``s`` (bytes, cumulative from the
    bottom, so a key not booked in a segment has the top of the band below it). ``own[k, s]`` is
    the key's own bytes there (0 when not booked) and ``labels[k]`` its newest label."""

    keys: tuple[str, ...]
    labels: tuple[str, ...]
    edges: np.ndarray
    tops: np.ndarray
    own: np.ndarray

    def at(self, t: float) -> dict[str, int]:
        """Each key's own bytes at time ``t`` (keys not booked then are left out)."""
        if not self.keys or not self.edges[0] <= t <= self.edges[-1]:
            return {}
        s = int(np.clip(np.searchsorted(self.edges, t, side="right") - 1, 0, self.edges.size - 2))
        return {k: int(self.own[i, s]) for i, k in enumerate(self.keys) if self.own[i, s] > 0}


def stack(intervals: Iterable[BookingInterval], start: float, end: float) -> StackedBookings:
    """``intervals`` between ``start`` and ``end`` stacked in the order their keys first appear (the
    oldest booking stays at the bottom); intervals still open reach ``end``."""
    inside = [i for i in intervals if i.start < end and (i.end is None or i.end > start)]
    keys = tuple(dict.fromkeys(i.key for i in sorted(inside, key=lambda i: i.start)))
    cuts = {start, end}
    for i in inside:
        cuts.add(min(end, max(start, i.start)))
        cuts.add(end if i.end is None else min(end, max(start, i.end)))
    edges = np.array(sorted(cuts), dtype=float)
    own = np.zeros((len(keys), max(0, edges.size - 1)))
    row = {k: n for n, k in enumerate(keys)}
    labels = dict.fromkeys(keys, "")
    for i in sorted(inside, key=lambda i: i.start):
        a = int(np.searchsorted(edges, max(start, i.start)))
        b = int(np.searchsorted(edges, end if i.end is None else min(end, i.end)))
        own[row[i.key], a:b] = i.bytes
        labels[i.key] = i.label
    tops = np.cumsum(own, axis=0) if keys else own
    return StackedBookings(keys, tuple(labels.values()), edges, tops, own)
