"""The load test's logic without a server: exact latency and its merge, the options table, the
report's figures, SLO checks, the guard, the knee, the split and the plot."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from client.stats import ModelStats
from loadtest import cli
from loadtest.guard import is_local, verdict
from loadtest.latency import Latencies
from loadtest.listeners import RunState, on_report_to_master, on_worker_report
from loadtest.options import (
    INTERNAL,
    OPTIONS,
    RUNNER,
    SLO,
    Settings,
    add_locust_options,
    locust_args,
    parse_seconds,
    parse_steps,
    payload_name,
)
from loadtest.report import error_type, failures_by_type, metrics, throughput
from loadtest.runner import locust_command, stop_process_group
from loadtest.server_stats import ServerSnapshot
from loadtest.slo import Thresholds, evaluate
from loadtest.sweep import COLUMNS, figure, find_knee, format_table, row_of

ROOT = Path(__file__).resolve().parents[1]
# Percentiles come from 0.15 %-wide log buckets, reported at the bucket's middle: at most 0.075 %
# relative error (loadtest/latency.py); min, max and mean are exact (reported in whole µs).
REL = 7.5e-4


def exact(samples: np.ndarray, q: float) -> float:
    """The q-th percentile by nearest rank (the histogram's definition): the k-th smallest sample,
    k = q % of the count rounded to the nearest integer."""
    rank = max(int(q * len(samples) / 100 + 0.5), 1)
    return float(np.sort(samples)[rank - 1])


def recorded(samples: np.ndarray) -> Latencies:
    lat = Latencies()
    for value in samples:
        lat.record(float(value))
    return lat


def latency_samples(seed: int, n: int = 20_000) -> np.ndarray:
    """A long-tailed latency distribution (ms), in whole microseconds."""
    rng = np.random.default_rng(seed)
    return np.round(rng.lognormal(mean=np.log(25.0), sigma=0.6, size=n) * 1000.0) / 1000.0


# -- exact latency -------------------------------------------------------------------------------
def test_percentiles_match_a_known_distribution() -> None:
    samples = latency_samples(1)
    summary = recorded(samples).summary()
    assert summary.count == len(samples)
    for label, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        assert getattr(summary, label) == pytest.approx(exact(samples, q), rel=REL), label
    assert summary.max == pytest.approx(samples.max(), rel=1e-12)
    assert summary.min == pytest.approx(samples.min(), rel=1e-12)
    assert summary.mean == pytest.approx(samples.mean(), abs=5e-4)  # reported in whole µs


def test_latencies_between_locust_buckets_stay_apart() -> None:
    """Locust would put all of these in its 1200 ms bucket; the histogram keeps them apart."""
    samples = np.linspace(1100.0, 1230.0, 1000)
    summary = recorded(samples).summary()
    assert summary.p50 == pytest.approx(exact(samples, 50), rel=REL)
    assert summary.p99 == pytest.approx(exact(samples, 99), rel=REL)
    assert summary.p50 < summary.p90 < summary.p99 < 1231


CHILD = """
import sys
from tests.test_loadtest_units import latency_samples, recorded
print(recorded(latency_samples(int(sys.argv[1]), 5_000)).encode())
"""


def test_histograms_merge_across_processes() -> None:
    """Each process records its own share; the merged percentiles are the union's."""
    seeds = (11, 12, 13)
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(seed)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True) for seed in seeds]
    encoded = [child.communicate(timeout=120)[0].strip() for child in children]
    assert all(child.returncode == 0 for child in children)
    merged = Latencies()
    for text in encoded:
        assert len(text) < 20_000  # small enough for every Locust worker report
        merged.add(Latencies.decode(text))
    union = np.concatenate([latency_samples(s, 5_000) for s in seeds])
    assert merged.count == len(union)
    for q in (50, 95, 99, 99.9):
        assert merged.percentile(q) == pytest.approx(exact(union, q), rel=REL)


