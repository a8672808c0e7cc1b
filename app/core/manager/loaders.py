"""Loaders: what really puts a model in memory. A host plugs in its own; ModelDeck ships two.

Each method may be sync or async. ``load`` gets the :class:`Placement` that was booked and returns a
handle the manager passes back to the others; ``offload`` moves the weights to system RAM;
``restore`` brings them back to ``device`` (also used to move a model to another GPU). A loader that
cannot offload raises ``NotImplementedError``: the manager then unloads instead.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from app.core.hardware.simulated import SimulatedBackend
from app.core.manager.placement import Placement
from app.core.model_spec import ModelMetadata

__all__ = [
    "AsyncLoaderInSyncCall", "ModelLoader", "ReservationLoader", "SimulatedLoader", "call_async", "call_sync",
    "is_async", "running_loop",
]


@runtime_checkable
class ModelLoader(Protocol):
    def load(self, metadata: ModelMetadata, placement: Placement) -> Any: ...

    def unload(self, model_id: str, handle: Any) -> Any: ...

    def offload(self, model_id: str, handle: Any) -> Any: ...

    def restore(self, model_id: str, handle: Any, device: str) -> Any: ...


class ReservationLoader:
    """Books memory only: for a host that loads models itself after asking the manager."""

    def load(self, metadata: ModelMetadata, placement: Placement) -> Any:
        return None

    def unload(self, model_id: str, handle: Any) -> None:
        return None

    def offload(self, model_id: str, handle: Any) -> None:
        return None

    def restore(self, model_id: str, handle: Any, device: str) -> None:
        return None


class SimulatedLoader:
    """The simulated runtime (``--simulate``): a load makes the simulated GPUs' measured usage rise
    by the placement's bytes, and an unload or offload makes it fall, so graphs, cards and "booked
    vs measured" agree. One runtime context per GPU is held while any model is there."""

    RUNTIME_OWNER = "modeldeck runtime"

    @classmethod
    def for_profiler(cls, profiler: Any) -> SimulatedLoader | None:
        """The simulated runtime for a profiler made with ``simulate=...``; None for real hardware."""
        from app.core.hardware.simulated import simulated_backend

        backend = simulated_backend(profiler)
        return cls(backend) if backend is not None else None

    def __init__(self, backend: SimulatedBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        #: GPU index -> model id -> the runtime context that model needs there.
        self._contexts: dict[int, dict[str, int]] = {}
        self._where: dict[str, Placement] = {}

    @staticmethod
    def _index(device: str) -> int | None:
        return int(device.split(":", 1)[1]) if device.startswith("cuda:") else None

    def _hold(self, model_id: str, placement: Placement) -> None:
        with self._lock:
            self._where[model_id] = placement
            for share in placement.shares:
                i = self._index(share.device)
                if i is None:
                    continue
                self._backend.hold(model_id, i, share.own_bytes)
                self._contexts.setdefault(i, {})[model_id] = share.runtime_bytes
                self._backend.hold(self.RUNTIME_OWNER, i, max(self._contexts[i].values()))

    def _drop(self, model_id: str) -> None:
        with self._lock:
            self._where.pop(model_id, None)
            self._backend.release(model_id)
            for i, needs in self._contexts.items():
                if needs.pop(model_id, None) is not None:
                    self._backend.hold(self.RUNTIME_OWNER, i, max(needs.values(), default=0))

    def load(self, metadata: ModelMetadata, placement: Placement) -> Placement:
        self._hold(metadata.id, placement)
        return placement

    def unload(self, model_id: str, handle: Any) -> None:
        self._drop(model_id)

    def offload(self, model_id: str, handle: Any) -> None:
        self._drop(model_id)

    def restore(self, model_id: str, handle: Any, device: str) -> None:
        placement: Placement = handle
        if placement.kind == "gpu" and placement.home_device != device:
            from app.core.manager.planner import retarget

            placement = retarget(placement, device, placement.reason)
        self._hold(model_id, placement)


def is_async(method: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(method)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any (without raising)."""
    return asyncio._get_running_loop()


class AsyncLoaderInSyncCall(RuntimeError):
    """A sync manager call met an async loader inside a running event loop: use the ``a…`` method."""


def call_sync(method: Callable[..., Any], *args: Any, name: str) -> Any:
    """Call a loader method from sync code. An async one runs on a fresh loop where none runs; from
    inside a running loop it is refused before anything happens (the caller wants ``a{name}``)."""
    if running_loop() is not None and is_async(method):
        raise AsyncLoaderInSyncCall(f"the loader's {name}() is async and an event loop is running: "
                                    f"use a{name}() from the loop")
    result = method(*args)
    if not inspect.isawaitable(result):
        return result
    if running_loop() is not None:
        if inspect.iscoroutine(result):
            result.close()
        raise AsyncLoaderInSyncCall(f"the loader's {name}() returned an awaitable inside a running event loop: "
                                    f"use a{name}() from the loop")
    return asyncio.run(_await(result))


async def call_async(method: Callable[..., Any], *args: Any) -> Any:
    """Await a loader method; a blocking one runs in the loop's executor so the loop stays responsive."""
    if is_async(method):
        return await method(*args)
    result = await asyncio.get_running_loop().run_in_executor(None, lambda: method(*args))
    if inspect.isawaitable(result):
        result = await result
    return result


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
