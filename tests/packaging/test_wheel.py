"""The wheel installs into a fresh virtual environment and runs with nothing else on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


def test_wheel_and_sdist_carry_the_package_data(dist):
    wheel = next(dist.glob("modeldeck-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("app/core/data/catalog.json", "app/resources/fonts/DejaVuSans.ttf",
                   "app/resources/fonts/LICENSE-DejaVu.txt", "app/resources/icons/io.github.modeldeck.ModelDeck.svg",
                   "app/resources/icons/hicolor/48x48/apps/io.github.modeldeck.ModelDeck.png",
                   "app/shell.py", "app/widgets/resource_dock.py", "app/core/hardware/nvml.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/")]
    sdist = next(dist.glob("modeldeck-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "resources/fonts/DejaVuSans.ttf",
                   "packaging/linux/io.github.modeldeck.ModelDeck.desktop", "app/core/data/catalog.json",
                   "packaging/monitoring/modeldeck-alerts.yml", "packaging/monitoring/grafana-dashboard.json",
                   "docs/METRICS.md"):
        assert needed in members, needed


def test_fresh_environment_runs_version_status_and_screenshot(dist, tmp_path):
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = next(dist.glob("modeldeck-*.whl"))
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    exe = env_dir / "bin" / "modeldeck"
    home = tmp_path / "home"
    home.mkdir()
    clean = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=300)

    from app import __version__

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"modeldeck {__version__}"
    status = run("status", "--json", "--simulate", "rtx4090")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["devices"][0]["total_bytes"] == 24 * 2**30
    plan = run("plan", "llama3.1:8b", "--simulate", "rtx4090", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["fits"] is True  # the catalog shipped
    shot = tmp_path / "shot.png"
    screenshot = run("screenshot", str(shot), "--simulate", "rtx4090", "--size", "800x500")
    assert screenshot.returncode == 0, screenshot.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # The package's own files come from the environment, not from this checkout.
    where = subprocess.run([str(py), "-c", "import app, app.shell; print(app.__file__); "
                            "print(app.shell.bundled_fonts_dir())"], capture_output=True, text=True, env=clean,
                           cwd=tmp_path)
    assert str(env_dir) in where.stdout.splitlines()[0] and str(env_dir) in where.stdout.splitlines()[1]
    assert os.path.isdir(where.stdout.splitlines()[1])
