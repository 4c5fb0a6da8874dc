"""Short real Locust runs against the local Triton server: every user, every shape, the reports,
the server-side split, the SLO gate, a multi-process run, and clean exits.

Each run lasts a few seconds; nothing here asserts how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 180  # a hung run fails the test instead of the session


def loadtest(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess,
                                                                      dict[str, Any] | None]:
    """Run `python -m loadtest ARGS`; return the process and the JSON report at --out, if any."""
    proc = subprocess.run([sys.executable, "-m", "loadtest", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, env=env)
    out = Path(args[args.index("--out") + 1])
    path = Path(f"{out}.json")
    return proc, json.loads(path.read_text()) if path.exists() else None


def assert_clean_report(proc: subprocess.CompletedProcess, report: dict[str, Any] | None,
                        batch: int = 1) -> None:
    """Zero failures, every summary field present and consistent, and the server-side split."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report is not None
    summary = report["summary"]
    assert summary["requests"] > 0 and summary["failures"] == 0 and report["failures_by_type"] == {}
    lat = report["latency_ms"]
    assert set(lat) == {"p50", "p90", "p95", "p99", "max", "avg"}
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"] + 1
    assert report["requests_per_s"] > 0
    assert report["images_per_s"] == pytest.approx(report["requests_per_s"] * batch, rel=0.01)
    server = report["server"]
    assert "error" not in server, server
    assert server["requests"] >= summary["requests"] and server["counts_match"], server
    assert server["images"] == server["requests"] * batch
    assert server["executions"] > 0 and server["avg_batch"] >= 1.0
    assert server["queue_ms"] >= 0 and server["compute_ms"] > 0
    assert server["server_ms"] >= server["compute_ms"]
    assert server["client_and_network_ms"] >= 0
    gen = report["generator"]
    assert isinstance(gen["reliable"], bool) and gen["cpu"]["processes"]
    assert report["slo"]["passed"] and report["exit_code"] == 0
    files = report["files"]
    assert Path(files["html"]).stat().st_size > 0 and Path(files["csv"]).exists()


def test_grpc_user_fixed_users_with_slo_that_holds(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "grpc")
    proc, report = loadtest("--host", grpc_url, "--users", "3", "--duration", "3s", "--out", out,
                            "--max-p95-ms", "600000", "--max-error-rate", "0", "--min-rps", "0.1")
    assert_clean_report(proc, report)
    assert report["locust"]["user_classes"] == ["EmbeddingGrpcUser"]
    assert report["config"]["shape"] == "fixed"
    assert "SLO: passed" in proc.stdout and "server:" in proc.stdout and "p95" in proc.stdout


def test_raw_tensor_user_with_batches(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "raw")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--batch", "3", "--users", "2",
                            "--duration", "3s", "--out", out)
    assert_clean_report(proc, report, batch=3)
    assert report["locust"]["user_classes"] == ["RawTensorUser"]


