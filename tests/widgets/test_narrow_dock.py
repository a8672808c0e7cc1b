"""The dock at 360 px in a plain-Qt host that follows the README (a sync loader, ``app.exec()``):
it fits, the host keeps its room, the tables keep their names readable, and loading works there."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QTabBar, QWidget

from app.core.model_resource_manager import ModelState
from tests.widgets.test_docking_recipe import SMALL, host, run_until  # noqa: F401 - the recipe's host fixture

DOCK_WIDTH = 360


def squeezed(root: QWidget) -> list[str]:
    """Visible widgets given less width than they need to show their content."""
    out = []
    for w in root.findChildren(QWidget):
        if w.objectName().startswith("Scroll") and isinstance(w.parentWidget(), QTabBar):
            continue  # the tab bar's own scroll arrows: Qt sizes them
        if w.isVisible() and w.width() + 1 < w.minimumSizeHint().width() and w.minimumWidth() == 0:
            out.append(f"{type(w).__name__} {w.objectName() or w.accessibleName()}: "
                       f"{w.width()} < {w.minimumSizeHint().width()}")
    return out


@pytest.fixture
def narrow(host):  # noqa: F811 - the fixture imported above
    window, dock = host["main_window"], host["dock"]
    window.setCentralWidget(QLabel("the host's own content"))  # a host has its own work in the middle
    QApplication.processEvents()
    window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    run_until(lambda: host["sampler"].latest is not None)
    QApplication.processEvents()
    return host


def test_the_dock_fits_360_px_and_leaves_the_host_its_room(narrow):
    window, dock = narrow["main_window"], narrow["dock"]
    assert dock.minimumSizeHint().width() <= DOCK_WIDTH
    assert dock.width() == DOCK_WIDTH
    assert window.centralWidget().width() >= window.width() - DOCK_WIDTH - 20
    panel = dock.panel
    for tab in range(panel.tabs.count()):
        panel.tabs.setCurrentIndex(tab)
        QApplication.processEvents()
        assert squeezed(dock) == [], (panel.tabs.tabText(tab), squeezed(dock))


def test_at_360_px_the_tables_keep_the_name_readable(narrow):
    panel = narrow["dock"].panel
    browser = panel.browser
    panel.tabs.setCurrentWidget(browser)
    QApplication.processEvents()
    header = browser.view.horizontalHeader()
    assert header.sectionSize(0) >= 150
    hidden = [browser.table_model.headerData(c, Qt.Orientation.Horizontal) for c in range(header.count())
              if header.isSectionHidden(c)]
    assert hidden and "Name" not in hidden and "Fit" not in hidden  # provider/type step aside, never the fit
    picker = panel.open_picker(SMALL)
    picker.accept()
    manager = narrow["manager"]
    run_until(lambda: manager.state_of(SMALL) == ModelState.LOADED)
    loaded = panel.loaded_view
    panel.tabs.setCurrentWidget(loaded)
    run_until(lambda: loaded.model.rowCount() == 1)
    QApplication.processEvents()
    assert loaded.view.horizontalHeader().sectionSize(0) >= 140
    # Wider again: every column is back.
    narrow["main_window"].resize(2400, 760)
    narrow["main_window"].resizeDocks([narrow["dock"]], [1900], Qt.Orientation.Horizontal)
    panel.tabs.setCurrentWidget(browser)
    QApplication.processEvents()
    assert not any(header.isSectionHidden(c) for c in range(header.count()))