def test_worker_reports_carry_deltas_into_the_run_and_its_steps() -> None:
    """What a worker recorded since its last report reaches the master once, in the right step."""
    worker, master = RunState(), RunState()
    master.mark_step(0, 1, {})
    first, second = latency_samples(3, 1000), latency_samples(4, 1000) + 100.0
    for value in first:
        worker.pending.record(float(value))
    data: dict = {}
    on_report_to_master(worker, data)
    on_worker_report(master, json.loads(json.dumps(data)))  # as it travels: plain data
    master.mark_step(1, 2, {})
    for value in second:
        worker.pending.record(float(value))
    data = {}
    on_report_to_master(worker, data)
    on_worker_report(master, data)
    on_report_to_master(worker, data := {})  # nothing new: an empty delta
    on_worker_report(master, data)
    assert master.total.count == 2000
    step0, step1 = (s.latencies for s in master.steps)
    assert step0.count == step1.count == 1000
    assert step0.percentile(99) == pytest.approx(exact(first, 99), rel=REL)
    assert step1.percentile(50) == pytest.approx(exact(second, 50), rel=REL)


# -- options -------------------------------------------------------------------------------------
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
    assert settings.payload == "float32"
    custom = Settings.from_options(argparse.Namespace(loadtest_batch="4", loadtest_steps="1,2",
                                                      loadtest_step_duration="5s"))
    assert custom.batch == 4 and custom.steps == (1.0, 2.0) and custom.step_duration == 5.0


def test_float_is_the_deprecated_name_of_float32() -> None:
    with pytest.warns(DeprecationWarning, match="float32"):
        assert payload_name("float") == "float32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert payload_name("uint8") == "uint8"
    with pytest.raises(argparse.ArgumentTypeError, match="float32, uint8"):
        payload_name("float16")
    args = cli.build_parser().parse_args(["--payload", "uint8"])
    assert args.payload == "uint8"


