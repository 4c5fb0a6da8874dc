"""Short real Locust runs against the local Triton server: every user, every shape, the reports,
the server-side split, the SLO gate, a multi-process run, and clean exits.

Each run lasts a few seconds; nothing here asserts how fast anything was.
"""

from __future__ import annotations

import csv
import json
import os
import re
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
    """Zero failures, every figure present and consistent, and the server-side split."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report is not None
    flow, lat = report["throughput"], report["latency_ms"]
    assert flow["requests"] > 0 and flow["failures"] == 0 and report["failures_by_type"] == {}
    # Every answered request's latency reached the (merged) histogram.
    assert lat["count"] == flow["requests"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["p999"] \
        <= lat["max"]
    assert flow["requests_per_s"] > 0
    assert flow["images"] == flow["requests"] * batch
    server = report["server"]
    assert "error" not in server, server
    assert server["requests"] >= flow["requests"] and server["counts_match"], server
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


def documented_fields() -> set[str]:
    """Field names of the README's table of the JSON report (`a.b`, `c` -> a.b, a.c)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("**The report, `<out>.json`, field by field.**"):]
    table = table[:table.index("\n\n", table.index("| field |"))]
    names: set[str] = set()
    for line in (row for row in table.splitlines() if row.startswith("| `")):
        tokens = re.findall(r"`([^`]+)`", line.split("|")[1])
        prefix = tokens[0].rsplit(".", 1)[0] + "." if "." in tokens[0] else ""
        names |= {tokens[0]} | {prefix + t for t in tokens[1:]}
    return {n.removesuffix(".*") for n in names}


def assert_documented(report: dict[str, Any]) -> None:
    """Every field of a real report is in the README's table, and each figure appears once."""
    documented = documented_fields()

    def covered(key: str) -> bool:
        return any(key in (d, d.removesuffix("[]")) or key.startswith((d + ".", d + "[]"))
                   for d in documented)

    def walk(value: Any, key: str = "") -> list[str]:
        if isinstance(value, dict) and value:
            return [k for name, v in value.items() for k in walk(v, f"{key}.{name}" if key else name)]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return walk(value[0], key + "[]")
        return [key]

    keys = walk(report)
    missing = sorted(k for k in keys if not covered(k))
    assert not missing, f"report fields missing from README.md: {missing}"
    leaves = [k.rsplit(".", 1)[-1] for k in keys if not k.startswith("steps[]")]
    for figure in ("p50", "p95", "p99", "requests_per_s", "images_per_s", "error_rate"):
        assert leaves.count(figure) == 1, (figure, [k for k in keys if k.endswith(figure)])


def test_grpc_user_fixed_users_with_slo_that_holds(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "grpc")
    proc, report = loadtest("--host", grpc_url, "--users", "3", "--duration", "3s", "--out", out,
                            "--max-p95-ms", "600000", "--max-error-rate", "0", "--min-rps", "0.1")
    assert_clean_report(proc, report)
    assert_documented(report)
    assert report["locust"]["user_classes"] == ["EmbeddingGrpcUser"]
    assert report["config"]["shape"] == "fixed"
    assert "SLO: passed" in proc.stdout and "server:" in proc.stdout and "p95" in proc.stdout


def test_raw_tensor_user_with_batches(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "raw")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--batch", "3", "--users", "2",
                            "--duration", "3s", "--out", out)
    assert_clean_report(proc, report, batch=3)
    assert report["locust"]["user_classes"] == ["RawTensorUser"]


@pytest.mark.parametrize("payload", ["float32", "uint8"])
def test_raw_user_over_http_sends_prebuilt_bodies(server, payload: str,  # noqa: ANN001
                                                  tmp_path: Path) -> None:
    out = str(tmp_path / "raw-http")
    proc, report = loadtest("--user", "raw", "--raw-protocol", "http", "--http-host",
                            server.http_url, "--payload", payload, "--batch", "2", "--users", "2",
                            "--duration", "3s", "--out", out)
    assert_clean_report(proc, report, batch=2)
    assert report["config"]["protocol"] == "http" and report["config"]["payload"] == payload
    assert report["locust"]["user_classes"] == ["RawTensorUser"]


