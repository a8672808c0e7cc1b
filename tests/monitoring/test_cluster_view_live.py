"""The dashboard's Cluster tab against a real Prometheus scraping three `modeldeck exporter` nodes."""

from __future__ import annotations

import pytest

from app.core.model_registry import ModelRegistry
from tests.monitoring.conftest import Cluster, needs_prometheus

pytestmark = needs_prometheus


@pytest.fixture
def view(qtbot):
    from app.widgets.cluster_view import ClusterView

    v = ClusterView(ModelRegistry(user_store=None))
    qtbot.addWidget(v)
    v.resize(900, 700)
    v.show()
    qtbot.waitExposed(v)
    yield v
    v.shutdown(wait=True)


def test_the_cluster_tab_reads_prometheus_and_answers_where_fits(qtbot, view, cluster: Cluster) -> None:
    from PySide6.QtCore import Qt

    with qtbot.waitSignal(view.sigRefreshed, timeout=30_000):
        view.url_edit.setText(cluster.prometheus.url)
        qtbot.keyClick(view.url_edit, Qt.Key.Key_Return)
    assert view.sources() == [f"prometheus:{cluster.prometheus.url}"]
    assert view.error_label.isHidden(), view.error_label.text()
    cards = {c.node.node: c for c in view.node_cards()}
    assert set(cards) == {"lab-a", "lab-b", "lab-c"}
    a = cards["lab-a"]
    assert a.header.text() == f"lab-a · {cluster.exporters['lab-a'].address} · up"
    lines = a.text().splitlines()
    assert "cuda:0 · NVIDIA GeForce RTX 4090" in lines and "cuda:1 · NVIDIA GeForce RTX 4090" in lines
    assert any(line.startswith("Llama 3.1 8B Instruct · Q4_K_M · loaded · ") for line in lines), lines
    assert any("/ 80.0 GiB used" in line for line in cards["lab-c"].text().splitlines())
    assert view.fits.ask("meta-llama/Llama-3.1-70B-Instruct", "Q4_K_M")
    rows = view.fits.rows()
    assert rows[0][:3] == ("lab-c", "fits", "Q4_K_M on cuda:0"), rows
    assert {r[0] for r in rows} == {"lab-a", "lab-b", "lab-c"}


def test_an_exporter_url_is_read_directly(qtbot, view, cluster: Cluster) -> None:
    exporter = cluster.exporters["lab-b"]
    with qtbot.waitSignal(view.sigRefreshed, timeout=30_000):
        assert view.add_source(exporter.url)  # …/metrics: detected as an exporter
    assert view.sources() == [f"exporter:{exporter.url}"]
    (card,) = view.node_cards()
    assert card.node.node == "lab-b" and card.node.up
    assert any(line.startswith("Ministral 8B Instruct 2410 · Q4_K_M · loaded · ") for line in card.text().splitlines())
