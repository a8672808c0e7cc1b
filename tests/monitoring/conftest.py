"""A small cluster for the monitoring tests: three `modeldeck exporter --simulate` nodes and a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.monitoring._engine import PROMETHEUS, Exporter, PrometheusServer, start_exporter, start_prometheus

#: node name → (simulated GPUs, models loaded there).
NODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lab-a": ("2xrtx4090", ("meta-llama/Llama-3.1-8B-Instruct@Q4_K_M@cuda:0",)),
    "lab-b": ("rtx3060", ("mistralai/Ministral-8B-Instruct-2410@Q4_K_M@cuda:0",
                          "stable-diffusion-v1-5/stable-diffusion-v1-5@fp16@cuda:0")),
    "lab-c": ("a100-80gb", ()),
}

needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install "
                                      "prometheus; scripts/bootstrap.sh test does it)")


@dataclass
class Cluster:
    prometheus: PrometheusServer
    exporters: dict[str, Exporter]


def _start(tmp: Path, nodes: dict[str, tuple[str, tuple[str, ...]]]) -> Cluster:
    exporters: dict[str, Exporter] = {}
    try:
        for name, (spec, loads) in nodes.items():
            exporters[name] = start_exporter(name, spec, loads, home=tmp / name)
        prom = start_prometheus([e.address for e in exporters.values()], tmp / "prometheus")
    except BaseException:
        for e in exporters.values():
            e.stop()
        raise
    want = len(nodes)
    prom.wait_for(lambda: len([r for r in prom.query("up == 1")]) == want, f"{want} targets up")
    prom.wait_for(lambda: len(prom.query("modeldeck_node_info")) == want, f"{want} nodes' series")
    return Cluster(prom, exporters)


def _stop(cluster: Cluster) -> None:
    cluster.prometheus.stop()
    for e in cluster.exporters.values():
        e.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes, scraped every second; shared, so tests must not stop them."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed")
    c = _start(tmp_path_factory.mktemp("cluster"), NODES)
    yield c
    _stop(c)


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Two nodes of its own, for a test that stops one."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed")
    c = _start(tmp_path, {"edge-1": NODES["lab-b"], "edge-2": NODES["lab-c"]})
    yield c
    _stop(c)