def test_every_option_is_declared_once_and_reaches_locust(tmp_path: Path) -> None:
    """The CLI, Locust's parser and the runner's command line all come from the one table.

    Checked in a process of its own: importing Locust monkey-patches the standard library, which
    must not happen inside the test session (its threads and imports would deadlock).
    """
    code = ("import pathlib, sys\n"
            "from tests.test_loadtest_units import check_options_reach_locust\n"
            "check_options_reach_locust(pathlib.Path(sys.argv[1]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def check_options_reach_locust(tmp_path: Path) -> None:
    from locust.argument_parser import get_parser

    run_flags = {a.dest for a in cli.build_parser()._actions}
    locust_parser = get_parser(default_config_files=[])
    add_locust_options(locust_parser)
    locust_flags = {a.dest: a for a in locust_parser._actions}
    for opt in OPTIONS:
        assert (opt.name in run_flags) == (opt.scope not in (INTERNAL,)), opt.name
        assert (opt.locust_dest in locust_flags) == (opt.scope != RUNNER), opt.name
        if opt.scope != RUNNER:
            assert locust_flags[opt.locust_dest].env_var == opt.env

    given = {"user": "raw", "raw_protocol": "grpc", "model": "m", "batch": "3", "images": "/imgs",
             "payload": "uint8", "timeout": "7", "attempts": "2", "think_ms": "5",
             "arrivals": "poisson", "max_inflight": "9", "steps": "1,2", "step_duration": "3s",
             "max_p50_ms": "1", "max_p95_ms": "2", "max_p99_ms": "3", "max_error_rate": "0.5",
             "min_rps": "4", "min_images_per_s": "6"}
    assert set(given) == {o.name for o in OPTIONS if o.scope != INTERNAL}
    argv = ["--host", "127.0.0.1:1", "--users", "4", "--arrival-rate", "20", "--processes", "2"]
    for name, value in given.items():
        argv += ["--" + name.replace("_", "-"), value]
    args = cli.build_parser().parse_args(argv)
    cmd = locust_command(args, tmp_path / "o")
    parsed = locust_parser.parse_args(cmd[cmd.index("-f"):])
    settings = Settings.from_options(parsed)
    assert settings.rate_per_user == 5.0 and settings.extras_file == f"{tmp_path / 'o'}.extras.json"
    for name, value in given.items():
        opt = next(o for o in OPTIONS if o.name == name)
        assert getattr(settings, name) == opt.value(value), name
    assert Thresholds.from_options(parsed).as_dict() == {
        k: float(v) for k, v in given.items() if k in Thresholds.__dataclass_fields__}
    assert parsed.num_users == 2 and "--processes" in cmd  # steps: the top step's users
    assert locust_args(cli.build_parser().parse_args([])) == [
        "--loadtest-user", "grpc", "--loadtest-raw-protocol", "grpc", "--loadtest-model",
        "pnasnet_large", "--loadtest-batch", "1", "--loadtest-payload", "float32",
        "--loadtest-timeout", "120", "--loadtest-attempts", "1", "--loadtest-think-ms", "0",
        "--loadtest-arrivals", "constant", "--loadtest-max-inflight", "32",
        "--loadtest-step-duration", "10s"]
    assert {o.name for o in OPTIONS if o.scope == SLO} == set(Thresholds.__dataclass_fields__)


def test_locust_command_for_http_and_fixed_users(tmp_path: Path) -> None:
    http = cli.build_parser().parse_args(["--user", "http", "--http-host", "127.0.0.1:9",
                                          "--users", "3"])
    cmd = " ".join(locust_command(http, tmp_path / "o"))
    assert "--host 127.0.0.1:9" in cmd and "-u 3" in cmd and "-t 20s" in cmd
    assert "--loadtest-rate-per-user" not in cmd


# -- report figures ------------------------------------------------------------------------------
def entry(name: str, requests: int, failures: int = 0, batch: int = 1) -> dict:
    return {"name": name, "num_requests": requests, "num_failures": failures,
            "total_content_length": (requests - failures) * batch, "start_time": 100.0,
            "last_request_timestamp": 110.0}


def test_throughput_counts_unanswered_as_failures_not_rate() -> None:
    flow = throughput([entry("a", 100, batch=4), entry("b", 100, failures=5),
                       entry("setup", 1, failures=1), entry("unfinished", 3, failures=3)])
    assert flow.requests == 204 and flow.failures == 9 and flow.unanswered == 4
    assert flow.requests_per_s == pytest.approx(20.0)  # 200 answered over the 10 s span
    assert flow.images == 400 + 95 and flow.error_rate == pytest.approx(9 / 204, abs=1e-6)


def test_failures_grouped_by_exception_type() -> None:
    errors = [{"error": "ServerUnavailableError('server at x unavailable')", "occurrences": 3},
              {"error": "ServerUnavailableError('again')", "occurrences": 2},
              {"Error": "InferenceError('bad')", "Occurrences": "1"}]
    grouped = failures_by_type(errors)
    assert list(grouped) == ["ServerUnavailableError", "InferenceError"]
    assert grouped["ServerUnavailableError"]["count"] == 5
    assert error_type("plain text") == "plain text"


def test_slo_thresholds_use_exact_latency() -> None:
    flow = throughput([entry("a", 100, failures=1)]).as_dict()
    samples = np.concatenate([np.full(95, 10.0), np.full(5, 203.0)])
    lat = recorded(samples).summary().as_dict()
    assert lat["p99"] == pytest.approx(203.0, rel=REL)  # Locust's bucket would say 200
    assert evaluate(metrics(flow, lat), Thresholds(max_p95_ms=50, max_error_rate=0.05,
                                                    min_rps=1)) == []
    missed = evaluate(metrics(flow, lat), Thresholds(max_p99_ms=202, max_error_rate=0.001,
                                                      min_rps=50))
    assert len(missed) == 3 and any("p99_ms" in v for v in missed)
    empty = Latencies().summary().as_dict()  # nothing succeeded: no evidence is not a pass
    assert evaluate(metrics(flow, empty), Thresholds(max_p95_ms=50)) == [
        "p95_ms: not measured (threshold 50)"]
    assert not Thresholds().any and Thresholds(min_rps=1).any


def test_gate_rechecks_a_saved_report(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    lat = recorded(np.concatenate([np.full(95, 10.0), np.full(5, 200.0)])).summary().as_dict()
    report.write_text(json.dumps({"throughput": throughput([entry("a", 100)]).as_dict(),
                                  "latency_ms": lat,
                                  "generator": {"reliable": False, "reasons": ["busy"]}}))
    assert cli.main(["gate", str(report), "--max-p95-ms", "500"]) == 0
    assert cli.main(["gate", str(report), "--max-p99-ms", "50"]) == 3
    assert cli.main(["gate", str(report), "--fail-on-unreliable"]) == 4


# -- the generator guard -------------------------------------------------------------------------
def cpu(mean: float, busy: float, machine: float) -> dict:
    return {"processes": {"1": {"mean_percent": mean, "max_percent": mean + 10, "busy_share": busy,
                                "samples": 20}}, "machine_mean_percent": machine, "cores": 2,
            "interval": 0.5}


def test_guard_flags_a_saturated_generator() -> None:
    assert not verdict(cpu(97, 0.8, 60), {}, [])["reliable"]
    calm = cpu(20, 0.0, 40)
    assert verdict(calm, {}, [])["reliable"]
    assert not verdict(calm, {"cpu_warning": True}, [])["reliable"]
    assert not verdict(calm, {}, ["CPU usage above 90%! This may constrain your throughput"])["reliable"]
    held = {"event_loop_lag": {"requests": 100, "avg_ms": 3.0, "max_ms": 30.0,
                               "late_10ms_ratio": 0.3}}
    assert not verdict(calm, held, [], p50_ms=20.0)["reliable"]  # 15% of p50 is the generator's
    assert verdict(calm, held, [], p50_ms=500.0)["reliable"]  # 0.6%: noted, not disqualifying
    late = {"schedule_lag": {"requests": 100, "avg_ms": 20.0, "max_ms": 80.0,
                             "late_10ms_ratio": 0.4, "waited_for_slot": 0}}
    assert not verdict(calm, late, [])["reliable"]


def test_guard_flags_a_generator_that_takes_a_saturated_machine_from_its_server() -> None:
    """The case a busy-core check misses: no generator core saturated, but on a machine shared
    with the server every core-second it takes is one the server did not get."""
    hungry = cpu(45, 0.0, 99)  # 0.45 cores of 2, machine saturated
    result = verdict(hungry, {}, [], 30.0, local_server=True, rps=250.0)
    assert not result["reliable"] and "server did not get" in result["reasons"][0]
    assert result["machine_share"] == pytest.approx(0.225)
    assert result["cpu_ms_per_request"] == pytest.approx(0.45 * 1000 / 250)
    steady = verdict({**hungry, "generator_cores": 0.2}, {}, [], 30.0, local_server=True, rps=250.0)
    assert steady["reliable"] and steady["machine_share"] == pytest.approx(0.1)
    assert verdict(hungry, {}, [], 30.0, local_server=False)["reliable"]  # a remote server
    assert verdict(cpu(45, 0.0, 60), {}, [], 30.0, local_server=True)["reliable"]  # CPU to spare
    assert verdict(cpu(12, 0.0, 99), {}, [], 30.0, local_server=True)["reliable"]  # cheap enough
    assert is_local("127.0.0.1:8001") and is_local("localhost:1") and is_local("http://[::1]:8000")
    assert not is_local("192.0.2.1:8001")


# -- server-side split -------------------------------------------------------------------------
def stats(requests: int, executions: int, queue_ms: float, compute_ms: float,
          server_ms: float) -> ModelStats:
    ms = 1_000_000
    return ModelStats(inference_count=requests, execution_count=executions, success_count=requests,
                      queue_ns=int(queue_ms * ms), compute_ns=int(compute_ms * ms * 0.9),
                      request_ns=int(server_ms * ms), compute_input_ns=int(compute_ms * ms * 0.1))


def test_server_split_per_request_and_batch() -> None:
    before = ServerSnapshot("m", stats(10, 10, 10, 100, 120))
    after = ServerSnapshot("m", stats(110, 60, 510, 2100, 2720))
    split = (after - before).split(client_avg_ms=40.0, client_requests=100)
    assert split["requests"] == 100 and split["executions"] == 50 and split["avg_batch"] == 2.0
    assert split["queue_ms"] == pytest.approx(5.0) and split["compute_ms"] == pytest.approx(20.0, 0.01)
    assert split["server_ms"] == pytest.approx(26.0)
    assert split["client_and_network_ms"] == pytest.approx(14.0)
    assert split["counts_match"]


def test_server_split_of_an_ensemble_uses_its_composing_models() -> None:
    ensemble = stats(100, 100, 0, 0, 3000)
    parts = {"pre": stats(100, 100, 100, 200, 300), "m": stats(100, 25, 400, 2000, 2400)}
    split = ServerSnapshot("e", ensemble, parts).split()
    assert split["batching_model"] == "m" and split["avg_batch"] == 4.0
    assert split["queue_ms"] == pytest.approx(5.0) and split["compute_ms"] == pytest.approx(22.0, 0.01)
    assert set(split["models"]) == {"pre", "m"}


# -- the sweep -----------------------------------------------------------------------------------
def level(users: float, rps: float, p50: float, offered: float | None = None,
          err: float = 0.0) -> dict:
    return {"users": users, "offered_rps": offered, "rps": rps, "images_per_s": rps,
            "p50_ms": p50, "p90_ms": p50 * 1.5, "p95_ms": p50 * 2, "p99_ms": p50 * 2.6,
            "max_ms": p50 * 3, "error_rate": err, "reliable": 1}


def test_knee_is_where_throughput_stops_growing() -> None:
    closed = [level(1, 50, 10), level(2, 80, 15), level(4, 120, 22), level(8, 126, 45),
              level(16, 127, 90)]
    assert find_knee(closed) == 2
    saturated = [level(1, 2.0, 480), level(2, 2.3, 930), level(4, 2.5, 1600)]
    assert find_knee(saturated) == 0
    open_loop = [level(4, 10, 8, 10), level(4, 39.5, 10, 40), level(4, 60, 450, 80)]
    assert find_knee(open_loop) == 1  # 80 req/s offered was not achieved: overloaded
    assert find_knee([level(1, 0, 0, err=1.0)]) is None
    table = format_table(closed, 2, 4)
    assert "knee" in table and "peak" in table and table.count("\n") == len(closed) + 1
    assert "| 4 users |" in table and "| 40 req/s |" in format_table(open_loop, 1, 2)


def test_sweep_rows_are_numeric(tmp_path: Path) -> None:
    report = {"throughput": {"requests_per_s": 10.5, "images_per_s": 21.0, "error_rate": 0.0},
              "latency_ms": {"p50": 9.1, "p90": 9.9, "p95": 10.2, "p99": 12.3, "max": 14.0},
              "server": {"queue_ms": 1.0, "compute_ms": 5.0, "client_and_network_ms": 2.0,
                         "avg_batch": 1.5}, "generator": {"reliable": True}}
    rows = [row_of(4, "users", 8, report), row_of(20, "rate", 4, None)]
    path = tmp_path / "s.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
    with path.open() as fh:
        cells = [(k, v) for row in csv.DictReader(fh) for k, v in row.items()]
    assert cells and all(v == "" or float(v) == float(v) for _, v in cells)
    assert rows[0]["users"] == 4 and rows[0]["reliable"] == 1 and rows[1]["offered_rps"] == 20


@pytest.mark.parametrize("knee", [0, 2, 4])
def test_plot_labels_stay_inside_the_axes_and_tails_are_distinct(tmp_path: Path, knee: int) -> None:
    rows = [level(1, 50, 10), level(2, 80, 15), level(4, 120, 22), level(8, 126, 45),
            level(16, 127, 90)]
    rows[3]["reliable"] = 0
    fig = figure(rows, knee, "a title")
    fig.canvas.draw()
    (ax,) = fig.axes
    box = ax.get_window_extent()
    for text in ax.texts:  # level labels, the knee's note, the unreliable legend
        extent = text.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 \
            and extent.y1 <= box.y1, text.get_text()
    lines = {line.get_label(): line for line in ax.get_lines() if line.get_label() in
             ("p50", "p95", "p99")}
    p95, p99 = lines["p95"], lines["p99"]
    assert p95.get_color() != p99.get_color() and p95.get_linestyle() != p99.get_linestyle()
    assert p95.get_marker() != p99.get_marker()
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_a_generator_that_ignores_sigterm_is_killed() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert stubborn.stdout.readline().strip() == "ready"
    assert stop_process_group(stubborn, grace=0.5) == -9
    assert stubborn.poll() is not None


def test_importing_the_load_test_does_not_import_locust() -> None:
    """Locust monkey-patches the standard library on import; a process that already uses ssl (a
    test session, a library user) must be able to import the load test's modules safely."""
    code = ("import ssl, sys\n"
            "import loadtest.cli, loadtest.listeners, loadtest.runner, loadtest.sweep\n"
            "assert 'locust' not in sys.modules, 'locust imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_old_payload_variable_still_works_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Job that still sets LOADTEST_TRANSPORT gets the same run and the new name."""
    from loadtest import options

    monkeypatch.setenv("LOADTEST_TRANSPORT", "uint8")
    # set, then removed: monkeypatch then removes what _take_old_variable writes at the end too
    monkeypatch.setenv("LOADTEST_PAYLOAD", "unset")
    monkeypatch.delenv("LOADTEST_PAYLOAD")
    payload = next(o for o in OPTIONS if o.name == "payload")
    with pytest.warns(DeprecationWarning, match="LOADTEST_TRANSPORT is deprecated; use LOADTEST_PAYLOAD"):
        options._take_old_variable(payload)
    assert os.environ["LOADTEST_PAYLOAD"] == "uint8"


def test_a_locust_killed_by_a_signal_is_named_and_exits_as_a_shell_reports_it() -> None:
    from loadtest.runner import exit_reason, shell_exit_code

    assert exit_reason(-6) == "was killed by SIGABRT"
    assert exit_reason(-9) == "was killed by SIGKILL"
    assert exit_reason(3) == "exited with code 3"
    assert shell_exit_code(-6) == 134 and shell_exit_code(-9) == 137
    assert shell_exit_code(3) == 3 and shell_exit_code(0) == 1  # no statistics is never success


GRPC_HOLD_PROBE = """
from gevent import monkey; monkey.patch_all()
import sys
from loadtest import grpc_gevent
if sys.argv[1] == "held":
    grpc_gevent.init()
    grpc_gevent.init()  # idempotent: one hold
else:
    import grpc.experimental.gevent; grpc.experimental.gevent.init_gevent()
import grpc
for _ in range(3):  # users come and go, as at the end of a run
    channel = grpc.insecure_channel("127.0.0.1:9")
    channel.close()
    del channel
print("closed", flush=True)
"""


@pytest.mark.parametrize("mode", ["held", "plain"])
def test_grpc_core_stays_up_in_the_locust_process_until_it_exits(mode: str) -> None:
    """gRPC's core shuts down when its last holder goes, which mid-run can abort Locust; the
    locustfile's init keeps one holder for the process's life, and the process still exits."""
    env = dict(os.environ, GRPC_TRACE="api", GRPC_VERBOSITY="debug", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", GRPC_HOLD_PROBE, mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "closed" in proc.stdout, proc.stderr[-2000:]
    inits = proc.stderr.count("grpc_init(void)")
    shutdowns = proc.stderr.count("grpc_shutdown(void)")
    assert inits >= 4
    if mode == "held":
        assert shutdowns == inits - 1  # the core's count never reaches zero
    else:
        assert shutdowns == inits  # what happens without it: the core shuts down mid-process
