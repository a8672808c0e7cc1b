"""A small, thread-safe observer used for the core's events.

The core must run in a process without Qt, so its events are plain Python. The dashboard's
bridge re-emits them as Qt signals on the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Signal"]

_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class Signal(Generic[F]):
    """A list of callbacks. ``emit`` calls each in turn; a failing callback is logged, never raised.

    The emitter is never broken by a subscriber: the sampler thread keeps running whatever a
    view or host callback does.
    """

    __slots__ = ("_name", "_slots", "_lock")

    def __init__(self, name: str = "signal") -> None:
        self._name = name
        self._slots: tuple[Callable[..., Any], ...] = ()
        self._lock = threading.Lock()

    def connect(self, slot: F) -> F:
        """Subscribe ``slot``; returns it so this can be used as a decorator."""
        with self._lock:
            if slot not in self._slots:
                self._slots = (*self._slots, slot)
        return slot

    def disconnect(self, slot: Callable[..., Any]) -> None:
        """Unsubscribe ``slot``; unknown slots are ignored."""
        with self._lock:
            self._slots = tuple(s for s in self._slots if s != slot)

    def emit(self, *args: Any) -> None:
        for slot in self._slots:  # a tuple snapshot: connect/disconnect during emit is safe
            try:
                slot(*args)
            except Exception:  # noqa: BLE001 - a subscriber must not break the emitter
                _log.exception("subscriber %r of %s failed", slot, self._name)

    def __len__(self) -> int:
        return len(self._slots)
