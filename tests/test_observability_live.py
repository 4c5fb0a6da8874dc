"""Every PromQL expression the project ships, evaluated by a real Prometheus on live Triton metrics.

A local tritonserver (tiny twin, with the Deployment's --metrics-config flags: latency summaries
on) is scraped every second by a real Prometheus that loads the shipped rules. The project's load
test drives a short load; Triton's statistics API is read before and after it. Then every
expression is read from the shipped files and evaluated: the prometheus-adapter rule (template
filled the way the adapter fills it), every recording and alerting rule of
k8s/base/prometheusrule.yaml, every query of the Grafana dashboard (variables substituted), and
compared with what Triton's statistics say for the same window.

Labels like `namespace` and `pod` exist only in Kubernetes; the scrape here attaches them as target
labels (as the PodMonitor does), so the expressions run unchanged. Expressions on cAdvisor,
kube-state-metrics or GPU metrics (nv_gpu_*, GPU images only) cannot return data here: they must
still parse and evaluate, and their metric names are checked against the documented lists below.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from k8s_tools import K8S, rendered
from monitoring_tools import (
    LocalPrometheus,
    adapter_rules,
    dashboard,
    fill_adapter_query,
    panel_targets,
    rules,
    write_rule_file,
)

from client.stats import ModelStats, model_stats
from serve.server import LocalTritonServer, Ports, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "pnasnet_large"
NAMESPACE = "pnasnet"
POD = "triton-6f9c8d7b5-k2x8q"  # what a PodMonitor target of the Deployment would be labelled
USERS = 4
BATCH = 2  # images per request: a rule that confuses requests with images fails
LOAD_SECONDS = 10
TOLERANCE = 0.25  # Prometheus extrapolates rates to the window's edges; ratios are near exact

# Names that cannot be scraped here, from their projects' documentation:
# Triton's GPU metrics (docs/user_guide/metrics.md, "GPU Metrics"; label gpu_uuid),
TRITON_GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
                      "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption"}
# kube-state-metrics (docs/metrics/workload/*.md, docs/metrics/policy/*.md) and cAdvisor's
# container metrics as the kubelet exports them.
CLUSTER_METRICS = {
    "kube_deployment_status_replicas_available", "kube_pod_container_status_restarts_total",
    "kube_poddisruptionbudget_status_current_healthy", "kube_poddisruptionbudget_status_desired_healthy",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas", "kube_horizontalpodautoscaler_spec_min_replicas",
    "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
}
NOT_HERE = TRITON_GPU_METRICS | CLUSTER_METRICS

# What each shipped expression measures, by name (never the expression itself): the value Triton's
# statistics predict for it. Kinds: rate of a counter over the window; ratio of two counters'
# increases (times a unit scale); a quantile (plausibility only: Triton's API has no quantiles); a
# gauge within bounds; a constant; "cluster" for data that exists only in a cluster.
RECORDS: dict[str, tuple] = {
    "triton:latency_slo_p95_us": ("constant",),
    "namespace_model:triton_request_success:rate2m": ("rate", "success_count"),
    "namespace_model:triton_request_failure:rate2m": ("rate", "fail_count"),
    "namespace_model:triton_inference_count:rate2m": ("rate", "inference_count"),
    "namespace_model:triton_request_error_ratio:rate5m": ("ratio", "fail_count", "all_requests", 1.0),
    "namespace_pod_model:triton_queue_time_per_request_us:rate2m": (
        "ratio", "queue_ns", "success_count", 1e-3),
    "namespace_model:triton_queue_time_per_request_us:rate2m": ("ratio", "queue_ns", "success_count", 1e-3),
    "namespace_model:triton_compute_time_per_request_us:rate2m": (
        "ratio", "all_compute_ns", "success_count", 1e-3),
    "namespace_model:triton_executed_batch_size:rate2m": ("ratio", "inference_count", "execution_count", 1.0),
    "namespace_model:triton_request_latency_us:p95": ("quantile", 0.95, 1.0),
}
PANELS: dict[tuple[str, str], tuple] = {
    ("Requests/s", "{{model}} ok"): ("rate", "success_count"),
    ("Requests/s", "{{model}} failed"): ("rate", "fail_count"),
    ("Images/s", "{{model}}"): ("rate", "inference_count"),
    ("Server latency p50 / p95 / p99", "{{model}} p50"): ("quantile", 0.5, 1e-3),
    ("Server latency p50 / p95 / p99", "{{model}} p95"): ("quantile", 0.95, 1e-3),
    ("Server latency p50 / p95 / p99", "{{model}} p99"): ("quantile", 0.99, 1e-3),
    ("Server latency p50 / p95 / p99", "{{model}} mean"): ("ratio", "request_ns", "success_count", 1e-6),
    ("Server latency p50 / p95 / p99", "p95 SLO"): ("constant",),
    ("Queue vs compute per request", "{{model}} queue"): ("ratio", "queue_ns", "success_count", 1e-6),
    ("Queue vs compute per request", "{{model}} compute"): ("ratio", "all_compute_ns", "success_count", 1e-6),
    ("HPA metric: queue time per request, per pod", "{{pod}}"): ("ratio", "queue_ns", "success_count", 1e-6),
    ("Average executed batch", "{{model}}"): ("ratio", "inference_count", "execution_count", 1.0),
    ("Failures by reason", "{{model}} {{reason}}"): ("rate", "fail_count"),
    ("Pending requests", "{{pod}} {{model}}"): ("gauge", 0, USERS),
    ("GPU utilisation", "{{pod}}"): ("cluster",),
    ("GPU memory", "{{pod}} used"): ("cluster",),
    ("GPU memory", "{{pod}} total"): ("cluster",),
    ("Pod CPU", "{{pod}}"): ("cluster",),
    ("Pod memory", "{{pod}}"): ("cluster",),
    ("HPA replicas", "current"): ("cluster",),
    ("HPA replicas", "desired"): ("cluster",),
    ("HPA replicas", "max"): ("cluster",),
    ("HPA replicas", "min"): ("cluster",),
    ("Node CPU and memory, as Triton sees them", "{{pod}} node CPU"): ("gauge", 0, 1),
    ("Node CPU and memory, as Triton sees them", "{{pod}} node memory used"): ("gauge", 0, 1),
}


@dataclass
class Live:
    """A finished load and the Prometheus that watched it."""

    prom: LocalPrometheus
    slo_prom: LocalPrometheus  # the same rules with the SLO threshold set to 1 us
    delta: ModelStats  # Triton's statistics, after minus before the load
    at: float  # evaluation time (after the last scrape of the load's final counts)
    window_s: int  # a window that holds the whole load and a sample before it
    report: dict[str, Any]  # the load test's JSON report
    exported: set[str]  # metric names the live endpoint exports


def statistic(delta: ModelStats, name: str) -> float:
    if name == "all_requests":
        return delta.success_count + delta.fail_count
    if name == "all_compute_ns":
        return delta.compute_input_ns + delta.compute_ns + delta.compute_output_ns
    return getattr(delta, name)


def expected(kind: tuple, delta: ModelStats, range_s: float) -> float | None:
    """Triton's statistics turned into the value the expression should give (None: no prediction)."""
    if kind[0] == "rate":
        return statistic(delta, kind[1]) / range_s
    if kind[0] == "ratio":
        den = statistic(delta, kind[2])
        return statistic(delta, kind[1]) / den * kind[3] if den else 0.0
    return None