def test_http_user(server, tmp_path: Path) -> None:  # noqa: ANN001
    out = str(tmp_path / "http")
    proc, report = loadtest("--user", "http", "--http-host", server.http_url, "--users", "2",
                            "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)
    assert report["locust"]["user_classes"] == ["EmbeddingHttpUser"]
    assert report["config"]["protocol"] == "http"


def test_compact_transport_splits_time_over_the_ensemble(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "uint8")
    proc, report = loadtest("--host", grpc_url, "--transport", "uint8", "--user", "raw", "--users",
                            "2", "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)
    models = report["server"]["models"]  # the ensemble's steps: conversion, then the model
    assert "pnasnet_large" in models and len(models) == 2
    assert report["server"]["batching_model"] == "pnasnet_large"


def test_stepped_ramp_reports_each_step(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "steps")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--steps", "1,2",
                            "--step-duration", "2s", "--out", out)
    assert_clean_report(proc, report)
    steps = report["steps"]
    assert [s["users"] for s in steps] == [1, 2]
    assert sum(s["requests"] for s in steps) == report["summary"]["requests"]
    assert all(s["failures"] == 0 and s["p95_ms"] > 0 for s in steps)


def test_open_loop_arrival_rate(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "rate")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--arrival-rate", "10",
                            "--users", "2", "--arrivals", "poisson", "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)
    assert report["config"]["shape"] == "arrival-rate"
    lag = report["generator"]["schedule_lag"]
    assert lag["requests"] >= report["summary"]["requests"] and lag["max_ms"] >= 0


def test_sweep_writes_table_plot_and_knee(grpc_url: str, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "loadtest", "sweep", "--host", grpc_url,
                           "--user", "raw", "--users", "1,2", "--step-duration", "2s",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(Path(f"{out}_sweep.json").read_text())
    assert [r["load"] for r in result["rows"]] == ["1 users", "2 users"]
    assert all(r["rps"] > 0 and r["error_rate"] == 0 and r["compute_ms"] > 0 for r in result["rows"])
    assert result["knee"] in (0, 1) and result["peak"] in (0, 1)
    assert Path(f"{out}_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "knee" in Path(f"{out}_sweep.md").read_text()
    assert Path(f"{out}_sweep.csv").read_text().count("\n") == 3
    assert "knee:" in proc.stdout


def test_slo_gate_fails_when_a_threshold_is_missed(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "slo")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--users", "1", "--duration", "2s",
                            "--out", out, "--max-p95-ms", "0.001", "--min-rps", "1000000")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert report["summary"]["failures"] == 0  # the run itself was fine
    assert not report["slo"]["passed"] and len(report["slo"]["violations"]) == 2
    assert "SLO: MISSED" in proc.stdout
    gate = subprocess.run([sys.executable, "-m", "loadtest", "gate", f"{out}.json",
                           "--max-p95-ms", "600000"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_locustfile_alone_configured_by_environment(grpc_url: str, tmp_path: Path) -> None:
    """As the Kubernetes master runs it: plain `locust`, every parameter from the environment,
    and the SLO gate in the locustfile sets Locust's exit code."""
    extras = tmp_path / "extras.json"
    env = dict(os.environ, LOCUST_LOCUSTFILE="loadtest/locustfile.py", LOCUST_HOST=grpc_url,
               LOCUST_USERS="2", LOCUST_SPAWN_RATE="2", LOCUST_RUN_TIME="2s", LOCUST_HEADLESS="true",
               LOCUST_ONLY_SUMMARY="true", LOCUST_LOGLEVEL="WARNING", LOADTEST_USER="raw",
               LOADTEST_BATCH="2", LOADTEST_MAX_P95_MS="0.001", LOADTEST_EXTRAS_FILE=str(extras))
    proc = subprocess.run([sys.executable, "-m", "locust"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    data = json.loads(extras.read_text())
    assert data["user_classes"] == ["RawTensorUser"]
    assert data["summary"]["requests"] > 0 and data["summary"]["failures"] == 0
    assert data["summary"]["images"] == 2 * data["summary"]["requests"]
    assert data["slo"]["violations"] and not data["slo"]["passed"]


def test_multi_process_run_keeps_every_request(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "procs")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--processes", "2", "--users", "2",
                            "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)  # counts_match: the workers' statistics all reached the master
    assert report["locust"]["runner"] == "MasterRunner" and report["locust"]["workers"] == 2


def test_grpc_user_five_runs_in_a_row_each_exit_by_themselves(grpc_url: str, tmp_path: Path) -> None:
    for i in range(5):
        out = str(tmp_path / f"again{i}")
        proc, report = loadtest("--host", grpc_url, "--users", "2", "--duration", "2s", "--out", out)
        assert proc.returncode == 0, f"run {i}: {proc.stdout}{proc.stderr}"
        assert report["locust_exited_by_itself"] and report["locust_exit_code"] == 0
        assert report["summary"]["requests"] > 0 and report["summary"]["failures"] == 0
