"""Fault bookkeeping shared by the backends: each distinct fault is logged once, and so is its end."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable


class FaultLog:
    """Remembers which faults are active so a fault seen every tick is logged only once.

    ``fault(key, message)`` logs the first time ``key`` goes bad; ``clear(key)`` logs the recovery
    and forgets it, so the same fault coming back later is logged again.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._active: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def fault(self, key: Hashable, message: str, level: int = logging.WARNING) -> bool:
        """Record a fault; returns True (and logs) only when it is new."""
        with self._lock:
            if key in self._active:
                return False
            self._active[key] = message
        self._log.log(level, "%s", message)
        return True

    def clear(self, key: Hashable) -> None:
        with self._lock:
            message = self._active.pop(key, None)
        if message is not None:
            self._log.info("recovered: %s", message)

    def clear_matching(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            keys = [k for k in self._active if predicate(k)]
        for k in keys:
            self.clear(k)

    @property
    def active(self) -> dict[Hashable, str]:
        with self._lock:
            return dict(self._active)
