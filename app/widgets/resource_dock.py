"""ResourceDock: the panel as a QDockWidget for a host's main window (AI Runner and others).

It has an objectName, so the host's ``saveState()`` stores it without a warning and
``restoreState()`` puts it back; closing the host window shuts the panel down.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QWidget

from app.core.quantization_strategy import QuantizationStrategy
from app.widgets.resource_panel import ResourcePanel

__all__ = ["ResourceDock", "DOCK_OBJECT_NAME"]

DOCK_OBJECT_NAME = "ModelDeckResourceDock"


class ResourceDock(QDockWidget):
    """A dockable :class:`ResourcePanel`; the host keeps ownership of the core objects."""

    def __init__(self, sampler: Any, registry: Any, strategy: QuantizationStrategy | None = None,
                 manager: Any = None, parent: QWidget | None = None, title: str = "ModelDeck") -> None:
        super().__init__(title, parent)
        self.setObjectName(DOCK_OBJECT_NAME)
        self.setAllowedAreas(Qt.DockWidgetArea.AllDockWidgetAreas)
        self.panel = ResourcePanel(sampler, registry, strategy, manager, self)
        self.setWidget(self.panel)

    def shutdown(self) -> None:
        """Disconnect the panel from the core (also done when the panel is closed or deleted)."""
        self.panel.shutdown()
