"""The Grafana dashboard as shipped: a ConfigMap the Grafana sidecar picks up, holding a well-formed
dashboard (its queries are evaluated on live data in test_observability_live.py)."""

from __future__ import annotations

import json

import pytest
from k8s_tools import K8S, TRITON_OVERLAYS, rendered
from monitoring_tools import DASHBOARD, dashboard


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_every_overlay_ships_the_dashboard_for_the_grafana_sidecar(overlay: str) -> None:
    (cm,) = [d for d in rendered(K8S / "overlays" / overlay)
             if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "triton-dashboard"]
    # kube-prometheus-stack's sidecar: label grafana_dashboard=1; a stable name (no hash suffix).
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["triton.json"]) == dashboard()
    assert DASHBOARD.read_text() == cm["data"]["triton.json"]


def test_panels_are_well_formed_and_do_not_overlap() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["description"] and panel["fieldConfig"]["defaults"]["unit"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_the_issue_list_of_panels_is_covered() -> None:
    """Requests and images, quantiles, queue vs compute, batch, failures, pending, GPU, pod, HPA."""
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p["targets"])
    for metric in ("nv_inference_request_success", "nv_inference_count", "nv_inference_request_summary_us",
                   "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_exec_count", "nv_inference_request_failure",
                   "nv_inference_pending_request_count", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
                   "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                   "kube_horizontalpodautoscaler_status_current_replicas"):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f'quantile="{quantile}"' in exprs
