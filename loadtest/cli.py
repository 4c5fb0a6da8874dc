"""`python -m loadtest`: headless Locust runs against Triton that answer release questions.

    python -m loadtest [run] ...   one run: fixed users, a stepped ramp (--steps) or an open-loop
                                   arrival rate (--arrival-rate); SLO gates set the exit code
    python -m loadtest sweep ...   a series of runs -> latency-vs-throughput table, plot, knee
    python -m loadtest gate R.json re-check a saved report against thresholds

Exit codes: 0 passed; 1 failed requests (without --max-error-rate) or no request completed;
3 an SLO threshold was missed; 4 the load generator saturated itself (with --fail-on-unreliable);
2 usage errors, or an unhandled error inside Locust.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loadtest.runner import UNRELIABLE_EXIT_CODE, run
from loadtest.settings import ARRIVALS, TRANSPORTS, USER_KINDS
from loadtest.slo import SLO_EXIT_CODE, Thresholds, evaluate
from loadtest.sweep import sweep


def add_target_options(p: argparse.ArgumentParser) -> None:
    """What to load and with which user."""
    p.add_argument("--host", default=os.environ.get("TRITON_GRPC_URL", "127.0.0.1:8001"),
                   help="Triton gRPC address (default: $TRITON_GRPC_URL or %(default)s)")
    p.add_argument("--http-host", default=os.environ.get("TRITON_HTTP_URL", "127.0.0.1:8000"),
                   help="Triton HTTP address, for --user http (default: $TRITON_HTTP_URL or "
                        "%(default)s)")
    p.add_argument("--user", choices=USER_KINDS, default="grpc",
                   help="grpc/http: client.embed_batch with encoded images (preprocessing in the "
                        "client, as applications do); raw: pre-built tensors (server + transport)")
    p.add_argument("--raw-protocol", choices=("grpc", "http"), default="grpc",
                   help="protocol of the raw user (http loads --http-host)")
    p.add_argument("--transport", choices=TRANSPORTS, default="float",
                   help="float32 tensors, or the client's compact uint8 transport")
    p.add_argument("--model", default="pnasnet_large")
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--images", default=None, help="image folder (default: the shipped samples)")
    p.add_argument("--timeout", type=float, default=120.0, help="request timeout, seconds")
    p.add_argument("--attempts", type=int, default=1,
                   help="tries per request with the client's retry policy (default 1: no retries, "
                        "so a failing server shows as failures, not as slow successes)")
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="closed loop: pause between a response and the next request")
    p.add_argument("--processes", type=int, default=None,
                   help="Locust processes on this machine (--processes: a master and N workers); "
                        "use when one generator process saturates its core")
    p.add_argument("--arrivals", choices=ARRIVALS, default="constant",
                   help="open loop inter-arrival times")
    p.add_argument("--max-inflight", type=int, default=32,
                   help="open loop: outstanding requests per user before arrivals wait")
    p.add_argument("--no-server-stats", action="store_true",
                   help="don't read Triton's statistics (no server-side split)")
    p.add_argument("--fail-on-unreliable", action="store_true",
                   help=f"exit {UNRELIABLE_EXIT_CODE} when the load generator saturated itself")


def add_slo_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLO gate (exit code 3 when missed)")
    g.add_argument("--max-p50-ms", type=float)
    g.add_argument("--max-p95-ms", type=float)
    g.add_argument("--max-p99-ms", type=float)
    g.add_argument("--max-error-rate", type=float,
                   help="failed/all requests; without it any failed request fails the run")
    g.add_argument("--min-rps", type=float, help="lowest requests/s")
    g.add_argument("--min-images-per-s", type=float, help="lowest images/s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_options(p)
    p.add_argument("--users", type=int, default=8,
                   help="concurrent users (closed loop), or the users sharing --arrival-rate")
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    p.add_argument("--duration", default="20s", help="Locust run time, e.g. 20s, 2m")
    p.add_argument("--steps", default=None,
                   help="stepped ramp: user counts, e.g. 1,2,4,8, each for --step-duration")
    p.add_argument("--step-duration", default="10s")
    p.add_argument("--arrival-rate", type=float, default=None,
                   help="open loop: total requests/s started on a schedule whatever the latency, "
                        "so a slow server shows as latency, not as fewer requests")
    p.add_argument("--out", type=Path, default=Path("reports/loadtest"),
                   help="report prefix: <out>_stats.csv, <out>.html, <out>.json")
    add_slo_options(p)
    return p


def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest sweep",
                                description="Latency against throughput over load levels; "
                                            "writes <out>_sweep.{md,csv,json,png} and marks the knee.")
    add_target_options(p)
    levels = p.add_mutually_exclusive_group()
    levels.add_argument("--users", dest="users_list", default=None,
                        help="closed loop levels: user counts, e.g. 1,2,4,8,16 (default)")
    levels.add_argument("--rates", default=None,
                        help="open loop levels: total requests/s, e.g. 5,10,20,40")
    p.add_argument("--rate-users", type=int, default=4,
                   help="users sharing each open-loop rate")
    p.add_argument("--step-duration", default="10s", help="length of each level's run")
    p.add_argument("--out", type=Path, default=Path("reports/sweep"))
    return p


def build_gate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest gate",
                                description="Check a saved <out>.json report against thresholds.")
    p.add_argument("report", type=Path)
    p.add_argument("--fail-on-unreliable", action="store_true")
    add_slo_options(p)
    return p


def gate(args: argparse.Namespace) -> int:
    report = json.loads(args.report.read_text())
    summary = report["summary"]
    measured = summary["requests"] > summary["failures"]
    metrics = {"p50_ms": summary["p50_ms"] if measured else None,
               "p95_ms": summary["p95_ms"] if measured else None,
               "p99_ms": summary["p99_ms"] if measured else None,
               "error_rate": summary.get("error_rate") if summary["requests"] else None,
               "rps": summary["rps"], "images_per_s": summary.get("images_per_s")}
    thresholds = Thresholds.from_options(args)
    violations = evaluate(metrics, thresholds)
    if thresholds.max_error_rate is None and summary["failures"]:
        violations.append(f"{summary['failures']} failed requests (no --max-error-rate given)")
    if violations:
        print("SLO: MISSED: " + "; ".join(violations))
        return SLO_EXIT_CODE
    if args.fail_on_unreliable and not report.get("generator", {}).get("reliable", True):
        print("generator: UNRELIABLE: " + "; ".join(report["generator"]["reasons"]))
        return UNRELIABLE_EXIT_CODE
    print(f"SLO: passed {thresholds.as_dict()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("run", "sweep", "gate") else "run"
    if argv and argv[0] == command:
        argv = argv[1:]
    if command == "sweep":
        args = build_sweep_parser().parse_args(argv)
        if not args.rates and not args.users_list:
            args.users_list = "1,2,4,8,16"
        for name, value in (("users", args.rate_users), ("spawn_rate", None), ("duration", None),
                            ("steps", None), ("arrival_rate", None)):
            setattr(args, name, value)
        for name in ("max_p50_ms", "max_p95_ms", "max_p99_ms", "max_error_rate", "min_rps",
                     "min_images_per_s"):
            setattr(args, name, None)
        return sweep(args)
    if command == "gate":
        return gate(build_gate_parser().parse_args(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps and args.arrival_rate:
        parser.error("--steps takes user counts; for open-loop levels use `sweep --rates`")
    if args.batch < 1 or args.users < 1:
        parser.error("--batch and --users must be at least 1")
    return run(args)[0]
