"""CoreBridge: core events arrive as Qt signals on the GUI thread, and stop after close."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QObject, QThread, Signal
from PySide6.QtWidgets import QApplication

from app.core.events import Signal as CoreSignal
from app.widgets.bridge import CoreBridge


class _Extra(QObject):
    sigEvicted = Signal(str, str)


def test_sampled_from_the_sampler_thread_is_delivered_on_the_gui_thread(qtbot, sampler):
    bridge = CoreBridge(sampler)
    seen: list[tuple[object, QThread]] = []
    bridge.sigSampled.connect(lambda p: seen.append((p, QThread.currentThread())))
    worker = threading.Thread(target=sampler.tick)
    with qtbot.waitSignal(bridge.sigSampled, timeout=2000):
        worker.start()
        worker.join()
    assert seen and seen[0][1] is QApplication.instance().thread()
    assert seen[0][0] is sampler.latest
    bridge.close()


def test_registry_changed_is_forwarded(qtbot, registry):
    bridge = CoreBridge(registry=registry)
    with qtbot.waitSignal(bridge.sigRegistryChanged, timeout=1000):
        registry.registry_changed.emit()
    bridge.close()


def test_forward_any_core_signal_with_its_arguments(qtbot):
    core = CoreSignal("evicted")
    extra = _Extra()
    bridge = CoreBridge()
    bridge.forward(core, extra.sigEvicted)
    with qtbot.waitSignal(extra.sigEvicted, timeout=1000) as blocker:
        core.emit("llama", "memory pressure")
    assert blocker.args == ["llama", "memory pressure"]
    bridge.close()


def test_close_disconnects_every_core_signal(qtbot, sampler, registry):
    before = (len(sampler.sampled), len(registry.registry_changed))
    bridge = CoreBridge(sampler, registry)
    assert (len(sampler.sampled), len(registry.registry_changed)) == (before[0] + 1, before[1] + 1)
    bridge.close()
    assert (len(sampler.sampled), len(registry.registry_changed)) == before
    with pytest.raises(RuntimeError):
        bridge.forward(sampler.sampled, bridge.sigSampled)


def test_deleting_the_bridge_disconnects_it(qtbot, sampler):
    before = len(sampler.sampled)
    parent = QObject()
    CoreBridge(sampler, parent=parent)
    assert len(sampler.sampled) == before + 1
    parent.deleteLater()
    qtbot.waitUntil(lambda: len(sampler.sampled) == before, timeout=1000)
    sampler.tick()  # must not raise or log from a dead relay
