"""One headless Locust run as a subprocess, measured from both sides, judged and reported.

Around Locust, this reads Triton's statistics before and after (so the report splits each
request's time into client + network, queue and compute, and gives the executed batch size),
samples the generator's CPU (so a self-saturated generator is flagged), and checks SLO thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.guard import CpuMonitor, locust_cpu_warnings, verdict
from loadtest.report import Summary, failures_by_type, read_failures, read_summary
from loadtest.server_stats import ServerStats
from loadtest.settings import parse_seconds
from loadtest.slo import SLO_EXIT_CODE, Thresholds, evaluate

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: A run that completed but whose measurement is not trustworthy (only with --fail-on-unreliable).
UNRELIABLE_EXIT_CODE = 4
#: Locust gets this long past its run time to stop users (--stop-timeout 30), write reports and
#: exit; then it is stopped, so a pipeline never waits on a hung generator.
EXIT_GRACE_S = 120.0


def target(args: argparse.Namespace) -> tuple[str, str]:
    """(address, protocol) the users load: Triton's HTTP address for the HTTP user, else gRPC."""
    if args.user == "http" or (args.user == "raw" and args.raw_protocol == "http"):
        return args.http_host, "http"
    return args.host, "grpc"


def shape_of(args: argparse.Namespace) -> str:
    if args.steps:
        return "steps"
    return "arrival-rate" if args.arrival_rate else "fixed"


def locust_command(args: argparse.Namespace, out: Path) -> list[str]:
    """The Locust command line; every load-test parameter is a locustfile option."""
    host, _ = target(args)
    users = args.users
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "--host", host, "--csv", str(out), "--html", f"{out}.html",
           "--json-file", f"{out}.locust", "--stop-timeout", "30", "--loglevel", "WARNING",
           "--loadtest-user", args.user, "--loadtest-raw-protocol", args.raw_protocol,
           "--loadtest-model", args.model,
           "--loadtest-batch", str(args.batch), "--loadtest-transport", args.transport,
           "--loadtest-timeout", str(args.timeout), "--loadtest-attempts", str(args.attempts),
           "--loadtest-think-ms", str(args.think_ms),
           "--loadtest-extras-file", f"{out}.extras.json"]
    if args.images:
        cmd += ["--loadtest-images", str(args.images)]
    if args.steps:
        steps = [s for s in args.steps.split(",") if s]
        cmd += ["--loadtest-steps", ",".join(steps), "--loadtest-step-time", args.step_duration,
                "-u", str(max(int(float(s)) for s in steps)),
                "-r", str(args.spawn_rate or max(int(float(s)) for s in steps))]
    else:
        cmd += ["-u", str(users), "-r", str(args.spawn_rate or users), "-t", args.duration]
    if args.arrival_rate:
        cmd += ["--loadtest-rate-per-user", f"{args.arrival_rate / users:.6g}",
                "--loadtest-arrivals", args.arrivals,
                "--loadtest-max-inflight", str(args.max_inflight)]
    if args.processes and args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    return cmd


def served_model(args: argparse.Namespace) -> str:
    """The model requests go to: the `<model>_uint8` ensemble for the compact transport."""
    if args.transport == "uint8":
        from client import compact_model_name

        return compact_model_name(args.model)
    return args.model


