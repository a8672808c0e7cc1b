"""The standalone shell: the screenshot command, the no-display message, settings round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

ROOT = Path(__file__).resolve().parents[2]


def test_screenshot_command_writes_a_png_of_the_requested_size(tmp_path):
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "app", "screenshot", str(out), "--simulate", "2xrtx4090",
                           "--size", "1000x700"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert (image.width(), image.height()) == (1000, 700)


def test_run_gui_without_a_display_points_to_screenshot(monkeypatch, capsys):
    from app import shell

    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert shell.run_gui(simulate="rtx4090", interval_s=1.0) == 2
    assert "modeldeck screenshot" in capsys.readouterr().err


def test_main_window_saves_and_restores_its_layout(qtbot, sampler, registry):
    from app.shell import APPLICATION, ORGANIZATION, MainWindow

    settings = QSettings(ORGANIZATION, APPLICATION)
    assert settings.organizationName() == "ModelDeck"
    assert str(os.environ["XDG_CONFIG_HOME"]) in settings.fileName()  # never the user's real file
    window = MainWindow(sampler, registry, settings=settings)
    qtbot.addWidget(window)
    window.resize(760, 640)  # the offscreen screen is 800x800
    window.show()
    window.panel.set_window(3600)
    window.close()
    again = MainWindow(sampler, registry, settings=QSettings(ORGANIZATION, APPLICATION))
    qtbot.addWidget(again)
    assert again.panel.window_s == 3600
    assert again.size().width() == 760
    again.panel.shutdown()


def test_the_cluster_tabs_sources_are_kept_between_starts(qtbot, sampler, registry):
    from app.shell import APPLICATION, ORGANIZATION, MainWindow

    window = MainWindow(sampler, registry, settings=QSettings(ORGANIZATION, APPLICATION))
    qtbot.addWidget(window)
    cluster = window.panel.cluster
    cluster.refresh_interval_s = 3600.0
    assert cluster.add_source("http://127.0.0.1:9/metrics")  # nothing listens: the node is shown down
    assert cluster.add_source("prometheus:http://127.0.0.1:9")
    window.panel.shutdown()
    window.close()
    again = MainWindow(sampler, registry, settings=QSettings(ORGANIZATION, APPLICATION))
    qtbot.addWidget(again)
    assert again.panel.cluster.sources() == ["exporter:http://127.0.0.1:9/metrics", "prometheus:http://127.0.0.1:9"]
    again.panel.cluster.remove_source("prometheus:http://127.0.0.1:9")
    again.panel.shutdown()
    third = MainWindow(sampler, registry, settings=QSettings(ORGANIZATION, APPLICATION))
    qtbot.addWidget(third)
    assert third.panel.cluster.sources() == ["exporter:http://127.0.0.1:9/metrics"]
    third.panel.shutdown()


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_palette_follows_the_color_scheme(qapp, scheme):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QPalette

    from app.shell import apply_color_scheme

    old = qapp.palette()
    try:
        apply_color_scheme(qapp, Qt.ColorScheme.Dark if scheme == "dark" else Qt.ColorScheme.Light)
        lightness = qapp.palette().color(QPalette.ColorRole.Window).lightness()
        assert (lightness < 100) if scheme == "dark" else (lightness > 150)
    finally:
        qapp.setPalette(old)
