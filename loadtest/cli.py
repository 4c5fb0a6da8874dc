"""`python -m loadtest`: headless Locust runs against Triton that answer release questions.

    python -m loadtest [run] ...   one run: fixed users, a stepped ramp (--steps) or an open-loop
                                   arrival rate (--arrival-rate); SLO gates set the exit code
    python -m loadtest sweep ...   a series of runs -> latency-vs-throughput table, plot, knee
    python -m loadtest gate R.json re-check a saved report against thresholds
    python -m loadtest k8s-env     write k8s/loadtest/*.env (the Jobs' LOADTEST_* variables)

Exit codes: 0 passed; 1 failed requests (without --max-error-rate) or no request completed; 3 an
SLO threshold was missed; 4 the load generator limited the result (with --fail-on-unreliable); 5
the target is not there (no server at the address, or the model, or its uint8 ensemble, not
loaded): checked before the run starts; 2 usage errors, or an unhandled error inside Locust; 128+N
Locust was killed by signal N before it wrote its statistics (the end of its log is printed; also
when it hung and this command stopped it); 130 stopped by Ctrl-C or SIGTERM (Locust and its workers
are stopped first).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from loadtest.options import OPTIONS, SLO, SLO_NAMES, add_cli_options
from loadtest.report import metrics
from loadtest.runner import UNRELIABLE_EXIT_CODE, run
from loadtest.slo import SLO_EXIT_CODE, Thresholds, evaluate
from loadtest.sweep import sweep

#: Table options a sweep takes (it sets the load itself, and gates nothing).
SWEEP_OPTIONS = [o.name for o in OPTIONS if o.scope != SLO and o.name != "steps"]


def add_runner_options(p: argparse.ArgumentParser) -> None:
    """Where the server is and how the run is carried out: read by this command only."""
    p.add_argument("--host", default=os.environ.get("TRITON_GRPC_URL", "127.0.0.1:8001"),
                   help="Triton gRPC address (default: $TRITON_GRPC_URL or %(default)s)")
    p.add_argument("--http-host", default=os.environ.get("TRITON_HTTP_URL", "127.0.0.1:8000"),
                   help="Triton HTTP address, for --user http (default: $TRITON_HTTP_URL or "
                        "%(default)s)")
    p.add_argument("--processes", type=int, default=None,
                   help="Locust processes on this machine (a master and N workers); use when one "
                        "generator process saturates its core")
    p.add_argument("--no-server-stats", action="store_true",
                   help="don't read Triton's statistics (no server-side split)")
    p.add_argument("--fail-on-unreliable", action="store_true",
                   help=f"exit {UNRELIABLE_EXIT_CODE} when the load generator limited the result")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runner_options(p)
    add_cli_options(p, [o.name for o in OPTIONS if o.scope != SLO])
    p.add_argument("--users", type=int, default=8,
                   help="concurrent users (closed loop), or the users sharing --arrival-rate")
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    p.add_argument("--duration", default="20s", help="Locust run time, e.g. 20s, 2m")
    p.add_argument("--arrival-rate", type=float, default=None,
                   help="open loop: total requests/s started on a schedule whatever the latency, "
                        "so a slow server shows as latency, not as fewer requests")
    p.add_argument("--out", type=Path, default=Path("reports/loadtest"),
                   help="report prefix: <out>.json, <out>_stats.csv, <out>.html")
    add_cli_options(p.add_argument_group("SLO gate (exit code 3 when missed)"), SLO_NAMES)
    return p


def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest sweep",
                                description="Latency against throughput over load levels; "
                                            "writes <out>_sweep.{md,csv,json,png} and marks the knee.")
    add_runner_options(p)
    add_cli_options(p, SWEEP_OPTIONS)
    levels = p.add_mutually_exclusive_group()
    levels.add_argument("--users", dest="users_list", default=None,
                        help="closed loop levels: user counts, e.g. 1,2,4,8,16 (default)")
    levels.add_argument("--rates", default=None,
                        help="open loop levels: total requests/s, e.g. 5,10,20,40")
    p.add_argument("--rate-users", type=int, default=4,
                   help="users sharing each open-loop rate")
    p.add_argument("--locust-html", action="store_true",
                   help="keep each level's Locust HTML and CSV reports (in <out>_sweep_levels/)")
    p.add_argument("--out", type=Path, default=Path("reports/sweep"))
    return p


def build_gate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest gate",
                                description="Check a saved <out>.json report against thresholds.")
    p.add_argument("report", type=Path)
    p.add_argument("--fail-on-unreliable", action="store_true")
    add_cli_options(p, SLO_NAMES)
    return p


def gate(args: argparse.Namespace) -> int:
    report = json.loads(args.report.read_text())
    flow = report["throughput"]
    thresholds = Thresholds.from_options(args)
    violations = evaluate(metrics(flow, report["latency_ms"]), thresholds)
    if thresholds.max_error_rate is None and flow["failures"]:
        violations.append(f"{flow['failures']} failed requests (no --max-error-rate given)")
    if violations:
        print("SLO: MISSED: " + "; ".join(violations))
        return SLO_EXIT_CODE
    if args.fail_on_unreliable and not report.get("generator", {}).get("reliable", True):
        print("generator: UNRELIABLE: " + "; ".join(report["generator"]["reasons"]))
        return UNRELIABLE_EXIT_CODE
    print(f"SLO: passed {thresholds.as_dict()}")
    return 0


K8S_DIR = Path(__file__).resolve().parents[1] / "k8s" / "loadtest"


def write_k8s_env(folder: Path) -> int:
    """Write the Kubernetes Jobs' LOADTEST_* env files from the options table."""
    from loadtest.options import K8S_ENV_FILES, k8s_env_file

    for role, name in K8S_ENV_FILES.items():
        (folder / name).write_text(k8s_env_file(role))
        print(f"wrote {folder / name}")
    return 0


INTERRUPTED_EXIT_CODE = 130


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (a supervisor, `kill`) stops a run the way Ctrl-C does: Locust's group is stopped."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut that stop short
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("loadtest: interrupted; Locust stopped", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("run", "sweep", "gate", "k8s-env") else "run"
    if argv and argv[0] == command:
        argv = argv[1:]
    if command == "sweep":
        args = build_sweep_parser().parse_args(argv)
        if not args.rates and not args.users_list:
            args.users_list = "1,2,4,8,16"
        for name, value in (("users", args.rate_users), ("spawn_rate", None), ("duration", None),
                            ("steps", None), ("arrival_rate", None)):
            setattr(args, name, value)
        for name in SLO_NAMES:
            setattr(args, name, None)
        return sweep(args)
    if command == "gate":
        return gate(build_gate_parser().parse_args(argv))
    if command == "k8s-env":
        return write_k8s_env(Path(argv[0]) if argv else K8S_DIR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps and args.arrival_rate:
        parser.error("--steps takes user counts; for open-loop levels use `sweep --rates`")
    if args.batch < 1 or args.users < 1:
        parser.error("--batch and --users must be at least 1")
    return run(args)[0]
