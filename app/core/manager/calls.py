"""How lifecycle operations talk to loaders: each operation is a generator of loader calls.

An operation changes state and bookings under the manager's lock, yields a :class:`Call`, and gets
back its outcome. ``run_sync`` and ``run_async`` drive any operation, so every sync method and its
``a…`` twin share one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from app.core.events import Signal
from app.core.manager.lifecycle import ModelState
from app.core.manager.loaders import call_async, call_sync

__all__ = ["Call", "Outcome", "Op", "Signals", "News", "run_sync", "run_async"]


@dataclass(frozen=True, slots=True)
class Call:
    """One loader call an operation asks its driver to make."""

    method: Callable[..., Any]
    args: tuple[Any, ...]
    name: str


#: (True, value) or (False, exception).
Outcome = tuple[bool, Any]
Op = Generator[Call, Outcome, Any]


@dataclass
class Signals:
    model_state_changed: Signal[Callable[[str, ModelState, ModelState], None]] = field(
        default_factory=lambda: Signal("model_state_changed"))
    evicted: Signal[Callable[[str, str], None]] = field(default_factory=lambda: Signal("evicted"))


@dataclass
class News:
    transitions: list[tuple[str, ModelState, ModelState]] = field(default_factory=list)
    evictions: list[tuple[str, str]] = field(default_factory=list)
    #: Other announcements, made in order once the lock is released.
    later: list[Callable[[], None]] = field(default_factory=list)


def run_sync(op: Op) -> Any:
    try:
        call = next(op)
        while True:
            try:
                outcome: Outcome = (True, call_sync(call.method, *call.args, name=call.name))
            except Exception as err:  # noqa: BLE001 - every loader failure is the operation's to handle
                outcome = (False, err)
            call = op.send(outcome)
    except StopIteration as stop:
        return stop.value


async def run_async(op: Op) -> Any:
    try:
        call = next(op)
        while True:
            try:
                outcome: Outcome = (True, await call_async(call.method, *call.args))
            except Exception as err:  # noqa: BLE001
                outcome = (False, err)
            call = op.send(outcome)
    except StopIteration as stop:
        return stop.value
