"""ResourceDock: the panel as a QDockWidget for a host's main window (AI Runner and others).

It has an objectName, so the host's ``saveState()`` stores it without a warning and
``restoreState()`` puts it back; closing the host window shuts the panel down. Its Load works under
any host loop: awaited on a running asyncio (qasync) loop, else in a worker thread under a plain
``app.exec()``. Quitting is the host's decision: :meth:`loaded_models_summary` says what it would end.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QWidget

from app.core.quantization_strategy import QuantizationStrategy
from app.widgets.ports import ManagedRegistry, ManagerPort, SamplerPort
from app.widgets.quit_guard import held_summary
from app.widgets.resource_panel import ResourcePanel

__all__ = ["ResourceDock", "DOCK_OBJECT_NAME"]

DOCK_OBJECT_NAME = "ModelDeckResourceDock"


class ResourceDock(QDockWidget):
    """A dockable :class:`ResourcePanel`; the host keeps ownership of the core objects."""

    def __init__(self, sampler: SamplerPort, registry: ManagedRegistry, strategy: QuantizationStrategy | None = None,
                 manager: ManagerPort | None = None, parent: QWidget | None = None, title: str = "ModelDeck") -> None:
        super().__init__(title, parent)
        self.setObjectName(DOCK_OBJECT_NAME)
        self.setAllowedAreas(Qt.DockWidgetArea.AllDockWidgetAreas)
        self._manager = manager
        self.panel = ResourcePanel(sampler, registry, strategy, manager, self)
        self.setWidget(self.panel)

    def loaded_models_summary(self) -> str:
        """What the manager holds now, in one sentence for a host's "quit anyway?" question
        (models, pinned ones, bytes booked per device, loads in progress); "" when it holds nothing."""
        return held_summary(self._manager)

    def shutdown(self) -> None:
        """Disconnect the panel from the core (also done when the panel is closed or deleted)."""
        self.panel.shutdown()
