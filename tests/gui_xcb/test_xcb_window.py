"""A real window: the README's first command opens the dashboard in a real X server through Qt's xcb plugin.

Every other GUI test renders offscreen; this one starts Xvfb on a free display, runs
``scripts/modeldeck --simulate 2xrtx4090`` (the README's quick start) from a clean environment with
``QT_QPA_PLATFORM=xcb``, waits for the ModelDeck window to be mapped, checks that it fits the
screen and that the screen shows it (not a blank window), then quits it with Ctrl+Q as a user would
and checks that it exits with 0 and no traceback. It fails where a fresh machine lacks what the xcb
plugin loads (scripts/bootstrap.sh installs it). Needs Xvfb and xdotool (``scripts/test`` installs
them); without them it is skipped, except in CI, where it fails.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCREEN = (1600, 1000)
#: The README's quick start, with simulated GPUs so it behaves the same on any machine.
COMMAND = [str(ROOT / "scripts" / "modeldeck"), "--simulate", "2xrtx4090"]
TITLE = "^ModelDeck"
START_S = 90.0  # a first start imports Qt, pyqtgraph and the core: seconds, not minutes
EXIT_S = 30.0

#: Grabs the X server's root window through Qt's own xcb plugin (no ImageMagick needed).
GRAB = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(sys.argv[:1])
sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1], "PNG") else 1)
"""


def _tools_or_skip() -> None:
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if not missing:
        return
    why = f"{' and '.join(missing)} not installed (scripts/bootstrap.sh test installs xvfb and xdotool)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: in CI this test must run", pytrace=False)
    pytest.skip(why)


@pytest.fixture
def display(tmp_path):
    """A fresh Xvfb on the first free display number; yields ":N"."""
    _tools_or_skip()
    read_fd, write_fd = os.pipe()
    log = (tmp_path / "xvfb.log").open("wb")
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp",
         "-noreset"],
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    os.close(write_fd)
    number = b""
    deadline = time.monotonic() + 30
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                pytest.fail(f"Xvfb did not start: {(tmp_path / 'xvfb.log').read_text(errors='replace')}",
                            pytrace=False)
            number += chunk
    finally:
        os.close(read_fd)
    try:
        yield f":{int(number)}"
    finally:
        xvfb.terminate()
        try:
            xvfb.wait(10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()
        log.close()


def _clean_env(tmp_path: Path, display: str) -> dict[str, str]:
    """Nothing inherited but PATH: no QT_QPA_PLATFORM=offscreen from scripts/test, no user settings."""
    home = tmp_path / "home"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        env[var] = str(home / var.lower())
        Path(env[var]).mkdir(parents=True, mode=0o700)
    return env


def _xdotool(env: dict[str, str], *args: str, check: bool = True) -> str:
    out = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise AssertionError(f"xdotool {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout


def _wait_for_window(app: subprocess.Popen, env: dict[str, str], stderr: Path) -> str:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if app.poll() is not None:
            pytest.fail(f"the dashboard exited with {app.returncode} before showing a window:\n"
                        f"{stderr.read_text(errors='replace')}", pytrace=False)
        found = _xdotool(env, "search", "--onlyvisible", "--name", TITLE, check=False).split()
        if found:
            return found[0]
        time.sleep(0.25)
    pytest.fail(f"no visible ModelDeck window after {START_S:.0f} s:\n{stderr.read_text(errors='replace')}",
                pytrace=False)


def _geometry(env: dict[str, str], window: str) -> dict[str, int]:
    pairs = (line.split("=", 1) for line in _xdotool(env, "getwindowgeometry", "--shell", window).split())
    return {k: int(v) for k, v in pairs}


def _window_pixels(env: dict[str, str], box: tuple[int, int, int, int], shot: Path) -> np.ndarray:
    grab = subprocess.run([sys.executable, "-c", GRAB, str(shot)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert grab.returncode == 0, f"cannot grab the screen: {grab.stderr}"
    with Image.open(shot) as image:
        assert image.size == SCREEN
        return np.asarray(image.convert("RGB").crop(box))


def _shows_a_dashboard(pixels: np.ndarray) -> bool:
    """More than a blank or single-colour rectangle: many colours, and text-dark pixels on light."""
    flat = pixels.reshape(-1, 3)
    colours = len(np.unique(flat, axis=0))
    dark = float((flat.max(axis=1) < 96).mean())
    light = float((flat.min(axis=1) > 200).mean())
    return colours >= 64 and 0.002 < dark < 0.5 and light > 0.2


def test_the_dashboard_opens_a_real_window_and_quits_with_ctrl_q(display, tmp_path):
    env = _clean_env(tmp_path, display)
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        app = subprocess.Popen(COMMAND, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        window = _wait_for_window(app, env, stderr_path)

        # it fits the screen: Xvfb has no window manager to move or shrink it
        width, height = (int(v) for v in _xdotool(env, "getdisplaygeometry").split())
        assert (width, height) == SCREEN
        g = _geometry(env, window)
        assert 0 <= g["X"] and 0 <= g["Y"] and g["X"] + g["WIDTH"] <= width and g["Y"] + g["HEIGHT"] <= height, g
        assert g["WIDTH"] >= 800 and g["HEIGHT"] >= 500, f"a cramped first window: {g}"

        # the screen shows it drawn (the first paint may follow the map by a moment)
        box = (g["X"], g["Y"], g["X"] + g["WIDTH"], g["Y"] + g["HEIGHT"])
        deadline = time.monotonic() + 30
        while not _shows_a_dashboard(pixels := _window_pixels(env, box, tmp_path / "screen.png")):
            assert time.monotonic() < deadline, (
                f"the window stays blank: {len(np.unique(pixels.reshape(-1, 3), axis=0))} colours "
                f"(screenshot: {tmp_path / 'screen.png'})")
            time.sleep(0.5)

        # Ctrl+Q, as a user would (no models are loaded, so nothing asks first)
        _xdotool(env, "windowfocus", "--sync", window)
        _xdotool(env, "key", "--clearmodifiers", "ctrl+q")
        try:
            code = app.wait(EXIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Ctrl+Q did not quit the dashboard within {EXIT_S:.0f} s", pytrace=False)
    finally:
        if app.poll() is None:
            app.terminate()
            try:
                app.wait(10)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
    err = stderr_path.read_text(errors="replace")
    assert code == 0, f"the dashboard exited with {code}:\n{err}"
    assert "Traceback" not in err, err
    assert "Could not load the Qt platform plugin" not in err, err
    assert _xdotool(env, "search", "--onlyvisible", "--name", TITLE, check=False).split() == []
