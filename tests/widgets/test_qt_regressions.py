"""Guards for the Qt stack ModelDeck pins (see the pins in pyproject.toml).

PySide6 6.12.0 drops a reference to None each time pyqtgraph's itemChange override runs, and
Python 3.11 aborts ("none_dealloc") after a few dozen PlotWidgets. The check runs in a child
process so that an abort fails this test instead of killing the whole run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHURN = textwrap.dedent(
    """
    import gc
    from PySide6 import QtWidgets
    import pyqtgraph as pg
    import numpy as np

    app = QtWidgets.QApplication([])
    x = np.arange(600, dtype=float)
    for i in range(300):
        w = pg.PlotWidget()
        curve = w.plot(x, np.sin(x / (i + 1)))
        curve.setData(x, np.cos(x / (i + 1)))
        w.resize(320, 200)
        w.grab()
        w.close()
        w.deleteLater()
        del w, curve
        if i % 25 == 0:
            app.processEvents()
            gc.collect()
    app.processEvents()
    print("survived", i + 1)
    """
)


@pytest.mark.qt
def test_three_hundred_plot_widgets_do_not_crash_the_interpreter():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert "survived 300" in out.stdout

