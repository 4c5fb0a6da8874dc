"""One headless Locust run as a subprocess, measured from both sides, judged and reported.

Around Locust, this checks the target first (a missing server or model fails at once), reads
Triton's statistics before and after (so the report splits each request's time into client +
network, queue and compute, and gives the executed batch size), samples the generator's CPU (so a
generator that limits the result is flagged), and checks SLO thresholds. The report's layout is
documented field by field in README.md (Load test).
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

from loadtest.guard import CpuMonitor, is_local, locust_cpu_warnings, verdict
from loadtest.latency import LatencySummary
from loadtest.options import locust_args, parse_seconds, parse_steps
from loadtest.preflight import TARGET_EXIT_CODE, check_target
from loadtest.report import lines, metrics
from loadtest.server_stats import ServerStats
from loadtest.slo import SLO_EXIT_CODE, Thresholds, evaluate
from serve.lifecycle import die_with_parent

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
    """The Locust command line: Locust's own options, then every load-test option (from the table
    in loadtest/options.py) and the values the runner derives (rate per user, extras file)."""
    host, _ = target(args)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "--host", host, "--stop-timeout", "30", "--loglevel", "WARNING"]
    if getattr(args, "locust_files", True):
        cmd += ["--csv", str(out), "--html", f"{out}.html"]
    if args.steps:
        top = int(max(parse_steps(args.steps)))
        cmd += ["-u", str(top), "-r", str(args.spawn_rate or top)]
    else:
        cmd += ["-u", str(args.users), "-r", str(args.spawn_rate or args.users), "-t", args.duration]
    if args.processes and args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    rate = args.arrival_rate / args.users if args.arrival_rate else None
    return cmd + locust_args(args, rate_per_user=rate, extras_file=f"{out}.extras.json")


def served_model(args: argparse.Namespace) -> str:
    """The model requests go to: the `<model>_uint8` ensemble for the uint8 payload."""
    if args.payload == "uint8":
        from client import uint8_model_name

        return uint8_model_name(args.model)
    return args.model


def expected_seconds(args: argparse.Namespace) -> float:
    """How long the Locust run should last (without start-up and shutdown)."""
    if args.steps:
        return len(parse_steps(args.steps)) * parse_seconds(args.step_duration)
    return parse_seconds(args.duration)


def exit_reason(code: int) -> str:
    """How a child ended, in words: `subprocess` reports death by signal N as -N."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def shell_exit_code(code: int) -> int:
    """A child's end as this process's exit code: 128+N for signal N, as shells report it."""
    return 128 - code if code < 0 else (code or 1)


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
        line += f"; client + network {split['client_and_network_ms']:.1f} ms"
    if split.get("counts_match") is False:
        line += " [the server counted other requests too: other traffic on this server?]"
    return line


def config_of(args: argparse.Namespace, host: str, protocol: str) -> dict[str, Any]:
    """What was asked for, as given (the report's `config`)."""
    return {"host": host, "protocol": protocol, "user": args.user, "model": args.model,
            "payload": args.payload, "batch": args.batch, "shape": shape_of(args),
            "users": args.users, "steps": args.steps or None,
            "step_duration": args.step_duration if args.steps else None,
            "duration": None if args.steps else args.duration,
            "arrival_rate": args.arrival_rate or None,
            "arrivals": args.arrivals if args.arrival_rate else None,
            "processes": args.processes or 1,
            "images": str(args.images) if args.images else None}


