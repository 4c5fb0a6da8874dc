"""Shared by the monitoring tests: the shipped rules and dashboard, promtool, and a real Prometheus.

Prometheus and promtool come from Debian's `prometheus` package, which `make test` installs (target
prometheus-tools); a missing binary fails the test that needs it, never skips it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from k8s_tools import K8S, load_yaml

from serve.lifecycle import terminate

RULE_FILE = K8S / "base" / "prometheusrule.yaml"
DASHBOARD = K8S / "base" / "dashboards" / "triton.json"
ADAPTER_VALUES = K8S / "base" / "prometheus-adapter-values.yaml"


def binary(name: str) -> str:
    """Path of `prometheus` or `promtool`; missing fails the test with the command that installs it."""
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not on PATH: run `make test` (target prometheus-tools), or "
                    "`apt-get install -y --no-install-recommends prometheus`")
    return found


def prometheus_rule() -> dict[str, Any]:
    """The PrometheusRule object shipped in k8s/base."""
    (rule,) = load_yaml(RULE_FILE.read_text())
    return rule


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups, as a Prometheus rule file holds them (the operator passes them unchanged)."""
    return prometheus_rule()["spec"]["groups"]


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of one kind ("record" or "alert"), in file order."""
    return [r for g in rule_groups() for r in g["rules"] if kind in r]


def write_rule_file(path: Path, groups: list[dict[str, Any]] | None = None) -> Path:
    """A rule file Prometheus and promtool load (JSON is valid YAML)."""
    path.write_text(json.dumps({"groups": rule_groups() if groups is None else groups}, indent=1))
    return path


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_targets() -> list[tuple[str, str, str]]:
    """(panel title, legend, expr) of every query of every dashboard panel."""
    return [(p["title"], t.get("legendFormat", ""), t["expr"])
            for p in dashboard()["panels"] for t in p.get("targets", [])]


def adapter_rules() -> list[dict[str, Any]]:
    (values,) = load_yaml(ADAPTER_VALUES.read_text())
    return values["rules"]["custom"]


def fill_adapter_query(template: str, series: str, selector: dict[str, str], namespace: str,
                       resource_label: str, names: list[str]) -> str:
    """`metricsQuery` filled the way prometheus-adapter fills it for a Pods metric.

    kubernetes-sigs/prometheus-adapter pkg/naming/metrics_query.go (Build): LabelMatchers are the
    HPA's metric selector, then `namespace="<ns>"`, then the resource label (`pod="a"`, or
    `pod=~"a|b"` for several pods), joined by commas; GroupBy is the resource label.
    """
    matchers = [f"{k}={json.dumps(v)}" for k, v in selector.items()]
    matchers.append(f"namespace={json.dumps(namespace)}")
    if len(names) == 1:
        matchers.append(f"{resource_label}={json.dumps(names[0])}")
    else:
        matchers.append(f"{resource_label}=~{json.dumps('|'.join(names))}")
    return (template.replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", ",".join(matchers))
            .replace("<<.GroupBy>>", resource_label))


class PrometheusError(RuntimeError):
    """Prometheus did not start, or a query failed; the message carries the reason."""


class LocalPrometheus:
    """A Prometheus server on 127.0.0.1 with its own config, rules and temporary storage.

    Started in a session of its own and stopped with SIGTERM to that process (then SIGKILL), so
    nothing outlives the test that started it.
    """

    def __init__(self, work_dir: Path, port: int, scrape_configs: list[dict[str, Any]],
                 rule_files: list[Path], interval: str = "1s") -> None:
        self.work_dir = work_dir
        self.port = port
        self.config = work_dir / "prometheus.yml"
        self.config.write_text(json.dumps({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape_configs,
        }, indent=1))
        self.log_path = work_dir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LocalPrometheus:
        cmd = [binary("prometheus"), f"--config.file={self.config}",
               f"--storage.tsdb.path={self.work_dir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            cwd=self.work_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n"
                                      f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        code = terminate(self.process, timeout)
        self.process = None
        return code

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` member, or PrometheusError with Prometheus' own message."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: [{"metric": {...}, "value": float}, ...] (NaN kept as float('nan'))."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        return [{"metric": s["metric"], "value": float(s["value"][1])} for s in data["result"]]

    def __enter__(self) -> LocalPrometheus:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
