"""The cluster reader against exporters and servers that misbehave: one clear line, in bounded time."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from app.core.cluster import ClusterError, ExporterSource, PrometheusSource, sources_from, where_fits
from app.core.hardware.simulated import SimulatedBackend
from app.core.hardware_profiler import HardwareProfiler
from app.core.manager.placement import PlacementRequest
from app.core.metrics import serve_metrics
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader
from app.core.sampler import Sampler

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def node() -> Iterator[tuple[ModelResourceManager, object]]:
    sim = SimulatedBackend.from_spec("rtx3060,rtx3060")
    profiler = HardwareProfiler(backends=[sim])
    manager = ModelResourceManager(profiler=profiler, registry=ModelRegistry(user_store=None),
                                   loader=SimulatedLoader.for_profiler(profiler))
    sampler = Sampler(profiler)
    sampler.sampled.connect(manager.tick)
    sampler.tick()
    manager.load(LLAMA, "Q4_K_M", "cuda:1")
    server = serve_metrics(manager, sampler, port=0, node="desk")
    yield manager, server
    server.close()
    manager.stop()


def test_an_exporter_read_directly_gives_its_devices_and_models(node):
    manager, server = node
    (snap,) = ExporterSource(f"http://127.0.0.1:{server.port}").fetch()
    assert snap.up and snap.node == "desk" and snap.error is None
    assert [d.device for d in snap.devices] == ["cuda:0", "cuda:1", "cpu"]
    (model,) = snap.models
    assert (model.model_id, model.level, model.devices, model.state) == (LLAMA, "Q4_K_M", ("cuda:1",), "loaded")
    ledgers = {x.device: x for x in manager.ledgers()}
    for d in snap.devices:
        assert (d.booked_bytes, d.bookable_bytes) == (ledgers[d.device].reserved_bytes,
                                                      ledgers[d.device].available_bytes)


def test_where_fits_on_a_remote_node_agrees_with_the_nodes_own_planner(node):
    manager, server = node
    (snap,) = ExporterSource(server.url).fetch()
    registry = ModelRegistry(user_store=None)
    for model_id, level in (("stable-diffusion-v1-5/stable-diffusion-v1-5", "fp16"),
                            ("mistralai/Ministral-8B-Instruct-2410", "Q8_0"),
                            ("mistralai/Ministral-8B-Instruct-2410", "Q4_K_M"),
                            ("meta-llama/Llama-3.1-70B-Instruct", "Q4_K_M")):
        request = PlacementRequest(registry.get_model(model_id), level=level)
        (answer,) = where_fits([snap], request)
        local = manager.decide(request)
        assert answer.fits == (type(local).__name__ == "Decision"), (model_id, answer.summary())
        if answer.fits:
            assert answer.outcome.placement.device == local.placement.device
            assert answer.outcome.placement.shares == local.placement.shares


def test_an_exporter_that_stops_is_down_with_its_last_figures(node):
    _, server = node
    source = ExporterSource(server.url, timeout_s=2)
    (before,) = source.fetch()
    server.close()
    started = time.monotonic()
    (after,) = source.fetch()
    assert time.monotonic() - started < 3
    assert not after.up and "cannot reach" in after.error
    assert after.devices == before.devices and after.models == before.models and after.last_seen == before.last_seen


class _Page(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def page() -> Iterator[tuple[str, type[_Page]]]:
    handler = type("Handler", (_Page,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(("body", "expect"), [
    (b"<html><body>router login</body></html>", "not a Prometheus metrics page"),
    (b"node_cpu_seconds_total 1\n", "not ModelDeck's"),
    (b"\xff\xfe\x00garbage{{{ 1 2 3\n", "not a Prometheus metrics page"),
])
def test_a_page_that_is_not_a_modeldeck_exporter_is_one_line(page, body, expect):
    url, handler = page
    handler.body = body
    (snap,) = ExporterSource(url).fetch()
    assert not snap.up and expect in snap.error and "\n" not in snap.error


def test_a_huge_page_is_refused_not_read(page, monkeypatch):
    url, handler = page
    monkeypatch.setattr("app.core.cluster.MAX_BODY_BYTES", 1000)
    handler.body = b"#" * 5000
    (snap,) = ExporterSource(url).fetch()
    assert not snap.up and "more than" in snap.error


def test_prometheus_url_that_is_not_prometheus(page):
    url, handler = page
    handler.body = b"<html>hello</html>"
    with pytest.raises(ClusterError, match="does not answer like Prometheus"):
        PrometheusSource(url).fetch()
    handler.status = 500
    handler.body = b'{"status":"error","error":"storage is on fire"}'
    with pytest.raises(ClusterError, match="HTTP 500: storage is on fire"):
        PrometheusSource(url).fetch()


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ClusterError, match="cannot reach"):
            PrometheusSource(f"http://127.0.0.1:{port}", timeout_s=0.5).fetch()
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("url", ["localhost:9090", "ftp://x/y", "", "file:///etc/passwd", "http://"])
def test_urls_that_are_not_http_are_refused_with_an_example(url):
    with pytest.raises(ClusterError, match="not an http"):
        sources_from(prometheus=[url])


def test_no_source_says_what_to_give():
    with pytest.raises(ClusterError, match="--prometheus URL"):
        sources_from()


def _node(name: str, gpu_gib: float, ram_gib: float, *, up: bool = True):
    from app.core.cluster import NodeSnapshot, RemoteDevice

    gib = 2**30
    devices = (RemoteDevice("cuda:0", "GPU", int(gpu_gib * gib), 0, 0, int(gpu_gib * gib * 0.95), 0,
                            int(gpu_gib * gib * 0.05), "ok", (8, 9)),
               RemoteDevice("cpu", "System RAM", int(ram_gib * gib), 0, 0, int(ram_gib * gib * 0.9), 0, 0, "ok"))
    return NodeSnapshot(name, f"{name}:9477", "test", up, 0.0, devices)


def test_whole_on_a_gpu_ranks_before_partly_in_ram_whatever_the_room():
    meta = ModelRegistry(user_store=None).get_model("meta-llama/Llama-3.1-70B-Instruct")
    request = PlacementRequest(meta, level="Q4_K_M")
    nodes = [_node("big-ram", 40, 512), _node("a100", 48, 16), _node("small", 8, 8), _node("gone", 96, 64, up=False)]
    answers = where_fits(nodes, request)
    assert [a.node.node for a in answers] == ["a100", "big-ram", "small", "gone"]
    assert answers[0].outcome.placement.kind == "gpu"
    assert answers[1].outcome.placement.kind == "partial"
    assert not answers[2].fits and answers[3].outcome is None and "down" in answers[3].summary()


def test_a_port_that_does_not_speak_http_is_one_line():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]

        def banner() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")

        thread = threading.Thread(target=banner, daemon=True)
        thread.start()
        with pytest.raises(ClusterError, match="cannot reach"):
            PrometheusSource(f"http://127.0.0.1:{port}", timeout_s=2).fetch()
        (snap,) = ExporterSource(f"http://127.0.0.1:{port}", timeout_s=2).fetch()
        assert not snap.up and "cannot reach" in snap.error
        thread.join(5)


def test_a_node_read_through_two_sources_is_listed_once_as_the_fresher_says():
    from dataclasses import replace

    from app.core.cluster import DOWN, FITS, NO_FIT, PARTIAL, unique_nodes

    up = _node("rack-1", 24, 64)
    stale = replace(up, up=False, last_seen=-10.0, source="exporter")
    other = _node("rack-2", 24, 64)
    assert unique_nodes([stale, other, up]) == (up, other)
    assert unique_nodes([up, stale]) == (up,)
    meta = ModelRegistry(user_store=None).get_model("meta-llama/Llama-3.1-70B-Instruct")
    verdicts = {a.node.node: a.verdict for a in where_fits([stale, up, _node("tiny", 4, 8),
                                                            _node("gone", 96, 64, up=False)],
                                                           PlacementRequest(meta, level="Q4_K_M"))}
    assert verdicts == {"rack-1": PARTIAL, "tiny": NO_FIT, "gone": DOWN}
    small = ModelRegistry(user_store=None).get_model("mistralai/Ministral-8B-Instruct-2410")
    assert where_fits([up], small)[0].verdict == FITS
