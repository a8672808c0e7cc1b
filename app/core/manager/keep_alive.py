"""Keep-alive: which idle models have outlived their keep-alive, and the timer that asks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from app.core.manager.lifecycle import ModelState, Record

__all__ = ["expired", "Ticker"]

_log = logging.getLogger("app.core.model_resource_manager")


def expired(records: Iterable[Record], now: float) -> list[Record]:
    """Loaded, idle, unpinned models idle for at least their keep-alive (-1 never expires)."""
    return [r for r in records
            if r.state == ModelState.LOADED and not r.pinned and r.keep_alive_s >= 0
            and now - r.last_used >= r.keep_alive_s]


class Ticker:
    """Calls ``tick`` every ``interval_s`` on a daemon thread until stopped; survives any one failure."""

    def __init__(self, tick: Callable[[], None], name: str = "modeldeck-manager") -> None:
        self._tick = tick
        self._name = name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, interval_s: float) -> None:
        if self.running:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self._tick()
                except Exception:  # noqa: BLE001 - the timer outlives any one failure
                    _log.exception("manager tick failed")

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = None
