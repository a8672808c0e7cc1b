"""Fault bookkeeping shared by the backends: each distinct fault is logged once, and so is its end.

Two modes:

* ``FaultLog(logger)`` (no clock): the original behaviour. ``fault`` logs the first time a key goes
  bad, ``clear`` logs its recovery at once. The host and AMD backends and the sampler use it.
* ``FaultLog(logger, clock=...)``: rate-limited, for a backend read every tick under fault storms
  (NVML). Nothing is logged from ``fault``/``clear``; the owner calls :meth:`flush` once per tick,
  which writes at most one line of each kind for everything that happened in the tick:

  - the first occurrence of new faults (messages are built only then, never for a repeat);
  - while faults persist or flap, one "still failing" line with the counts, after ``summary_s``
    and then at doubling intervals (60 s, 120 s, 240 s ...);
  - recoveries. A fault that was steady is recovered at the first clean tick. A fault that comes
    back within ``flap_window_s`` of that recovery is *flapping*: its returns are counted, not
    logged, and its recovery is logged once it has stayed clean for ``settle_s``.

  A storm (one fault, or one cause hitting many fields and GPUs in the same tick) so costs:
  the first line, the first recovery, the final recovery of a flap, and a count line per doubling
  interval: at most 5 lines for a storm shorter than 3 minutes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable

Message = str | Callable[[], str]

#: At most this many messages are spelled out in one batched line; the rest are counted.
_MAX_IN_LINE = 4


class _Entry:
    __slots__ = ("message", "level", "first", "count", "active", "cleared_at", "flapping", "flaps",
                 "recovery_logged", "next_summary", "summary_every")

    def __init__(self, message: Message, level: int, now: float, summary_s: float) -> None:
        self.message = message
        self.level = level
        self.first = now
        self.count = 1
        self.active = True
        self.cleared_at: float | None = None
        self.flapping = False
        self.flaps = 0
        self.recovery_logged = False
        self.next_summary = now + summary_s
        self.summary_every = summary_s

    def text(self) -> str:
        if not isinstance(self.message, str):
            try:
                self.message = self.message()
            except Exception as err:  # noqa: BLE001 - a message is never worth a crash
                self.message = f"(message could not be built: {err!r})"
        return self.message


def _join(texts: list[str]) -> str:
    shown = "; ".join(texts[:_MAX_IN_LINE])
    more = len(texts) - _MAX_IN_LINE
    return shown + (f"; and {more} more" if more > 0 else "")


class FaultLog:
    """Remembers which faults are active so a fault seen every tick is logged only once.

    ``fault(key, message)`` logs the first time ``key`` goes bad; ``clear(key)`` logs the recovery
    and forgets it, so the same fault coming back later is logged again. With a ``clock``, see the
    module's docstring: logging is batched per :meth:`flush` and flapping is rate-limited.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] | None = None,
        settle_s: float = 10.0,
        flap_window_s: float = 60.0,
        summary_s: float = 60.0,
    ) -> None:
        self._log = logger
        self._clock = clock
        self._settle_s = settle_s
        self._flap_window_s = flap_window_s
        self._summary_s = summary_s
        self._active: dict[Hashable, str] = {}  # the clock-less mode
        self._entries: dict[Hashable, _Entry] = {}  # the rate-limited mode
        self._new: list[Hashable] = []
        self._quick_recoveries: list[Hashable] = []
        self._lock = threading.Lock()

    # --- recording -----------------------------------------------------------------------------
    def fault(self, key: Hashable, message: Message, level: int = logging.WARNING) -> bool:
        """Record a fault; returns True only when it is new (then it is, or will be, logged).

        ``message`` may be a callable: it is called only if the fault is logged.
        """
        if self._clock is None:
            with self._lock:
                if key in self._active:
                    return False
                text = message if isinstance(message, str) else message()
                self._active[key] = text
            self._log.log(level, "%s", text)
            return True
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(message, level, self._clock(), self._summary_s)
                self._new.append(key)
                return True
            entry.count += 1
            if not entry.active:
                entry.active = True
                entry.cleared_at = None
                entry.flaps += 1
                if entry.recovery_logged:
                    entry.flapping = True
            return False

    def clear(self, key: Hashable) -> None:
        if self._clock is None:
            with self._lock:
                text = self._active.pop(key, None)
            if text is not None:
                self._log.info("recovered: %s", text)
            return
        if key not in self._entries:  # the every-tick case, without the lock (a dict look-up is atomic)
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.active:
                return
            entry.active = False
            entry.cleared_at = self._clock()
            if not entry.flapping and not entry.recovery_logged:
                self._quick_recoveries.append(key)

    def clear_matching(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            keys = [k for k in (self._active if self._clock is None else self._entries) if predicate(k)]
        for k in keys:
            self.clear(k)

    def forget(self, key: Hashable) -> None:
        """Drop a fault without logging its recovery (it no longer applies, e.g. the device is gone)."""
        with self._lock:
            self._active.pop(key, None)
            self._entries.pop(key, None)

    @property
    def active(self) -> dict[Hashable, str]:
        with self._lock:
            if self._clock is None:
                return dict(self._active)
            return {k: e.text() for k, e in self._entries.items() if e.active}

    # --- the once-per-tick report --------------------------------------------------------------
    def flush(self) -> None:
        """Write what happened since the last flush: at most one line each of new, ongoing, recovered."""
        if self._clock is None or not self._entries:
            return
        now = self._clock()
        lines: list[tuple[int, str]] = []
        with self._lock:
            if self._new:
                fresh = [self._entries[k] for k in self._new if k in self._entries]
                self._new.clear()
                if fresh:
                    lines.append((max(e.level for e in fresh), _join([e.text() for e in fresh])))
            recovered: list[str] = []
            for key in self._quick_recoveries:
                entry = self._entries.get(key)
                if entry is not None and not entry.active and not entry.recovery_logged:
                    entry.recovery_logged = True
                    recovered.append(f"{entry.text()}{self._tally(entry, now)}")
            self._quick_recoveries.clear()
            ongoing: list[_Entry] = []
            for key, entry in list(self._entries.items()):
                if entry.active or entry.flapping:
                    if now >= entry.next_summary:
                        ongoing.append(entry)
                        entry.summary_every *= 2
                        entry.next_summary = now + entry.summary_every
                    if entry.active or entry.cleared_at is None or now - entry.cleared_at < self._settle_s:
                        continue
                    # A flapping fault that has stayed clean for settle_s: recovered for good.
                    recovered.append(f"{entry.text()}{self._tally(entry, now)}")
                    del self._entries[key]
                elif entry.cleared_at is not None and now - entry.cleared_at >= self._flap_window_s:
                    del self._entries[key]  # recovered long enough ago: a return is a new fault
            if ongoing:
                level = max(e.level for e in ongoing)
                lines.append((level, "still failing: " + _join(
                    [f"{e.text()} ({e.count} times{f', flapping {e.flaps} times' if e.flaps else ''} "
                     f"in {now - e.first:.0f} s)" for e in ongoing])))
            if recovered:
                lines.append((logging.INFO, "recovered: " + _join(recovered)))
        for level, text in lines:
            self._log.log(level, "%s", text)

    @staticmethod
    def _tally(entry: _Entry, now: float) -> str:
        if entry.count <= 1:
            return ""
        flaps = f", flapping {entry.flaps} times" if entry.flaps else ""
        return f" (failed {entry.count} times{flaps} over {now - entry.first:.0f} s)"