def ranges_of(expr: str, window_s: int) -> float:
    """The range every `[...]` selector of `expr` uses, in seconds (one range per expression)."""
    found = {window_s if r == "$__rate_interval" else int(r[:-1]) * {"s": 1, "m": 60}[r[-1]]
             for r in re.findall(r"\[(\$__rate_interval|\d+[sm])\]", expr)}
    assert len(found) <= 1, f"mixed ranges in {expr}"
    return found.pop() if found else 0


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:nv|kube|container)_[a-z0-9_]+)", expr))


def grafana(expr: str, window_s: int) -> str:
    """A panel query as Grafana sends it: variables replaced with this test's values."""
    return (expr.replace("$__rate_interval", f"{window_s}s").replace("$namespace", NAMESPACE)
            .replace("$model", MODEL))


def exported_names(metrics_url: str) -> set[str]:
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    return names | {re.sub(r"_(sum|count)$", "", n) for n in names}


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def scrape_config(metrics_port: int) -> list[dict[str, Any]]:
    """What the PodMonitor amounts to: the metrics port, with namespace and pod as target labels."""
    return [{"job_name": f"{NAMESPACE}/triton", "scrape_interval": "1s", "scrape_timeout": "1s",
             "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"],
                                 "labels": {"namespace": NAMESPACE, "pod": POD, "container": "triton"}}]}]