def test_raw_http_sender_answers_and_raises_typed_errors(server) -> None:  # noqa: ANN001
    """In-process: a pre-built body is answered with one row per image; a body the model
    rejects raises the client's typed error naming the model, and the server stays up."""
    import numpy as np

    from client import EmbeddingClient
    from client.errors import EmbeddingError
    from loadtest.raw import RawHttpSender

    with EmbeddingClient(server.http_url, protocol="http", payload="float32") as client:
        shape = client.float_info.input_shape
        good = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
        wrong = np.zeros((1, shape[0] + 1, shape[1], 3), np.float32)
        sender = RawHttpSender(client, [good, wrong], timeout=60)
        try:
            assert sender.send(0) == 3
            with pytest.raises(EmbeddingError, match="pnasnet_large") as failed:
                sender.send(1)
            assert "shape" in str(failed.value) or "dims" in str(failed.value)
            assert sender.send(0) == 3  # the server still answers
        finally:
            sender.close()


def test_http_user(server, tmp_path: Path) -> None:  # noqa: ANN001
    out = str(tmp_path / "http")
    proc, report = loadtest("--user", "http", "--http-host", server.http_url, "--users", "2",
                            "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)
    assert report["locust"]["user_classes"] == ["EmbeddingHttpUser"]
    assert report["config"]["protocol"] == "http"


def test_compact_transport_splits_time_over_the_ensemble(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "uint8")
    proc, report = loadtest("--host", grpc_url, "--payload", "uint8", "--user", "raw", "--users",
                            "2", "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)
    models = report["server"]["models"]  # the ensemble's steps: conversion, then the model
    assert "pnasnet_large" in models and len(models) == 2
    assert report["server"]["batching_model"] == "pnasnet_large"
    assert_documented(report)


def test_stepped_ramp_reports_each_step(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "steps")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--steps", "1,2",
                            "--step-duration", "2s", "--out", out)
    assert_clean_report(proc, report)
    steps = report["steps"]
    assert [s["users"] for s in steps] == [1, 2]
    assert sum(s["throughput"]["requests"] for s in steps) == report["throughput"]["requests"]
    # The steps' exact histograms split the run's (worker reports land in the step they reach).
    assert sum(s["latency_ms"]["count"] for s in steps) == report["latency_ms"]["count"]
    assert_documented(report)
    assert all(s["throughput"]["failures"] == 0 and s["latency_ms"]["p95"] > 0 for s in steps)


def test_open_loop_arrival_rate(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "rate")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--arrival-rate", "10",
                            "--users", "2", "--arrivals", "poisson", "--duration", "3s", "--out", out)
    assert_clean_report(proc, report)
    assert report["config"]["shape"] == "arrival-rate"
    lag = report["generator"]["schedule_lag"]
    assert lag["requests"] >= report["throughput"]["requests"] and lag["max_ms"] >= 0