def run(args: argparse.Namespace, quiet: bool = False) -> tuple[int, dict[str, Any] | None]:
    """Run Locust once as `args` say; write `<out>.json`; return (exit code, report)."""
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (f"{out}.extras.json", f"{out}.json"):
        Path(stale).unlink(missing_ok=True)  # never report an earlier run's numbers
    host, protocol = target(args)
    say = (lambda *_a, **_k: None) if quiet else print

    problem = check_target(host, protocol, args.model, args.payload)
    if problem:
        print(f"loadtest: {problem}", file=sys.stderr, flush=True)
        return TARGET_EXIT_CODE, None

    stats = None if args.no_server_stats else ServerStats(host, served_model(args), protocol)
    before = after = None
    server_error = None
    if stats is not None:
        try:
            before = stats.snapshot()
        except Exception as exc:  # a load test still runs where statistics are not reachable
            server_error = f"{type(exc).__name__}: {exc}"

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
        # Locust runs in a session of its own (a terminal's Ctrl-C reaches only this process, which
        # then stops Locust's whole group); the parent-death signal ends it if this process is killed.
        proc = subprocess.Popen(locust_command(args, out), stdout=subprocess.DEVNULL, stderr=log,
                                stdin=subprocess.DEVNULL, env=dict(os.environ),
                                start_new_session=True, preexec_fn=die_with_parent())
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

    extras = _read_json(Path(f"{out}.extras.json"))
    if extras is None:
        how = "was stopped by loadtest (above)" if hung else exit_reason(code)
        print(f"loadtest: Locust {how} before it wrote its statistics; the end of its "
              f"log ({log_path}):", file=sys.stderr)
        print("\n".join(log_text.splitlines()[-20:]), file=sys.stderr)
        return shell_exit_code(code), None
    Path(f"{out}.extras.json").unlink()
    flow, latency = extras["throughput"], extras["latency_ms"]

    if stats is not None and before is not None:
        try:
            after = stats.snapshot()
        except Exception as exc:
            server_error = f"{type(exc).__name__}: {exc}"
    if before is not None and after is not None:
        server = (after - before).split(latency["mean"] if latency["count"] else None,
                                        flow["requests"] - flow["unanswered"])
    else:
        server = {"error": server_error or "not read (--no-server-stats)"}

    cpu = monitor.summary()
    health = extras["health"]
    warnings = locust_cpu_warnings(log_text)
    generator = verdict(cpu, health, warnings, latency["p50"] or None, is_local(host),
                        flow["requests_per_s"])
    generator.update(cpu=cpu, locust_warnings=warnings, schedule_lag=health.get("schedule_lag"))
    thresholds = Thresholds.from_options(args)
    violations = evaluate(metrics(flow, latency), thresholds)
    if thresholds.max_error_rate is None and flow["failures"]:
        # Without an error-rate threshold any failed request fails the run, as Locust does.
        violations.append(f"{flow['failures']} failed requests (no --max-error-rate given)")

    files = {"log": str(log_path)}
    if getattr(args, "locust_files", True):
        files.update(csv=f"{out}_stats.csv", html=f"{out}.html")
    report: dict[str, Any] = {
        "exit_code": 0,
        "throughput": flow,
        "latency_ms": latency,
        "latency_histogram": extras["latency_histogram"],
        "failures_by_type": extras["failures_by_type"],
        "server": server,
        "generator": generator,
        "slo": {"thresholds": thresholds.as_dict(), "violations": violations,
                "passed": not violations},
        "steps": extras["steps"],
        "config": config_of(args, host, protocol),
        "locust": {**extras["locust"], "exit_code": code, "exited_by_itself": not hung,
                   "duration_s": round(elapsed, 1)},
        "files": files,
    }
    if flow["requests"] == 0 or hung:
        exit_code = 1
    elif code not in (0, 1, SLO_EXIT_CODE):
        exit_code = code  # Locust itself failed (2: an unhandled error in a user)
    elif violations:
        exit_code = SLO_EXIT_CODE if thresholds.any else 1
    elif args.fail_on_unreliable and not generator["reliable"]:
        exit_code = UNRELIABLE_EXIT_CODE
    else:
        exit_code = 0
    report["exit_code"] = exit_code
    Path(f"{out}.json").write_text(json.dumps(report, indent=2))

    say("\n".join(lines(_throughput(flow), LatencySummary(**latency))))
    say(server_line(server))
    for step in report["steps"]:
        offered = f", offered {step['offered_rps']:g}" if "offered_rps" in step else ""
        s_lat, s_flow = step["latency_ms"], step["throughput"]
        say(f"  step {step['step']}: {step['users']} users{offered}: "
            f"{s_flow['requests_per_s']:.1f} req/s, p50 {s_lat['p50']:.1f} p95 {s_lat['p95']:.1f} "
            f"p99 {s_lat['p99']:.1f} ms, failures {s_flow['failures']}")
    for kind, entry in report["failures_by_type"].items():
        say(f"failure x{entry['count']}: {kind}: {entry['example']}")
    if generator["reliable"]:
        say("generator: reliable (no sign that the load generator limited the result)")
    else:
        say("generator: UNRELIABLE: " + "; ".join(generator["reasons"]))
    for note in generator["notes"]:
        say(f"note: {note}")
    if thresholds.any or violations:
        say("SLO: " + ("passed " + str(thresholds.as_dict()) if not violations
                       else "MISSED: " + "; ".join(violations)))
    say(f"reports: {out}.json" + (f", {out}_stats.csv, {out}.html" if "html" in files else ""))
    if flow["requests"] == 0:
        print("loadtest: no request completed", file=sys.stderr)
    return exit_code, report


def _throughput(flow: dict[str, Any]) -> Any:
    from loadtest.report import Throughput

    return Throughput(**flow)
