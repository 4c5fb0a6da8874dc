"""The load test's logic without a server: summaries, SLO checks, the guard, the knee, the split."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import cli
from loadtest.guard import verdict
from loadtest.report import error_type, failures_by_type, percentile, summarize
from loadtest.runner import locust_command, stop_process_group
from loadtest.server_stats import ModelCounters, ServerSnapshot
from loadtest.settings import Settings, parse_seconds, parse_steps
from loadtest.slo import Thresholds, evaluate
from loadtest.sweep import find_knee, format_table, plot


def entry(name: str, times: dict[int, int], failures: int = 0, batch: int = 1) -> dict:
    """A Locust JSON statistics entry with the given response-time histogram."""
    n = sum(times.values())
    return {"name": name, "method": "grpc", "num_requests": n, "num_failures": failures,
            "total_response_time": float(sum(k * v for k, v in times.items())),
            "max_response_time": float(max(times)), "response_times": {str(k): v for k, v in times.items()},
            "total_content_length": (n - failures) * batch, "start_time": 100.0,
            "last_request_timestamp": 110.0}


def test_durations_and_steps_parse() -> None:
    assert parse_seconds("90") == 90 and parse_seconds("1m30s") == 90 and parse_seconds("500ms") == 0.5
    assert parse_seconds("1.5m") == 90
    assert parse_steps("1, 2,4") == (1.0, 2.0, 4.0) and parse_steps("") == ()
    with pytest.raises(ValueError):
        parse_seconds("ten seconds")
    with pytest.raises(ValueError):
        parse_steps("0,2")


def test_settings_default_without_locust_options() -> None:
    settings = Settings.from_options(None)
    assert settings.user == "grpc" and settings.batch == 1 and settings.rate_per_user == 0
    custom = Settings.from_options(argparse.Namespace(loadtest_batch="4", loadtest_steps="1,2",
                                                      loadtest_step_time="5s"))
    assert custom.batch == 4 and custom.steps == (1.0, 2.0) and custom.step_time == 5.0


def test_summary_aggregates_endpoints_and_counts_images() -> None:
    summary = summarize([entry("a", {10: 90, 100: 10}, batch=4), entry("b", {20: 100}, failures=5)])
    assert summary.requests == 200 and summary.failures == 5
    assert summary.p50_ms == 20 and summary.p95_ms == 20 and summary.p99_ms == 100 == summary.max_ms
    assert summary.rps == pytest.approx(20.0)  # 200 requests over the 10 s span
    assert summary.images == 100 * 4 + 95
    assert summary.as_dict()["error_rate"] == pytest.approx(0.025)
    assert percentile({}, 0, 0.5) == 0.0


def test_unanswered_requests_are_failures_but_not_latency() -> None:
    setup = entry("setup", {0: 1}, failures=1)
    unfinished = entry("unfinished", {9000: 3}, failures=3)
    summary = summarize([entry("a", {10: 100}), setup, unfinished])
    assert summary.requests == 104 and summary.failures == 4 and summary.completed == 100
    assert summary.max_ms == 10 and summary.p99_ms == 10 and summary.rps == pytest.approx(10.0)
    assert "never answered" in summary.lines()[0]


def test_failures_grouped_by_exception_type() -> None:
    errors = [{"error": "ServerUnavailableError('server at x unavailable')", "occurrences": 3},
              {"error": "ServerUnavailableError('again')", "occurrences": 2},
              {"Error": "InferenceError('bad')", "Occurrences": "1"}]
    grouped = failures_by_type(errors)
    assert list(grouped) == ["ServerUnavailableError", "InferenceError"]
    assert grouped["ServerUnavailableError"]["count"] == 5
    assert error_type("plain text") == "plain text"


def test_slo_thresholds() -> None:
    summary = summarize([entry("a", {10: 95, 200: 5}, failures=1)])
    t = Thresholds(max_p95_ms=50, max_error_rate=0.05, min_rps=1)
    assert evaluate(summary.metrics(), t) == []
    missed = evaluate(summary.metrics(), Thresholds(max_p99_ms=100, max_error_rate=0.001, min_rps=50))
    assert len(missed) == 3 and any("p99_ms" in v for v in missed)
    # No completed request is no evidence: latency thresholds fail.
    empty = summarize([entry("a", {10: 4}, failures=4)])
    assert evaluate(empty.metrics(), Thresholds(max_p95_ms=50)) == ["p95_ms: not measured (threshold 50)"]
    assert not Thresholds().any and Thresholds(min_rps=1).any


def test_gate_rechecks_a_saved_report(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    summary = summarize([entry("a", {10: 95, 200: 5})]).as_dict()
    report.write_text(json.dumps({"summary": summary, "generator": {"reliable": False,
                                                                   "reasons": ["busy"]}}))
    assert cli.main(["gate", str(report), "--max-p95-ms", "500"]) == 0
    assert cli.main(["gate", str(report), "--max-p99-ms", "50"]) == 3
    assert cli.main(["gate", str(report), "--fail-on-unreliable"]) == 4


def test_guard_flags_a_saturated_generator() -> None:
    cpu = {"processes": {"1": {"mean_percent": 97.0, "max_percent": 100.0, "busy_share": 0.8,
                               "samples": 10}}, "machine_mean_percent": 60.0}
    assert not verdict(cpu, {}, [])["reliable"]
    calm = {"processes": {"1": {"mean_percent": 20.0, "max_percent": 30.0, "busy_share": 0.0,
                                "samples": 10}}, "machine_mean_percent": 40.0}
    assert verdict(calm, {}, [])["reliable"]
    assert not verdict(calm, {"cpu_warning": True}, [])["reliable"]
    assert not verdict(calm, {}, ["CPU usage above 90%! This may constrain your throughput"])["reliable"]
    held = {"event_loop_lag": {"requests": 100, "avg_ms": 8.0, "max_ms": 30.0,
                               "late_10ms_ratio": 0.3}}
    assert not verdict(calm, held, [], p50_ms=20.0)["reliable"]  # 40% of p50 is the generator's
    assert verdict(calm, held, [], p50_ms=500.0)["reliable"]  # 1.6%: noted, not disqualifying
    late = {"schedule_lag": {"requests": 100, "avg_ms": 20.0, "max_ms": 80.0,
                             "late_10ms_ratio": 0.4, "waited_for_slot": 0}}
    assert not verdict(calm, late, [])["reliable"]


def counters(name: str, requests: int, executions: int, queue_ms: float, compute_ms: float,
             server_ms: float) -> ModelCounters:
    ms = 1_000_000
    return ModelCounters(name, requests, executions,
                         {"success": requests, "fail": 0, "queue": requests},
                         {"success": int(server_ms * ms), "queue": int(queue_ms * ms),
                          "compute_input": int(compute_ms * ms * 0.1),
                          "compute_infer": int(compute_ms * ms * 0.9)})


def test_server_split_per_request_and_batch() -> None:
    before = ServerSnapshot("m", counters("m", 10, 10, 10, 100, 120))
    after = ServerSnapshot("m", counters("m", 110, 60, 510, 2100, 2720))
    split = (after - before).split(client_avg_ms=40.0, client_requests=100)
    assert split["requests"] == 100 and split["executions"] == 50 and split["avg_batch"] == 2.0
    assert split["queue_ms"] == pytest.approx(5.0) and split["compute_ms"] == pytest.approx(20.0, 0.01)
    assert split["server_ms"] == pytest.approx(26.0) and split["client_and_network_ms"] == pytest.approx(14.0)
    assert split["counts_match"]


def test_server_split_of_an_ensemble_uses_its_composing_models() -> None:
    ensemble = counters("e", 100, 100, 0, 0, 3000)
    pre = counters("pre", 100, 100, 100, 200, 300)
    model = counters("m", 100, 25, 400, 2000, 2400)
    split = ServerSnapshot("e", ensemble, (pre, model)).split()
    assert split["batching_model"] == "m" and split["avg_batch"] == 4.0
    assert split["queue_ms"] == pytest.approx(5.0) and split["compute_ms"] == pytest.approx(22.0, 0.01)
    assert set(split["models"]) == {"pre", "m"}


def test_knee_is_where_throughput_stops_growing(tmp_path: Path) -> None:
    def row(load: str, rps: float, p95: float, offered: float | None = None, err: float = 0.0) -> dict:
        return {"load": load, "rps": rps, "images_per_s": rps, "p50_ms": p95 / 2, "p95_ms": p95,
                "p99_ms": p95 * 1.2, "error_rate": err, "offered_rps": offered, "reliable": True}

    closed = [row("1", 50, 20), row("2", 80, 30), row("4", 120, 45), row("8", 126, 90),
              row("16", 127, 180)]
    assert find_knee(closed) == 2
    # Already near capacity at one user: latency doubles per step for a few % more throughput.
    saturated = [row("1", 2.0, 960), row("2", 2.3, 1860), row("4", 2.5, 3200)]
    assert find_knee(saturated) == 0
    open_loop = [row("10", 10, 15, 10), row("40", 39.5, 20, 40), row("80", 60, 900, 80)]
    assert find_knee(open_loop) == 1  # 80 req/s offered was not achieved: overloaded
    assert find_knee([row("1", 0, 0, err=1.0)]) is None
    table = format_table(closed, 2, 4)
    assert "knee" in table and "peak" in table and table.count("\n") == len(closed) + 1
    png = plot(closed, 2, tmp_path / "s.png", "test")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_locust_command_carries_every_parameter(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(
        ["--host", "127.0.0.1:1", "--users", "4", "--arrival-rate", "20", "--batch", "2",
         "--processes", "2", "--user", "raw", "--images", "/imgs"])
    cmd = " ".join(locust_command(args, tmp_path / "o"))
    for part in ("--loadtest-rate-per-user 5", "--loadtest-batch 2", "--processes 2",
                 "--loadtest-user raw", "--loadtest-images /imgs", "-u 4", "--host 127.0.0.1:1"):
        assert part in cmd
    steps = cli.build_parser().parse_args(["--steps", "1,2,8", "--step-duration", "3s"])
    cmd = " ".join(locust_command(steps, tmp_path / "o"))
    assert "--loadtest-steps 1,2,8" in cmd and "-u 8" in cmd and " -t " not in cmd
    http = cli.build_parser().parse_args(["--user", "http", "--http-host", "127.0.0.1:9"])
    assert "--host 127.0.0.1:9" in " ".join(locust_command(http, tmp_path / "o"))


def test_a_generator_that_ignores_sigterm_is_killed() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert stubborn.stdout.readline().strip() == "ready"
    assert stop_process_group(stubborn, grace=0.5) == -9
    assert stubborn.poll() is not None
