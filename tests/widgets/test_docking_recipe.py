"""The README's "Docking the dashboard in your Qt application" recipe, run as written.

The code block is read from README.md and executed with what a host has (``main_window``: a plain
QMainWindow; ``MyLoader``: a synchronous loader), then driven under a plain Qt event loop (no
qasync, no asyncio loop): the dock's own Load runs the host's loader in a worker thread while the
GUI thread keeps processing events, the Loaded tab shows and evicts it, and a load placed on the CPU
is said to run from RAM.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QMainWindow

from app.core import HardwareProfiler, ModelRegistry
from app.core.model_resource_manager import ModelResourceManager, ModelState

README = Path(__file__).resolve().parents[2] / "README.md"
SMALL = "meta-llama/Llama-3.2-1B-Instruct"
LOAD_S = 0.5


def docking_code() -> str:
    section = README.read_text(encoding="utf-8").split("### Docking the dashboard in your Qt application", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's docking section has no python block"
    return match.group(1)


class MyLoader:
    """A host's synchronous loader: each load takes half a second and blocks its caller."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, str, str]] = []  # (model id, placement device, thread name)
        self.unloads: list[str] = []
        self.loading = threading.Event()

    def load(self, metadata, placement):
        self.loading.set()
        try:
            self.loads.append((metadata.id, placement.device, threading.current_thread().name))
            time.sleep(LOAD_S)
            return object()
        finally:
            self.loading.clear()

    def unload(self, model_id, handle):
        self.unloads.append(model_id)

    def offload(self, model_id, handle):
        raise NotImplementedError

    def restore(self, model_id, handle, device):
        return None


def run_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Run a plain Qt event loop (what ``app.exec()`` runs) until ``condition()`` holds."""
    loop = QEventLoop()
    deadline = time.monotonic() + timeout_s
    poll = QTimer()
    poll.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    poll.start(5)
    loop.exec()
    poll.stop()
    assert condition(), "timed out"


@pytest.fixture
def host(qtbot, tmp_path, monkeypatch):
    """The recipe as written, its manager on one simulated RTX 3060 and a registry in tmp_path."""
    configure = ModelResourceManager.configure_shared.__func__

    def configure_shared(cls, **kwargs):
        kwargs.setdefault("profiler", HardwareProfiler(simulate="rtx3060"))
        kwargs.setdefault("registry", ModelRegistry(user_store=tmp_path / "models.json"))
        return configure(cls, **kwargs)

    monkeypatch.setattr(ModelResourceManager, "configure_shared", classmethod(configure_shared))
    main_window = QMainWindow()
    qtbot.addWidget(main_window)
    main_window.resize(1000, 760)
    scope = {"main_window": main_window, "MyLoader": MyLoader}
    exec(compile(docking_code(), "README.md (docking)", "exec"), scope)
    main_window.show()
    try:
        yield scope
    finally:
        scope["sampler"].stop()
        scope["dock"].shutdown()
        ModelResourceManager.reset_shared()


def test_the_recipe_docks_the_panel(host):
    dock, manager = host["dock"], host["manager"]
    assert host["main_window"].dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea
    assert ModelResourceManager() is manager and manager.loader is not None
    assert dock.panel.loaded_view is not None


def test_the_docks_own_load_runs_the_sync_loader_off_the_gui_thread(host):
    dock, manager, sampler = host["dock"], host["manager"], host["sampler"]
    loader: MyLoader = manager.loader
    panel = dock.panel
    assert asyncio._get_running_loop() is None  # a plain Qt host: no asyncio loop anywhere
    run_until(lambda: sampler.latest is not None)
    status: list[str] = []
    panel.sigStatus.connect(status.append)
    beats: list[float] = []
    heart = QTimer()
    heart.timeout.connect(lambda: loader.loading.is_set() and beats.append(time.monotonic()))
    heart.start(10)

    picker = panel.open_picker(SMALL)  # what the Models tab's Load… opens
    assert picker is not None and picker.decision() is not None
    picker.accept()
    run_until(lambda: manager.state_of(SMALL) == ModelState.LOADED and not loader.loading.is_set())
    run_until(lambda: any(s.startswith("Loaded ") for s in status))
    heart.stop()
    (mid, device, thread), = loader.loads
    assert mid == SMALL and device == "cuda:0" and thread != threading.main_thread().name
    assert len(beats) >= 10, f"the GUI thread ran only {len(beats)} timer ticks during a {LOAD_S} s load"
    assert status[0].startswith("Loading Llama 3.2 1B Instruct") and status[-1].startswith("Loaded Llama 3.2 1B")
    assert "held by ModelDeck" in dock.loaded_models_summary()

    table = panel.loaded_view
    run_until(lambda: table.model.rowCount() == 1)
    table.view.selectRow(0)
    table.evict_button.click()
    assert manager.state_of(SMALL) == ModelState.UNLOADED and loader.unloads == [SMALL]
    run_until(lambda: table.model.rowCount() == 0)
    assert dock.loaded_models_summary() == ""


def test_a_load_the_dock_places_on_the_cpu_says_so(host):
    dock, manager, sampler = host["dock"], host["manager"], host["sampler"]
    panel = dock.panel
    run_until(lambda: sampler.latest is not None)
    status: list[str] = []
    panel.sigStatus.connect(status.append)
    picker = panel.open_picker(SMALL)
    picker.select_device("cpu")
    assert picker.decision().placement.kind == "cpu"
    picker.accept()
    run_until(lambda: any(s.startswith("Loaded ") for s in status))
    assert status[-1] == "Loaded Llama 3.2 1B Instruct on the CPU (in RAM: slower than on a GPU)"
    table = panel.loaded_view
    run_until(lambda: table.model.rowCount() == 1)
    assert table.model.data(table.model.index(0, 1)) == "cpu (in RAM: slower)"
    assert manager.loaded_models()[0].device == "cpu"
