"""What Triton's latency summaries cost: the same load test with and without `summary_latencies`.

    .venv/bin/python -m bench.metrics_cost_bench                 # 3 rounds, raw user, 8 users, 20 s
    .venv/bin/python -m bench.metrics_cost_bench --rounds 5 --user grpc --duration 30s

Triton's `--metrics-config summary_latencies=true` adds `nv_inference_*_summary_us` quantiles
(p50/p90/p95/p99 per model), which the dashboard and the latency alert want; upstream marks the
feature experimental and reports a throughput loss with it on recent releases. This runs the
project's own load test (`python -m loadtest`) against a fresh local server per run, alternating
the two settings (off/on, then on/off, ...) so drift on a shared machine hits both alike, and
prints each round's ratio on/off and their median (`make bench-metrics`). On a shared machine,
serialise benchmarks (e.g. `flock /tmp/bench.lock make bench-metrics`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runnable as `python bench/metrics_cost_bench.py`
    sys.path.insert(0, str(ROOT))
MODEL = "pnasnet_large"
SUMMARIES = ["--metrics-config=summary_latencies=true"]
RUN_IDS = itertools.count(1)


def run_load(grpc_url: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `python -m loadtest` run; its JSON report."""
    cmd = [sys.executable, "-m", "loadtest", "--host", grpc_url, "--user", args.user,
           "--users", str(args.users), "--duration", args.duration, "--batch", str(args.batch),
           "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = Path(f"{out}.json")
    if done.returncode != 0 or not report.exists():
        raise RuntimeError(f"load test failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(report.read_text())


def one_run(repo: Path, work: Path, summaries: bool, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh server (with or without summaries), one load test, the numbers that matter."""
    from serve.server import LocalTritonServer, Ports

    name = f"run{next(RUN_IDS)}-{'on' if summaries else 'off'}"
    with LocalTritonServer(repo, ports=Ports.free(), work_dir=work / name,
                           extra_args=SUMMARIES if summaries else []) as server:
        report = run_load(server.grpc_url, work / name / "load", args)
    server_split = report.get("server", {})
    return {"summaries": summaries, "rps": report["requests_per_s"],
            "p50_ms": report["latency_ms"]["p50"], "p95_ms": report["latency_ms"]["p95"],
            "server_ms": server_split.get("server_ms"), "avg_batch": server_split.get("avg_batch"),
            "failures": report["summary"]["failures"],
            "reliable": report.get("generator", {}).get("reliable")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="twin:tiny",
                   help="what to export and serve (default: the tiny twin, where per-request "
                        "overhead weighs most)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--user", default="raw", choices=("raw", "grpc"),
                   help="raw: pre-built tensors, so the client's preprocessing does not hide "
                        "server overhead")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--duration", default="20s")
    args = p.parse_args(argv)

    from export.pipeline import export_model

    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as tmp:
        work = Path(tmp)
        repo = work / "repository"
        export_model(args.source, repo, MODEL)
        rows = []
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            pair = {flag: one_run(repo, work, flag, args) for flag in order}
            pair_rows = [pair[False], pair[True]]
            rows += pair_rows
            ratio = pair[True]["rps"] / pair[False]["rps"] if pair[False]["rps"] else float("nan")
            print(f"round {i + 1}: off {pair[False]['rps']:.1f} req/s, on {pair[True]['rps']:.1f} "
                  f"req/s, on/off {ratio:.3f}", flush=True)
            pair[True]["ratio"] = ratio
    print("\n| run | summaries | req/s | p50 ms | p95 ms | server ms/req | avg batch | reliable |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(rows, 1):
        print(f"| {n} | {'on' if r['summaries'] else 'off'} | {r['rps']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p95_ms']:.0f} | {r['server_ms']} | {r['avg_batch']} | {r['reliable']} |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    p95 = [on["p95_ms"] / off["p95_ms"] for off, on in zip(rows[0::2], rows[1::2], strict=True)
           if off["p95_ms"]]
    print(f"\nthroughput on/off per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
    print(f"p95 latency on/off per round: {', '.join(f'{x:.3f}' for x in p95)}; "
          f"median {statistics.median(p95):.3f}")
    print(f"load average: {os.getloadavg()[0]:.2f} (other work on the machine adds noise)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
