"""A hang turned into an exception: for tests that drive code which must answer in bounded time."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Hang", "deadline"]


class Hang(Exception):
    """The guarded code ran past its deadline."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` inside the block once ``seconds`` pass (SIGALRM: Unix, main thread; elsewhere a
    no-op)."""
    if not hasattr(signal, "setitimer"):  # pragma: no cover - Unix only
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"the command ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
