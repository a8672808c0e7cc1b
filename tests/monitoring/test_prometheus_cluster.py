"""The exporter, scraped by a real Prometheus, read back through its HTTP API and `modeldeck status`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from app.core.cluster import PrometheusSource, cluster_document, fetch_nodes, where_fits
from app.core.model_registry import ModelRegistry
from tests.monitoring._engine import REPO
from tests.monitoring.conftest import Cluster, needs_prometheus

pytestmark = needs_prometheus

GIB = 2**30


def _by_node(cluster: Cluster) -> dict[str, object]:
    nodes, errors = fetch_nodes([PrometheusSource(cluster.prometheus.url)])
    assert errors == ()
    return {n.node: n for n in nodes}


def test_prometheus_holds_each_nodes_devices_and_models(cluster: Cluster) -> None:
    prom = cluster.prometheus
    totals = {(r["metric"]["instance"], r["metric"]["device"]): float(r["value"][1])
              for r in prom.query('modeldeck_gpu_memory_total_bytes{job="modeldeck"}')}
    a = cluster.exporters["lab-a"].address
    c = cluster.exporters["lab-c"].address
    assert totals[(a, "cuda:0")] == 24 * GIB and totals[(a, "cuda:1")] == 24 * GIB
    assert totals[(c, "cuda:0")] == 80 * GIB
    assert len(totals) == 4  # 2 + 1 + 1 GPUs
    # lab-b's two models, by category, on its one card; DCGM's labels on the GPU series.
    b = cluster.exporters["lab-b"].address
    booked = prom.query(f'sum by (model) (modeldeck_model_booked_bytes{{instance="{b}"}})')
    assert {r["metric"]["model"] for r in booked} == {"mistralai/Ministral-8B-Instruct-2410",
                                                     "stable-diffusion-v1-5/stable-diffusion-v1-5"}
    gpu = prom.query(f'modeldeck_gpu_memory_used_bytes{{instance="{b}"}}')[0]["metric"]
    assert gpu["modelName"] == "NVIDIA GeForce RTX 3060" and gpu["UUID"].startswith("GPU-") and gpu["gpu"] == "0"


def test_booked_on_a_node_matches_the_sum_of_its_models(cluster: Cluster) -> None:
    prom = cluster.prometheus
    b = cluster.exporters["lab-b"].address
    device = float(prom.query(f'modeldeck_device_booked_bytes{{instance="{b}",device="cuda:0"}}')[0]["value"][1])
    models = float(prom.query(f'sum(modeldeck_model_booked_bytes{{instance="{b}",device="cuda:0"}})')[0]["value"][1])
    runtime = float(prom.query(
        f'modeldeck_device_runtime_context_bytes{{instance="{b}",device="cuda:0"}}')[0]["value"][1])
    assert runtime > 0 and device == models + runtime


def test_the_cluster_reader_sees_three_nodes_with_their_models(cluster: Cluster) -> None:
    nodes = _by_node(cluster)
    assert set(nodes) == {"lab-a", "lab-b", "lab-c"}
    a, b, c = nodes["lab-a"], nodes["lab-b"], nodes["lab-c"]
    assert all(n.up for n in (a, b, c))
    assert [d.device for d in a.gpus] == ["cuda:0", "cuda:1"]
    assert [m.model_id for m in a.models] == ["meta-llama/Llama-3.1-8B-Instruct"]
    assert a.models[0].level == "Q4_K_M" and a.models[0].devices == ("cuda:0",) and a.models[0].state == "loaded"
    assert {m.name for m in b.models} == {"Ministral 8B Instruct 2410", "Stable Diffusion 1.5"} or len(b.models) == 2
    assert c.models == () and c.gpus[0].total_bytes == 80 * GIB
    # What is booked on lab-a's first card is the model plus the runtime context, and the rest is bookable.
    dev = a.gpus[0]
    assert dev.booked_bytes == a.models[0].bytes_on("cuda:0") + dev.runtime_bytes
    assert 0 < dev.bookable_bytes < dev.total_bytes - dev.booked_bytes


def test_where_would_llama_70b_at_q4_k_m_fit(cluster: Cluster) -> None:
    registry = ModelRegistry(user_store=None)
    meta = registry.get_model("meta-llama/Llama-3.1-70B-Instruct")
    assert meta is not None
    from app.core.manager.placement import PlacementRequest

    answers = where_fits(_by_node(cluster).values(), PlacementRequest(meta, level="Q4_K_M"))
    by_node = {a.node.node: a for a in answers}
    # ~42 GiB: the A100 80GB holds it whole; two 4090s (one with an 8B on it) have 35 GiB bookable; a 3060
    # has 12. Whether the rest would go partly into RAM depends on this machine's free RAM (the simulated
    # nodes share it), so lab-a and lab-b are either refused or offered a partial placement, ranked after.
    assert answers[0].node.node == "lab-c" and answers[0].fits and not answers[0].disturbs
    assert answers[0].outcome.placement.kind == "gpu" and answers[0].outcome.placement.device == "cuda:0"
    for name in ("lab-a", "lab-b"):
        a = by_node[name]
        assert not a.fits or a.outcome.placement.kind == "partial", a.summary()
        assert "Q4_K_M" in a.summary()


def test_status_prometheus_prints_the_cluster(cluster: Cluster) -> None:
    out = subprocess.run([sys.executable, "-m", "app.cli", "status", "--prometheus", cluster.prometheus.url,
                          "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    names = {n["node"]: n for n in doc["nodes"]}
    assert set(names) == {"lab-a", "lab-b", "lab-c"} and doc["errors"] == []
    assert [m["model_id"] for m in names["lab-a"]["models"]] == ["meta-llama/Llama-3.1-8B-Instruct"]
    text = subprocess.run([sys.executable, "-m", "app.cli", "status", "--prometheus", cluster.prometheus.url],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "lab-c" in text.stdout and "NVIDIA A100" in text.stdout
    assert "Llama 3.1 8B Instruct" in text.stdout


def test_plan_across_the_cluster_on_the_command_line(cluster: Cluster) -> None:
    out = subprocess.run([sys.executable, "-m", "app.cli", "plan", "llama-3.1-70b", "--quant", "Q4_K_M",
                          "--prometheus", cluster.prometheus.url, "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fits = json.loads(out.stdout)["fits"]
    assert fits[0]["node"] == "lab-c" and fits[0]["fits"] and fits[0]["plan"]["quantization"] == "Q4_K_M"
    assert fits[0]["plan"]["placement"] == "gpu" and len(fits) == 3
    assert all(not f["fits"] or f["plan"]["placement"] == "partial" for f in fits[1:]), fits


def test_a_node_that_stops_is_down_with_its_last_figures(small_cluster: Cluster) -> None:
    prom = small_cluster.prometheus
    before = {n.node: n for n in fetch_nodes([PrometheusSource(prom.url)])[0]}
    edge1 = small_cluster.exporters["edge-1"]
    edge1.stop()
    stopped = time.time()
    prom.wait_for(lambda: prom.query(f'up{{instance="{edge1.address}"}} == 0'), "edge-1 down")
    nodes = {n.node: n for n in fetch_nodes([PrometheusSource(prom.url)])[0]}
    down = nodes["edge-1"]
    assert not down.up and nodes["edge-2"].up
    assert down.error == "the last scrape failed"
    assert down.last_seen is not None and stopped - 5 < down.last_seen <= stopped + 1
    # Its memory is what it was, not zero; its models are still listed.
    assert [d.total_bytes for d in down.gpus] == [d.total_bytes for d in before["edge-1"].gpus] != [0]
    assert [m.model_id for m in down.models] == [m.model_id for m in before["edge-1"].models] and down.models
    doc = cluster_document(nodes.values())
    row = next(n for n in doc["nodes"] if n["node"] == "edge-1")
    assert row["up"] is False and "ago" in row["last_seen_text"] and row["devices"][0]["total_bytes"] > 0
    # where-fits never proposes a down node
    registry = ModelRegistry(user_store=None)
    meta = registry.get_model("meta-llama/Llama-3.1-8B-Instruct")
    answers = where_fits(nodes.values(), meta)
    assert answers[-1].node.node == "edge-1" and answers[-1].outcome is None
