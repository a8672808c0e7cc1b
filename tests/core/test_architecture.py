"""The layering is a checked contract: app.core never imports Qt."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUI_MODULES = ("PySide6", "shiboken6", "pyqtgraph", "qasync")


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_core_loads_no_gui_module_even_when_used():
    code = (
        "import sys\n"
        "import app.core\n"
        "from app.core import HardwareProfiler, Sampler\n"
        "import app.core.hardware.nvml, app.core.hardware.amd, app.core.reports\n"
        "s = Sampler(HardwareProfiler(simulate='rtx4090'))\n"
        "s.tick()\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_core_source_has_no_gui_imports():
    offenders = []
    for path in (ROOT / "app" / "core").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(m in stripped.split()[1] for m in GUI_MODULES):
                offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
