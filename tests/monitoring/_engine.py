"""Real processes for the monitoring tests: `modeldeck exporter` nodes and a Prometheus server scraping them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
#: Prometheus scrapes this often in the tests (s).
SCRAPE_S = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Exporter:
    node: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def address(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_exporter(node: str, simulate: str, loads: tuple[str, ...] = (), *, home: Path,
                   extra: tuple[str, ...] = (), timeout_s: float = 60.0) -> Exporter:
    """``modeldeck exporter --port 0`` as its own process; returns once it says where it listens."""
    cmd = [sys.executable, "-m", "app.cli", "exporter", "--port", "0", "--node", node, *extra]
    if simulate:  # "" : the machine's own hardware
        cmd += ["--simulate", simulate]
    for load in loads:
        cmd += ["--load", load]
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
           "HOME": str(home)}
    home.mkdir(parents=True, exist_ok=True)
    log = home / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=out)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "serving metrics on " in line:
                return Exporter(node, proc, line.split("serving metrics on ", 1)[1].split()[0], log)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"exporter {node} did not start: {log.read_text()[-2000:]}")


@dataclass
class PrometheusServer:
    process: subprocess.Popen[bytes]
    url: str
    folder: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as answer:
            doc = json.loads(answer.read())
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as answer:
            return list(json.loads(answer.read())["data"]["activeTargets"])

    def wait_for(self, predicate: Any, what: str, timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"Prometheus: timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_prometheus(targets: list[str], folder: Path, *, rules: list[Path] = ()) -> PrometheusServer:
    """Prometheus scraping ``targets`` (host:port) every second as job ``modeldeck``."""
    assert PROMETHEUS, "prometheus is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    rule_lines = "".join(f"  - {json.dumps(str(r))}\n" for r in rules)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_S}s\n"
        f"  evaluation_interval: {SCRAPE_S}s\n"
        + (f"rule_files:\n{rule_lines}" if rules else "")
        + "scrape_configs:\n"
        "  - job_name: modeldeck\n"
        f"    scrape_timeout: {SCRAPE_S}s\n"
        "    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    server = PrometheusServer(proc, f"http://127.0.0.1:{port}", folder)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(folder / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    server.wait_for(ready, "ready", timeout_s=60)
    return server
