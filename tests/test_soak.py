"""`make soak` (bench/soak.py): a short real run against its own server, and its verdict rules.

The soak is a benchmark: nothing here times it. The run checks that it starts its own server,
loads it from a client process, reports every interval, writes its report and leaves nothing
running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from bench.soak import Row, judge

ROOT = Path(__file__).resolve().parents[1]


def row(minute: float, server_mb: float = 100.0, p99: float = 50.0, failures: int = 0) -> Row:
    return Row(minute, 100, failures, 20.0, p99, 10.0, server_mb, 50.0, 80.0)


def test_verdict_flags_failures_rss_growth_and_p99_drift() -> None:
    steady = [row(m) for m in range(1, 7)]
    assert judge(steady, 1, 0.05, 0.2).passed
    grown = [*steady[:-1], row(6, server_mb=110.0)]
    v = judge(grown, 1, 0.05, 0.2)
    assert not v.passed and "server_rss_mb grew +10.0%" in v.reasons[0]
    warm = [row(1, server_mb=60.0), *steady[1:]]  # growth inside the warm-up is left out
    assert judge(warm, 1, 0.05, 0.2).passed
    drift = [*steady[:4], row(5, p99=80.0), row(6, p99=80.0)]
    assert any("p99 drifted" in r for r in judge(drift, 1, 0.05, 0.2).reasons)
    failed = [*steady[:-1], row(6, failures=2)]
    assert judge(failed, 1, 0.05, 0.2).reasons == ["2 failed requests"]
    assert "too short" in judge(steady[:1], 1, 0.05, 0.2).reasons[0]


def test_a_short_soak_reports_each_interval_and_leaves_nothing_running(
        exported_repo: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "soak", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--repository", str(exported_repo), "--users", "2",
         "--duration", "9s", "--interval", "3s", "--out", str(out), "--work-dir", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    rows, verdict = report["rows"], report["verdict"]
    assert report["users"] == 2 and len(rows) >= 2
    assert all(r["requests"] > 0 and r["failures"] == 0 and 0 < r["p50_ms"] <= r["p99_ms"]
               for r in rows)
    assert all(r["server_rss_mb"] > 10 and r["client_rss_mb"] > 10 for r in rows)
    assert verdict["failures"] == 0 and verdict["passed"] == (proc.returncode == 0)
    assert "verdict: " in proc.stdout and out.with_suffix(".md").read_text().count("\n| ") >= 2
    left = [p.info for p in psutil.process_iter(["pid", "cmdline"])
            if str(work) in " ".join(p.info["cmdline"] or [])]
    assert not left, left