def test_sweep_writes_table_plot_and_knee(grpc_url: str, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "loadtest", "sweep", "--host", grpc_url,
                           "--user", "raw", "--users", "1,2", "--step-duration", "2s",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(Path(f"{out}_sweep.json").read_text())
    assert [r["users"] for r in result["rows"]] == [1, 2]
    assert all(r["rps"] > 0 and r["error_rate"] == 0 and r["compute_ms"] > 0 for r in result["rows"])
    assert result["knee"] in (0, 1) and result["peak"] in (0, 1)
    assert Path(f"{out}_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "knee" in Path(f"{out}_sweep.md").read_text()
    with Path(f"{out}_sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(v == "" or float(v) >= 0 for r in rows for v in r.values())
    assert "knee:" in proc.stdout
    # Per level, only its JSON report is kept unless the Locust HTML is asked for.
    kept = sorted(p.name for p in Path(f"{out}_sweep_levels").iterdir())
    assert kept == ["level0.json", "level1.json"], kept


def test_slo_gate_fails_when_a_threshold_is_missed(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "slo")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--users", "1", "--duration", "2s",
                            "--out", out, "--max-p95-ms", "0.001", "--min-rps", "1000000")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert report["throughput"]["failures"] == 0  # the run itself was fine
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
    assert data["locust"]["user_classes"] == ["RawTensorUser"]
    flow = data["throughput"]
    assert flow["requests"] > 0 and flow["failures"] == 0 and flow["images"] == 2 * flow["requests"]
    assert data["latency_ms"]["count"] == flow["requests"]
    assert data["slo"]["violations"] and not data["slo"]["passed"]
    assert "exact latency ms: p50" in proc.stderr  # what `kubectl logs` of the master shows


def test_multi_process_run_keeps_every_request(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "procs")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--processes", "2", "--users", "2",
                            "--duration", "3s", "--out", out)
    # counts_match: the workers' statistics all reached the master; latency count = requests: so
    # did every latency each worker process recorded, merged into one histogram.
    assert_clean_report(proc, report)
    assert report["locust"]["runner"] == "MasterRunner" and report["locust"]["workers"] == 2


def test_grpc_user_five_runs_in_a_row_each_exit_by_themselves(grpc_url: str, tmp_path: Path) -> None:
    for i in range(5):
        out = str(tmp_path / f"again{i}")
        proc, report = loadtest("--host", grpc_url, "--users", "2", "--duration", "2s", "--out", out)
        assert proc.returncode == 0, f"run {i}: {proc.stdout}{proc.stderr}"
        assert report["locust"]["exited_by_itself"] and report["locust"]["exit_code"] == 0
        assert report["throughput"]["requests"] > 0 and report["throughput"]["failures"] == 0


# -- the target is checked before a run starts ---------------------------------------------------
def assert_refused(proc: subprocess.CompletedProcess, out: str, *words: str) -> None:
    """Exit 5 at once with one clear line, no Locust run, no report, no 'reliable' verdict."""
    assert proc.returncode == 5, proc.stdout + proc.stderr
    problem = [line for line in proc.stderr.splitlines() if line.startswith("loadtest: ")]
    assert len(problem) == 1 and all(w in problem[0] for w in words), proc.stderr
    assert "locust:" not in proc.stdout and "reliable" not in proc.stdout + proc.stderr
    assert not Path(f"{out}.json").exists() and not Path(f"{out}.locust.log").exists()


def test_no_server_at_the_address_fails_at_once(tmp_path: Path) -> None:
    from serve.server import free_port

    out = str(tmp_path / "nothing")
    proc, _ = loadtest("--host", f"127.0.0.1:{free_port()}", "--duration", "60s", "--out", out)
    assert_refused(proc, out, "no Triton server answers", "--host")


def test_the_http_port_given_as_the_grpc_address_fails_at_once(server, tmp_path: Path) -> None:  # noqa: ANN001
    out = str(tmp_path / "wrong")
    proc, _ = loadtest("--host", server.http_url.split("://")[-1], "--duration", "60s",
                       "--out", out)
    assert_refused(proc, out, "no Triton server answers over grpc")


def test_a_model_that_is_not_loaded_fails_at_once(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "nomodel")
    proc, _ = loadtest("--host", grpc_url, "--model", "no_such_model", "--duration", "60s",
                       "--out", out)
    assert_refused(proc, out, "'no_such_model'", "not loaded")


def test_a_missing_uint8_ensemble_fails_at_once(grpc_url: str, tmp_path: Path) -> None:
    """The float model is there, its `_uint8` ensemble is not: the uint8 payload can't run."""
    out = str(tmp_path / "noensemble")
    model = "pnasnet_large_uint8_to_float"  # loaded, but nothing is exported beside it
    proc, _ = loadtest("--host", grpc_url, "--model", model, "--payload", "uint8",
                       "--duration", "60s", "--out", out)
    assert_refused(proc, out, f"'{model}_uint8'", "ensemble")


def test_the_old_transport_flag_and_float_still_work(grpc_url: str, tmp_path: Path) -> None:
    out = str(tmp_path / "oldname")
    proc, report = loadtest("--host", grpc_url, "--user", "raw", "--transport", "float",
                            "--users", "1", "--duration", "2s", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--transport is deprecated; use --payload" in proc.stderr
    assert re.search(r"payload 'float' is deprecated; use 'float32'", proc.stderr)
    assert report["config"]["payload"] == "float32"


def test_sigterm_to_the_load_test_alone_stops_its_locust(grpc_url: str, tmp_path: Path) -> None:
    """Locust runs in a session of its own: a TERM to `python -m loadtest` must still end it."""
    import signal
    import time

    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "loadtest", "--host", grpc_url, "--users", "2",
                             "--duration", "120s", "--out", str(tmp_path / "term")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        locust: list[psutil.Process] = []
        while time.monotonic() < deadline and not locust:
            locust = [p for p in psutil.Process(proc.pid).children(recursive=True)
                      if "locust" in " ".join(p.cmdline())]
            time.sleep(0.2)
        assert locust, "Locust never started"
        time.sleep(2)  # users running
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        gone, alive = psutil.wait_procs(locust, timeout=15)
        assert alive == [], [p.pid for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
