"""`python -m loadtest`: a headless Locust run against a Triton server, with a printed summary."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from loadtest.report import read_failures, read_summary

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    p.add_argument("--host", default=os.environ.get("TRITON_GRPC_URL", "127.0.0.1:8001"),
                   help="Triton gRPC address (default: $TRITON_GRPC_URL or %(default)s)")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    p.add_argument("--duration", default="20s", help="Locust run time, e.g. 20s, 2m")
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--model", default="pnasnet_large")
    p.add_argument("--images", default=None, help="image folder (default: the shipped samples)")
    p.add_argument("--out", type=Path, default=Path("reports/loadtest"),
                   help="report prefix: <out>_stats.csv, <out>.html, <out>.json")
    return p


def run(args: argparse.Namespace) -> int:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LOADTEST_MODEL=args.model, LOADTEST_BATCH=str(args.batch))
    if args.images:
        env["LOADTEST_IMAGES"] = str(args.images)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(args.users), "-r", str(args.spawn_rate or args.users), "-t", args.duration,
           "--host", args.host, "--csv", str(args.out), "--html", f"{args.out}.html",
           "--json-file", f"{args.out}.locust",
           "--only-summary", "--stop-timeout", "30", "--loglevel", "WARNING"]
    print(f"locust: {args.users} users, batch {args.batch}, {args.duration} against {args.host}",
          flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    try:
        summary = read_summary(Path(f"{args.out}.locust.json"))
    except (OSError, ValueError) as exc:
        print(f"loadtest: no statistics from Locust ({exc}); exit code {proc.returncode}",
              file=sys.stderr)
        return proc.returncode or 1
    failures = read_failures(args.out)
    report = {"summary": summary.as_dict(), "images_per_s": round(summary.rps * args.batch, 2),
              "failures": failures, "users": args.users, "batch": args.batch,
              "duration_s": round(elapsed, 1), "host": args.host, "model": args.model}
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2))
    print("\n".join(summary.lines()))
    for row in failures:
        print(f"failure x{row.get('Occurrences')}: {row.get('Error')}")
    print(f"reports: {args.out}_stats.csv, {args.out}.html, {args.out}.json")
    if summary.requests == 0:
        print("loadtest: no request completed", file=sys.stderr)
        return 1
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