def slo_rules(path: Path) -> Path:
    """The shipped rules with only the SLO threshold changed, to 1 us."""
    from monitoring_tools import rule_groups

    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if rule.get("record") == "triton:latency_slo_p95_us":
                rule["expr"] = "vector(1)"
    return write_rule_file(path, groups)


def deployment_metrics_flags() -> list[str]:
    """The Deployment's --metrics-config flags: the local server exports what the pods export."""
    deployment = next(d for d in rendered(K8S / "overlays" / "gpu") if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return [a for a in args if a.startswith("--metrics-config")]


@pytest.fixture(scope="module")
def live(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("observability")
    flags = deployment_metrics_flags()
    assert "--metrics-config=summary_latencies=true" in flags  # the quantile panels need them
    server = LocalTritonServer(exported_repo, ports=Ports.free(), work_dir=work / "triton",
                               extra_args=flags)
    (work / "prometheus").mkdir()
    (work / "prometheus-slo").mkdir()
    with server:
        prom = LocalPrometheus(work / "prometheus", free_port(), scrape_config(server.ports.metrics),
                               [write_rule_file(work / "prometheus" / "rules.json")])
        slo_prom = LocalPrometheus(work / "prometheus-slo", free_port(),
                                   scrape_config(server.ports.metrics),
                                   [slo_rules(work / "prometheus-slo" / "rules.json")])
        with prom, slo_prom:
            wait_for("two scrapes before the load", lambda: prom.query(
                f'count_over_time(up{{job="{NAMESPACE}/triton"}}[1m]) >= 2'))
            before = model_stats(server.grpc_url, MODEL)
            started = time.time()
            out = work / "load"
            done = subprocess.run(
                [sys.executable, "-m", "loadtest", "--host", server.grpc_url, "--users", str(USERS),
                 "--batch", str(BATCH), "--duration", f"{LOAD_SECONDS}s", "--out", str(out)],
                cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            after = model_stats(server.grpc_url, MODEL)
            # Prometheus has scraped the final counters, and the rules have run on them since.
            synced = wait_for("a scrape of the final counts", lambda: prom.query(
                f'timestamp(nv_inference_request_success{{model="{MODEL}"}} == {after.success_count})'))
            wait_for("a rule evaluation after that scrape", lambda: prom.query(
                f"timestamp(namespace_model:triton_request_success:rate2m) > {synced[0]['value']}"))
            at = time.time()
            yield Live(prom, slo_prom, after - before, at, math.ceil(at - started) + 2,
                       json.loads(Path(f"{out}.json").read_text()), exported_names(server.metrics_url))


def series_for_model(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The series of the model under load (all series when the expression has no model label)."""
    own = [s for s in result if s["metric"].get("model") == MODEL]
    return own or [s for s in result if "model" not in s["metric"]]


def check(live: Live, source: str, expr: str, kind: tuple, rows: list[list[str]]) -> list[float]:
    """Evaluate one expression, check it against its kind, add a row to the report table."""
    result = live.prom.query(expr, at=live.at)
    names = metric_names(expr)
    unknown = {n for n in names if n not in live.exported and n not in NOT_HERE}
    assert not unknown, f"{source}: metrics neither exported by Triton nor documented: {unknown}"
    if kind[0] == "cluster":
        assert names & NOT_HERE, f"{source}: marked cluster-only but reads only local metrics"
        assert result == [], f"{source}: data for cluster-only metrics here? {result}"
        rows.append([source, "(no data here: cluster only)", "-"])
        return []
    assert not names & NOT_HERE, f"{source}: reads cluster-only metrics {names & NOT_HERE}"
    values = [s["value"] for s in series_for_model(result)]
    assert values, f"{source}: no series on live data for {expr}"
    assert all(math.isfinite(v) for v in values), f"{source}: {values}"
    want = expected(kind, live.delta, ranges_of(expr, live.window_s))
    if want is not None:
        for v in values:
            assert v == pytest.approx(want, rel=TOLERANCE, abs=1e-9), (source, v, want)
    elif kind[0] == "gauge":
        assert all(kind[1] <= v <= kind[2] for v in values), (source, values)
        during = live.prom.query(f"max_over_time(({expr})[{live.window_s}s:1s])", at=live.at)
        peak = [s["value"] for s in series_for_model(during)]
        assert all(kind[1] <= v <= kind[2] for v in peak), (source, peak)
        values = values + peak
    else:
        assert all(v > 0 for v in values), (source, values)
    shown = ", ".join(f"{v:.6g}" for v in values)
    if kind[0] == "gauge":
        shown = f"{shown} (at the end, then the peak during the load)"
    rows.append([source, shown,
                 "-" if want is None else f"{want:.6g}"])
    return values


def print_table(title: str, rows: list[list[str]]) -> None:
    print(f"\n{title}\n| expression | Prometheus | Triton statistics |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def test_the_hpa_metric_agrees_with_tritons_statistics(live: Live) -> None:
    """The adapter rule, filled like prometheus-adapter fills it, against statistics deltas."""
    (rule,) = [r for r in adapter_rules() if r["name"]["as"] == "triton_queue_time_per_request_us"]
    discovered = live.prom.api("series", **{"match[]": rule["seriesQuery"]})
    series = {s["__name__"] for s in discovered}
    assert series and all(re.search(rule["name"]["matches"], s) for s in series)
    assert {(s["namespace"], s["pod"]) for s in discovered} == {(NAMESPACE, POD)}

    query = fill_adapter_query(rule["metricsQuery"], series.pop(), {"model": MODEL}, NAMESPACE,
                               "pod", [POD])
    (point,) = live.prom.query(query, at=live.at)
    assert point["metric"] == {"pod": POD}
    stats_us = live.delta.queue_ns / live.delta.success_count / 1e3
    print(f"\nHPA metric {point['value']:.1f} us/request; Triton statistics {stats_us:.1f} us "
          f"({live.delta.success_count} requests)")
    assert point["value"] == pytest.approx(stats_us, rel=0.25)
    # Several pods: the adapter's regex matcher selects the same series.
    (other,) = live.prom.query(fill_adapter_query(rule["metricsQuery"], "nv_inference_queue_duration_us",
                                                  {"model": MODEL}, NAMESPACE, "pod",
                                                  [POD, "triton-6f9c8d7b5-zz9zz"]), at=live.at)
    assert other["value"] == point["value"]


def test_every_recording_rule_on_live_data(live: Live) -> None:
    assert {r["record"] for r in rules("record")} == set(RECORDS), "a rule without an expectation"
    rows: list[list[str]] = []
    for rule in rules("record"):
        check(live, rule["record"], rule["expr"], RECORDS[rule["record"]], rows)
        # The rule also ran inside Prometheus and recorded its series.
        assert live.prom.query(rule["record"], at=live.at), rule["record"]
    print_table(f"Recording rules ({live.delta.success_count} requests, window {live.window_s} s)", rows)
    health = [r for g in live.prom.api("rules")["groups"] for r in g["rules"]]
    assert len(health) == len(rules("record")) + len(rules("alert"))
    assert all(r["health"] == "ok" and not r.get("lastError") for r in health), health


def test_every_alert_expression_on_live_data(live: Live) -> None:
    """Each evaluates; on a healthy server without failures the error alert is quiet; the SLO
    alert goes pending once its one threshold is set below any real latency."""
    for rule in rules("alert"):
        result = live.prom.query(rule["expr"], at=live.at)
        names = metric_names(rule["expr"])
        assert not {n for n in names if n not in live.exported and n not in NOT_HERE}
        if names & NOT_HERE:
            assert result == [], rule["alert"]
        # The measured quantity behind each Triton alert is a recording rule with live data.
        for record in re.findall(r"\b(namespace\w*:triton_\w+:\w+)", rule["expr"]):
            assert series_for_model(live.prom.query(record, at=live.at)), (rule["alert"], record)
    (error_alert,) = [r for r in rules("alert") if r["alert"] == "TritonHighErrorRatio"]
    assert live.delta.fail_count == 0
    assert live.prom.query(error_alert["expr"], at=live.at) == []

    def slo_alert() -> list[dict[str, Any]]:
        return [a for a in live.slo_prom.api("alerts")["alerts"]
                if a["labels"]["alertname"] == "TritonLatencySLOBreached"
                and a["labels"].get("model") == MODEL]

    (alert,) = wait_for("the latency alert with a 1 us SLO", slo_alert, timeout=15)
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"]["namespace"] == NAMESPACE and alert["labels"]["severity"] == "warning"
    assert not [a for a in live.prom.api("alerts")["alerts"]
                if a["labels"]["alertname"] == "TritonHighErrorRatio"]


def test_every_dashboard_query_on_live_data(live: Live) -> None:
    targets = panel_targets()
    assert {(title, legend) for title, legend, _ in targets} == set(PANELS), "a query without an expectation"
    rows: list[list[str]] = []
    values: dict[str, list[float]] = {}
    for title, legend, expr in targets:
        source = f"{title} / {legend}"
        values[legend] = check(live, source, grafana(expr, live.window_s), PANELS[(title, legend)], rows)
    print_table(f"Dashboard queries (window {live.window_s} s)", rows)
    # Server quantiles are ordered, and no request was slower inside Triton than at the client.
    p50, p95, p99 = (values[f"{{{{model}}}} {q}"][0] for q in ("p50", "p95", "p99"))
    client = live.report["latency_ms"]
    print(f"server p50/p95/p99 {p50:.1f}/{p95:.1f}/{p99:.1f} ms; client (Locust) "
          f"{client['p50']}/{client['p95']}/{client['p99']} ms, max {client['max']}")
    assert 0 < p50 <= p95 <= p99
    assert p50 <= client["p95"] and p95 <= client["max"]


def test_dashboard_variables_resolve_on_live_data(live: Live) -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name, want in (("namespace", NAMESPACE), ("model", MODEL)):
        metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["definition"]).groups()
        found = live.prom.api(f"label/{label}/values", **{"match[]": grafana(metric, live.window_s)})
        assert want in found, (name, found)


def test_dashboard_reads_only_metrics_triton_exports_or_documents(live: Live) -> None:
    """Public dashboards often use Triton metric names that do not exist; these are all real."""
    names = set().union(*(metric_names(e) for _, _, e in panel_targets()),
                        *(metric_names(r["expr"]) for r in rules("record") + rules("alert")))
    triton = {n for n in names if n.startswith("nv_")}
    assert triton - TRITON_GPU_METRICS <= live.exported
    assert names - triton <= CLUSTER_METRICS
    # The summaries the latency panel reads exist only with summary_latencies=true.
    assert "nv_inference_request_summary_us" in live.exported
