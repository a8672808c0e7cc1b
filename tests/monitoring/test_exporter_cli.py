"""`modeldeck exporter` as a user runs it: where it listens, and one clear line for each mistake."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest

from app import cli
from tests.monitoring._engine import REPO, start_exporter


def listening(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_the_exporter_listens_on_loopback_only_unless_asked(tmp_path):
    exporter = start_exporter("quiet", "rtx3060", home=tmp_path / "a")
    try:
        assert listening(exporter.process.pid) == {"127.0.0.1"}
        with urllib.request.urlopen(exporter.url, timeout=5) as answer:
            assert b'modeldeck_node_info{node="quiet"' in answer.read()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(exporter.url.replace("/metrics", "/admin"), timeout=5)
    finally:
        exporter.stop()
    assert exporter.process.returncode == 0  # SIGTERM ends it cleanly
    loud = start_exporter("loud", "rtx3060", home=tmp_path / "b", extra=("--address", "0.0.0.0"))
    try:
        assert listening(loud.process.pid) == {"0.0.0.0"}
    finally:
        loud.stop()
    assert "reachable from other machines" in loud.log.read_text()


def test_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "app.cli", "exporter", "--simulate", "rtx3060", "--port",
                              str(port)], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == cli.EXIT_USAGE
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0] and "--port" in lines[0], lines


@pytest.mark.parametrize(("argv", "words"), [
    (["exporter", "--load", "llama-3.1-8b"], "--load needs --simulate"),
    (["exporter", "--simulate", "rtx3060", "--load", "no-such-model"], "unknown model"),
    (["exporter", "--simulate", "rtx3060", "--load", "llama-3.1-70b@Q8_0"], "is bookable there"),
    (["exporter", "--simulate", "rtx3060", "--load", "@@@@"], "MODEL[@LEVEL[@DEVICE]]"),
    (["exporter", "--port", "70000"], "from 0 to 65535"),
    (["exporter", "--port", "http"], "not a port number"),
    (["status", "--prometheus", "http://[::1"], "not a valid URL"),
    (["plan", "llama-3.1-8b", "--exporter", "http://[zz]:9477"], "not a valid URL"),
    (["status", "--exporter", "http://gpu-box:99999"], "not a valid URL"),
    (["status", "--prometheus", "localhost:9090"], "not an http(s) URL"),
    (["status", "--prometheus", "http://x", "--simulate", "rtx3060"], "cannot be combined"),
    (["plan", "llama-3.1-8b", "--exporter", "gpu-box"], "not an http(s) URL"),
])
def test_mistakes_are_one_line(capsys, argv, words):
    try:
        code = cli.main(argv)
    except SystemExit as done:  # argparse's usage errors
        code = int(done.code or 0)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and words in err and len(err.strip().splitlines()) == 1, err


def test_an_exporter_that_does_not_answer_is_reported_and_fails(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    code = cli.main(["status", "--exporter", f"http://127.0.0.1:{port}", "--json"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK  # the node is listed, as down, with why
    import json

    doc = json.loads(out)
    assert doc["nodes"][0]["up"] is False and "cannot reach" in doc["nodes"][0]["error"]
    assert "Traceback" not in err


def test_a_standalone_exporter_books_nothing_from_the_preload_list(tmp_path):
    """The preload list is for a process that loads models; an exporter that only watches would book
    memory no model holds, and every other machine would see it taken."""
    settings = tmp_path / "home" / "config" / "modeldeck" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"preload": [["openai/whisper-small", "fp16"]]}')
    bodies = {}
    for simulate in ("", "rtx3060"):  # this machine as it is; then simulated, whose runtime really holds them
        exporter = start_exporter(f"watcher-{simulate or 'here'}", simulate, home=tmp_path / "home")
        try:
            with urllib.request.urlopen(exporter.url, timeout=5) as answer:
                bodies[simulate] = answer.read().decode()
        finally:
            exporter.stop()
    assert "modeldeck_model_info" not in bodies[""] and "modeldeck_node_info" in bodies[""]
    assert 'model="openai/whisper-small"' in bodies["rtx3060"]