def expected_seconds(args: argparse.Namespace) -> float:
    """How long the Locust run should last (without start-up and shutdown)."""
    if args.steps:
        return len([s for s in args.steps.split(",") if s]) * parse_seconds(args.step_duration)
    return parse_seconds(args.duration)


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> int:
    """SIGTERM the Locust process group (master and workers), SIGKILL what is left after `grace`.

    SIGKILL too, because a Locust stuck at exit (a gRPC client's finalizer) ignores SIGTERM.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    return proc.returncode if proc.returncode is not None else -signal.SIGKILL


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def server_line(split: dict[str, Any]) -> str:
    if "error" in split:
        return f"server: statistics unavailable ({split['error']})"
    line = (f"server: {split['requests']} requests ran as {split['executions']} executions "
            f"(avg batch {split['avg_batch']:.2f}); per request: queue {split['queue_ms']:.1f} ms + "
            f"compute {split['compute_ms']:.1f} ms + other {split['server_other_ms']:.1f} ms = "
            f"{split['server_ms']:.1f} ms in the server")
    if "client_and_network_ms" in split:
        line += (f"; client + network {split['client_and_network_ms']:.1f} ms of "
                 f"{split['client_avg_ms']:.1f} ms average")
    if split.get("counts_match") is False:
        line += (f" [server counted {split['requests'] + split['failed_requests']} requests, "
                 f"Locust {split['client_requests']}: other traffic on this server?]")
    return line


def run(args: argparse.Namespace, quiet: bool = False) -> tuple[int, dict[str, Any] | None]:
    """Run Locust once as `args` say; write `<out>.json`; return (exit code, report)."""
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (f"{out}.locust.json", f"{out}.extras.json", f"{out}.json"):
        Path(stale).unlink(missing_ok=True)  # never report an earlier run's numbers
    host, protocol = target(args)
    say = (lambda *_a, **_k: None) if quiet else print
    stats = None if args.no_server_stats else ServerStats(host, served_model(args), protocol)
    before = after = None
    server_error = None
    if stats is not None:
        try:
            before = stats.snapshot()
        except Exception as exc:  # a load test still runs where statistics are not reachable
            server_error = f"{type(exc).__name__}: {exc}"

    shape = shape_of(args)
    load = (f"steps {args.steps} x {args.step_duration}" if args.steps else
            f"{args.arrival_rate:g} req/s open loop over {args.users} users" if args.arrival_rate
            else f"{args.users} users")
    say(f"locust: {load}, {args.user} user, batch {args.batch}, "
        f"{'' if args.steps else args.duration + ' '}against {host}", flush=True)
    log_path = Path(f"{out}.locust.log")
    start = time.monotonic()
    limit = expected_seconds(args) + EXIT_GRACE_S
    hung = False
    with log_path.open("w") as log:
        proc = subprocess.Popen(locust_command(args, out), stdout=subprocess.DEVNULL, stderr=log,
                                stdin=subprocess.DEVNULL, env=dict(os.environ),
                                start_new_session=True)
        monitor = CpuMonitor(proc.pid).start()
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            hung = True
            code = stop_process_group(proc)
        finally:
            if proc.poll() is None:  # interrupted: don't leave Locust running
                stop_process_group(proc)
            monitor.stop()
    elapsed = time.monotonic() - start
    log_text = log_path.read_text(errors="replace")
    if hung:
        print(f"loadtest: Locust did not exit by itself {limit:.0f} s after it started; stopped it "
              f"(see {log_path})", file=sys.stderr)

    try:
        summary: Summary = read_summary(Path(f"{out}.locust.json"))
    except (OSError, ValueError) as exc:
        print(f"loadtest: no statistics from Locust ({exc}); exit code {code}", file=sys.stderr)
        print("\n".join(log_text.splitlines()[-20:]), file=sys.stderr)
        return code or 1, None

    extras = _read_json(Path(f"{out}.extras.json")) or {}
    if stats is not None and before is not None:
        try:
            after = stats.snapshot()
        except Exception as exc:
            server_error = f"{type(exc).__name__}: {exc}"
    if before is not None and after is not None:
        server = (after - before).split(summary.avg_ms, summary.completed)
    else:
        server = {"error": server_error or "not read (--no-server-stats)"}

    failures_csv = read_failures(out)
    by_type = failures_by_type(extras.get("errors") or failures_csv)
    cpu = monitor.summary()
    warnings = locust_cpu_warnings(log_text)
    generator = {**verdict(cpu, extras, warnings, summary.p50_ms), "cpu": cpu, "locust_warnings": warnings,
                 "schedule_lag": extras.get("schedule_lag")}
    thresholds = Thresholds.from_options(args)
    violations = evaluate(summary.metrics(), thresholds)
    if not thresholds.any or thresholds.max_error_rate is None:
        # Without an error-rate threshold any failed request fails the run, as Locust does.
        if summary.failures:
            violations.append(f"{summary.failures} failed requests (no --max-error-rate given)")

    report: dict[str, Any] = {
        "summary": summary.as_dict(),
        "latency_ms": {k: round(getattr(summary, f"{k}_ms"), 3)
                       for k in ("p50", "p90", "p95", "p99", "max", "avg")},
        "requests": summary.requests, "failures": failures_csv, "failure_count": summary.failures,
        "error_rate": round(summary.error_rate, 6),
        "requests_per_s": round(summary.rps, 3), "images_per_s": round(summary.images_per_s, 3),
        "failures_by_type": by_type,
        "server": server,
        "generator": generator,
        "slo": {"thresholds": thresholds.as_dict(), "violations": violations,
                "passed": not violations},
        "steps": extras.get("steps") or [],
        "locust": {k: extras.get(k) for k in ("runner", "workers", "user_classes", "exceptions")},
        "config": {"user": args.user, "protocol": protocol, "transport": args.transport,
                   "shape": shape, "users": args.users, "steps": args.steps or None,
                   "step_duration": args.step_duration if args.steps else None,
                   "arrival_rate": args.arrival_rate or None,
                   "arrivals": args.arrivals if args.arrival_rate else None,
                   "processes": args.processes or 1, "batch": args.batch,
                   "duration": None if args.steps else args.duration,
                   "images": str(args.images) if args.images else None},
        "users": args.users, "batch": args.batch, "duration_s": round(elapsed, 1),
        "host": host, "model": args.model, "locust_exit_code": code,
        "locust_exited_by_itself": not hung,
        "files": {"csv": f"{out}_stats.csv", "html": f"{out}.html", "locust_json": f"{out}.locust.json",
                  "log": str(log_path)},
    }
    if summary.requests == 0:
        exit_code = 1
    elif hung:
        exit_code = 1
    elif code not in (0, 1):
        exit_code = code  # Locust itself failed (2: an unhandled error in a user)
    elif violations:
        exit_code = SLO_EXIT_CODE if thresholds.any else 1
    elif args.fail_on_unreliable and not generator["reliable"]:
        exit_code = UNRELIABLE_EXIT_CODE
    else:
        exit_code = 0
    report["exit_code"] = exit_code
    Path(f"{out}.json").write_text(json.dumps(report, indent=2))

    say("\n".join(summary.lines()))
    say(server_line(server))
    for step in report["steps"]:
        offered = f", offered {step['offered_rps']:g}" if "offered_rps" in step else ""
        say(f"  step {step['step']}: {step['users']} users{offered}: {step['rps']:.1f} req/s, "
            f"p50 {step['p50_ms']:.0f} p95 {step['p95_ms']:.0f} p99 {step['p99_ms']:.0f} ms, "
            f"failures {step['failures']}")
    for kind, entry in by_type.items():
        say(f"failure x{entry['count']}: {kind}: {entry['example']}")
    if generator["reliable"]:
        say("generator: reliable (no sign of the load generator saturating itself)")
    else:
        say("generator: UNRELIABLE: " + "; ".join(generator["reasons"]))
    for note in generator["notes"]:
        say(f"note: {note}")
    if thresholds.any or violations:
        say("SLO: " + ("passed " + str(thresholds.as_dict()) if not violations
                       else "MISSED: " + "; ".join(violations)))
    say(f"reports: {out}_stats.csv, {out}.html, {out}.json")
    if summary.requests == 0:
        print("loadtest: no request completed", file=sys.stderr)
    return exit_code, report
