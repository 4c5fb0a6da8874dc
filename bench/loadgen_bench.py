"""The load test's generator against Triton's own C++ one (perf_analyzer), side by side.

    make bench-loadgen                       # installs perf_analyzer into build/ first
    .venv/bin/python -m bench.loadgen_bench --concurrency 8,32 --rounds 3 --seconds 15

Starts a local tritonserver on the tiny twin (exported into a temporary folder, free ports), then
for each round and each concurrency runs perf_analyzer (gRPC, or HTTP with `--protocol http`; batch
1, closed loop at that concurrency) and `python -m loadtest --user raw --users N` (the same load
from Locust), in alternating order, and prints requests/s and p50 of both and their ratios (medians
over rounds of the per-round ratios). Both generators share the machine with the server: the ratio
says how much server throughput each one leaves, which is what a load test run on the server's
machine measures.
The machine's load average is printed with the table: other work on it is noise in both columns.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runnable as `python bench/loadgen_bench.py`
    sys.path.insert(0, str(ROOT))
PERF_ANALYZER = ROOT / "build" / "perf_analyzer" / "bin" / "perf_analyzer"
PERF_LIBS = ROOT / "build" / "perf_analyzer" / "lib"
MODEL = "pnasnet_large"


def perf_analyzer(url: str, concurrency: int, seconds: float, work: Path,
                  protocol: str = "grpc") -> dict[str, float]:
    """perf_analyzer over `seconds` at `concurrency` (three windows of a third each, averaged; the
    stability check is off, so a noisy machine gives a number rather than an error)."""
    out = work / f"pa_{concurrency}.csv"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{PERF_LIBS}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    cmd = [str(PERF_ANALYZER), "-m", MODEL, "-u", url, "-i", protocol, "-b", "1",
           "--concurrency-range", str(concurrency), "--measurement-mode", "time_windows",
           "--measurement-interval", str(int(seconds * 1000 / 3)), "--max-trials", "3",
           "--stability-percentage", "1000", "--percentile", "50", "-f", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds * 10 + 120)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 and not out.exists():
        raise RuntimeError(f"perf_analyzer failed ({proc.returncode}): {proc.stdout[-800:]}"
                           f"{proc.stderr[-800:]}")
    with out.open() as fh:
        row = next(csv.DictReader(fh))
    rps = float(row["Inferences/Second"])
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # perf_analyzer sends for the whole of its wall time (warm-up window included).
    return {"rps": rps, "p50_ms": float(row["p50 latency"]) / 1000.0,
            "cpu_ms": cpu_s * 1000.0 / (rps * wall) if rps else float("nan")}


def locust(url: str, concurrency: int, seconds: float, work: Path, processes: int,
           protocol: str = "grpc") -> dict[str, float]:
    """`python -m loadtest --user raw` at `concurrency` users for `seconds`: requests/s and p50."""
    out = work / f"lt_{concurrency}"
    target = ["--host", url] if protocol == "grpc" else ["--raw-protocol", "http", "--http-host", url]
    cmd = [sys.executable, "-m", "loadtest", *target, "--user", "raw", "--users",
           str(concurrency), "--duration", f"{seconds:g}s", "--no-server-stats", "--out", str(out)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 4 + 180,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    report = json.loads(Path(f"{out}.json").read_text()) if Path(f"{out}.json").exists() else None
    if report is None:
        raise RuntimeError(f"loadtest failed ({proc.returncode}): {proc.stderr[-800:]}")
    gen = report["generator"]
    return {"rps": report["throughput"]["requests_per_s"], "p50_ms": report["latency_ms"]["p50"],
            "cpu_ms": gen["cpu_ms_per_request"] or float("nan"), "share": gen["machine_share"],
            "reliable": gen["reliable"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="8,32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0, help="measurement per generator and level")
    p.add_argument("--processes", type=int, default=1, help="Locust processes (--processes)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc",
                   help="what both generators send over (default: %(default)s)")
    args = p.parse_args(argv)
    if not PERF_ANALYZER.exists():
        print(f"perf_analyzer not found at {PERF_ANALYZER}: run `make perf-analyzer`", file=sys.stderr)
        return 2
    from export.pipeline import export_model
    from serve.server import LocalTritonServer, Ports

    levels = [int(c) for c in args.concurrency.split(",") if c]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-") as tmp:
        work = Path(tmp)
        export_model("twin:tiny", work / "repo", MODEL)
        server = LocalTritonServer(work / "repo", ports=Ports.free(), work_dir=work / "triton")
        with server.start(timeout=300):
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            locust(url, 2, 3, work, 1, args.protocol)  # warm the server and the page cache; not counted
            for r in range(args.rounds):
                for c in levels:
                    order = ("perf_analyzer", "loadtest") if (r + c) % 2 == 0 else \
                        ("loadtest", "perf_analyzer")
                    for name in order:
                        m = (perf_analyzer(url, c, args.seconds, work, args.protocol)
                             if name == "perf_analyzer"
                             else locust(url, c, args.seconds, work, args.processes, args.protocol))
                        results.setdefault((name, c), []).append(m)
                        extra = (f"  machine share {m['share']:.2f}, "
                                 f"{'reliable' if m['reliable'] else 'UNRELIABLE'}"
                                 if "share" in m else "")
                        print(f"round {r + 1} concurrency {c:3d} {name:>13}: {m['rps']:7.1f} req/s "
                              f"p50 {m['p50_ms']:6.1f} ms  CPU {m['cpu_ms']:.2f} ms/request{extra}",
                              flush=True)
    load = os.getloadavg()
    print(f"\nmedians over {args.rounds} rounds of {args.seconds:g} s each; tiny twin, batch 1, "
          f"{args.protocol}; Locust processes: {args.processes}; load average at the end {load[0]:.1f} "
          f"on {os.cpu_count()} cores\n")
    print("| concurrency | perf_analyzer req/s | p50 ms | CPU ms/req | loadtest raw req/s | p50 ms | "
          "CPU ms/req | req/s ratio | p50 ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in levels:
        pa, lt = results[("perf_analyzer", c)], results[("loadtest", c)]
        med = lambda rows, k: statistics.median(x[k] for x in rows)  # noqa: E731
        rps_ratio = statistics.median(b["rps"] / a["rps"] for a, b in zip(pa, lt, strict=True))
        p50_ratio = statistics.median(b["p50_ms"] / a["p50_ms"] for a, b in zip(pa, lt, strict=True))
        print(f"| {c} | {med(pa, 'rps'):.1f} | {med(pa, 'p50_ms'):.1f} | {med(pa, 'cpu_ms'):.2f} | "
              f"{med(lt, 'rps'):.1f} | {med(lt, 'p50_ms'):.1f} | {med(lt, 'cpu_ms'):.2f} | "
              f"{rps_ratio:.2f}x | {p50_ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
