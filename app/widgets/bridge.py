"""CoreBridge: the one place where the core's plain-Python events become Qt signals.

The core runs without Qt (a host daemon may use it), so its events are
:class:`app.core.events.Signal` callbacks that fire on whatever thread acted: the sampler's
``sampled`` fires on the sampler thread. Views must only be touched on the GUI thread, so every
forwarded event is posted through a queued connection and re-emitted from the bridge's own
thread. A lambda connected to a bridge signal therefore always runs on the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal, SignalInstance, Slot

from app.core.events import Signal as CoreSignal

__all__ = ["CoreBridge"]

_log = logging.getLogger(__name__)


class CoreBridge(QObject):
    """Re-emits core events as Qt signals on the thread this object lives in (the GUI thread).

    Signals:
        sigSampled(object): a new ``HardwareProfile`` from the sampler.
        sigRegistryChanged(): the model registry gained, changed or lost a model.
        sigModelStateChanged(str, object, object): (model id, old ``ModelState``, new) from the manager.
        sigAllocationChanged(str): a booking on this device was made, changed or released.
        sigPressureChanged(str, object): (device, ``PressureLevel``).
        sigEvicted(str, str): (model id, the reason it was evicted).
        sigPlanReady(object): a ``QuantizationPlan`` the manager made.
        sigQuantizationProposed(object): a ``QuantizationProposal`` (reload at another level).

    More core events (the manager's ``allocation_changed``, ``model_state_changed`` …) are
    added with :meth:`forward`, onto a Qt signal declared on a subclass or any other QObject.
    """

    sigSampled = Signal(object)
    sigRegistryChanged = Signal()
    sigModelStateChanged = Signal(str, object, object)
    sigAllocationChanged = Signal(str)
    sigPressureChanged = Signal(str, object)
    sigEvicted = Signal(str, str)
    sigPlanReady = Signal(object)
    sigQuantizationProposed = Signal(object)

    #: (target index, args): crosses threads by a queued connection to ``_deliver``.
    _sigRelay = Signal(int, object)

    def __init__(self, sampler: Any = None, registry: Any = None, parent: QObject | None = None, *,
                 manager: Any = None) -> None:
        super().__init__(parent)
        # The relays hold these, not ``self``: they must stay safe to call after the C++ object is gone.
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._targets: dict[int, SignalInstance] = {}
        self._links: list[tuple[CoreSignal[Any], Callable[..., None]]] = []
        self._sigRelay.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        lock, closed, links = self._lock, self._closed, self._links
        self.destroyed.connect(lambda *_: _disconnect(lock, closed, links))
        if sampler is not None:
            self.forward(sampler.sampled, self.sigSampled)
        if registry is not None:
            self.forward(registry.registry_changed, self.sigRegistryChanged)
        if manager is not None:
            for core, qt in ((manager.model_state_changed, self.sigModelStateChanged),
                             (manager.allocation_changed, self.sigAllocationChanged),
                             (manager.pressure_changed, self.sigPressureChanged),
                             (manager.evicted, self.sigEvicted),
                             (manager.plan_ready, self.sigPlanReady),
                             (manager.quantization_proposed, self.sigQuantizationProposed)):
                self.forward(core, qt)

    def forward(self, core_signal: CoreSignal[Any], qt_signal: SignalInstance) -> None:
        """Emit ``qt_signal`` on the GUI thread with the arguments of each ``core_signal`` emission."""
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("this CoreBridge is closed; create a new one")
            index = len(self._targets)
            self._targets[index] = qt_signal
        lock, closed, relay_signal = self._lock, self._closed, self._sigRelay

        def relay(*args: Any) -> None:
            with lock:
                if closed.is_set():
                    return
                try:
                    relay_signal.emit(index, args)
                except RuntimeError:  # the C++ object is gone and destroyed was missed: stop listening
                    closed.set()
                    core_signal.disconnect(relay)

        core_signal.connect(relay)
        with self._lock:
            self._links.append((core_signal, relay))

    @Slot(int, object)
    def _deliver(self, index: int, args: tuple[Any, ...]) -> None:
        target = self._targets.get(index)
        if target is not None and not self._closed.is_set():
            target.emit(*args)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Disconnect from every core signal; events already queued are dropped."""
        _disconnect(self._lock, self._closed, self._links)
        self._targets.clear()


def _disconnect(lock: threading.RLock, closed: threading.Event,
                links: list[tuple[CoreSignal[Any], Callable[..., None]]]) -> None:
    with lock:
        closed.set()
        pending = list(links)
        links.clear()
    for core_signal, relay in pending:
        core_signal.disconnect(relay)
