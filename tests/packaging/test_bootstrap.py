"""scripts/bootstrap.sh on a machine that has everything: it installs nothing and asks for no root.

`scripts/modeldeck` runs it on every start, so a check that wrongly finds a library missing would
run apt-get (as root) each time the dashboard opens.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_run_finds_every_system_library_and_installs_nothing(tmp_path):
    # The test suite's own set-up ran it already (scripts/test): every package it wants is there.
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    for tool in ("apt-get", "sudo"):
        script = fake / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit 1\n')
        script.chmod(0o755)
    # A linker cache larger than a pipe holds: a check that pipes it into `grep -q` stops reading early,
    # the cache's writer dies of SIGPIPE, and under pipefail a library that is there counts as missing.
    real = next(p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p))
    ldconfig = fake / "ldconfig"
    ldconfig.write_text(f'#!/bin/sh\n{real} "$@"\nyes "\tlibpadding.so.0 (libc6,x86-64) => /nowhere" | head -n 20000\n')
    ldconfig.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    for mode in ([], ["test"]):
        proc = subprocess.run(["bash", "scripts/bootstrap.sh", *mode], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "installing system packages" not in proc.stderr, proc.stderr
    assert not calls.exists(), calls.read_text()
