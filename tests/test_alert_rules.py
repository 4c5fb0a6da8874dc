"""The shipped alerts: promtool accepts them, unit tests show each one firing and staying quiet, the
tests catch a broken rule, and every alert has its runbook in k8s/README.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from k8s_tools import K8S, load_yaml, rendered
from monitoring_tools import RULE_FILE, binary, rule_groups, rules, write_rule_file

UNIT_TESTS = Path(__file__).with_name("promtool") / "triton-alerts.test.yaml"
README = K8S / "README.md"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def unit_test_dir(tmp_path: Path, groups: list[dict[str, Any]] | None = None) -> Path:
    """The unit tests beside a rule file written from the PrometheusRule (or from `groups`)."""
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    write_rule_file(tmp_path / "triton-rules.yaml", groups)
    return tmp_path


def test_promtool_accepts_every_rule(tmp_path: Path) -> None:
    path = write_rule_file(tmp_path / "triton-rules.yaml")
    done = promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in rule_groups())
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_alert_unit_tests_pass(tmp_path: Path) -> None:
    done = promtool("test", "rules", UNIT_TESTS.name, cwd=unit_test_dir(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    (suite,) = load_yaml(UNIT_TESTS.read_text())
    cases = [c for t in suite["tests"] for c in t.get("alert_rule_test", [])]
    for alert in rules("alert"):
        name = alert["alert"]
        own = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in own), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in own), f"{name}: no case where it stays quiet"
    assert {c["alertname"] for c in cases} == {a["alert"] for a in rules("alert")} == set(ALERT_NAMES)


def test_the_unit_tests_catch_a_weakened_alert(tmp_path: Path) -> None:
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "TritonHighErrorRatio":
                rule["expr"] = rule["expr"].replace("> 0.01", "> 0.5")
            if rule.get("alert") == "TritonRestarting":
                rule["for"] = "10m"
    done = promtool("test", "rules", UNIT_TESTS.name, cwd=unit_test_dir(tmp_path, groups))
    assert done.returncode != 0
    assert "alertname: TritonHighErrorRatio" in done.stdout + done.stderr
    assert "alertname: TritonRestarting" in done.stdout + done.stderr


def test_the_latency_slo_is_set_in_one_place() -> None:
    """One recording rule holds the threshold; the alert compares against it, not a number."""
    (slo,) = [r for r in rules("record") if r["record"] == "triton:latency_slo_p95_us"]
    assert re.fullmatch(r"vector\(\d+\)", slo["expr"])
    (alert,) = [r for r in rules("alert") if r["alert"] == "TritonLatencySLOBreached"]
    assert "triton:latency_slo_p95_us" in alert["expr"]
    assert not re.search(r"[<>]=?\s*\d", alert["expr"])


def test_queue_alert_starts_where_the_autoscaler_targets() -> None:
    hpa = next(d for d in rendered(K8S / "overlays" / "gpu") if d["kind"] == "HorizontalPodAutoscaler")
    target = float(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
    (alert,) = [r for r in rules("alert") if r["alert"] == "TritonQueueTimeGrowing"]
    (threshold,) = re.findall(r"triton_queue_time_per_request_us:rate2m > (\d+)", alert["expr"])
    assert float(threshold) == target


def runbook_sections() -> dict[str, str]:
    """`#### <AlertName>` sections of k8s/README.md, each up to the next heading."""
    text = README.read_text()
    found = {}
    for m in re.finditer(r"^#### (Triton\w+)\n(.*?)(?=^#{1,4} )", text, flags=re.S | re.M):
        found[m.group(1)] = m.group(2)
    return found


ALERT_NAMES = re.findall(r"^\s+- alert: (\w+)$", RULE_FILE.read_text(), flags=re.M)


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_has_a_runbook(alert: str) -> None:
    sections = runbook_sections()
    assert alert in sections, f"k8s/README.md has no '#### {alert}' runbook"
    body = sections[alert]
    assert "**What it means.**" in body
    checks = re.findall(r"^\d\. ", body.split("**First checks.**", 1)[-1], flags=re.M)
    assert len(checks) >= 3, f"{alert}: fewer than three first checks"
    (rule,) = [r for r in rules("alert") if r["alert"] == alert]
    assert rule["annotations"]["runbook_url"] == f"k8s/README.md#{alert.lower()}"
    assert rule["labels"]["severity"] in ("critical", "warning")
