"""The Linux desktop entry, AppStream metadata and icons: valid, consistent, and in step with the version."""

from __future__ import annotations

import configparser
import os
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from app import __version__

ROOT = Path(__file__).resolve().parents[2]
APP_ID = "io.github.modeldeck.ModelDeck"
LINUX = ROOT / "packaging" / "linux"
DESKTOP = LINUX / f"{APP_ID}.desktop"
METAINFO = LINUX / f"{APP_ID}.metainfo.xml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/bootstrap.sh test installs it on Debian/Ubuntu")
        pytest.skip(f"{name} is not installed here")
    return path


def test_desktop_file_validates():
    out = subprocess.run([tool("desktop-file-validate"), str(DESKTOP)], capture_output=True, text=True)
    assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout + out.stderr
    assert "hint" not in out.stdout, out.stdout  # e.g. two main categories would list it twice


def test_metainfo_validates():
    out = subprocess.run([tool("appstreamcli"), "validate", "--no-net", str(METAINFO)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ids_icons_and_version_agree():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(DESKTOP)
    d = entry["Desktop Entry"]
    assert d["Icon"] == APP_ID and d["Exec"].split()[0] == "modeldeck"
    assert "Monitor" in d["Categories"].split(";") and "System" in d["Categories"].split(";")
    meta = ET.parse(METAINFO).getroot()
    assert meta.findtext("id") == APP_ID
    assert meta.findtext("launchable") == DESKTOP.name
    assert meta.findtext("metadata_license") == "CC0-1.0"
    assert meta.find("content_rating") is not None
    releases = [r.get("version") for r in meta.iter("release")]
    assert releases[0] == __version__, "add a <release> for the new version (and a CHANGELOG entry)"
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()
    for shot in meta.iter("image"):
        name = shot.text.rsplit("/", 1)[-1]
        assert (ROOT / "docs" / "screenshots" / name).exists(), f"screenshot {name} is not in docs/screenshots"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("size", [16, 24, 32, 48, 64, 128, 256])
def test_icon_sizes_are_rendered_from_the_svg(size):
    png = ROOT / "resources" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
    assert png_size(png) == (size, size)
    ET.parse(ROOT / "resources" / "icons" / f"{APP_ID}.svg")  # the source is well-formed SVG
