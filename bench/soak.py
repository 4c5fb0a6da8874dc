"""Soak: sustained load near the knee for a set time, watched minute by minute.

    .venv/bin/python -m bench.soak --repository model_repository --duration 10m     # `make soak`
    .venv/bin/python -m bench.soak --users 4 --duration 3m --interval 30s           # shorter rows

It starts its own local tritonserver (free ports) and finds the knee with a short ramp of 1, 2, 4
and 8 users (the load test's definition, `loadtest.sweep.find_knee`: the last level before median
latency grows much faster than throughput), or takes `--users N`. Then that many closed-loop users
send requests for `--duration` from a separate client process. Every interval (default a minute)
it prints requests, failures, p50/p99 and the RSS of tritonserver, its backend stubs (summed) and
the client process; at the end, a verdict against the goals: zero failures, RSS growth after
warm-up under 5% (the last interval against the first one after warm-up), no p99 drift (median p99
of the later half of the intervals after warm-up against the earlier half, under
`--max-p99-drift`). A benchmark, not a test: the numbers depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from loadtest.options import parse_seconds

ROOT = Path(__file__).resolve().parents[1]
RAMP_USERS = (1, 2, 4, 8)


# -- the client process ----------------------------------------------------------------------------
def _client_main(url: str, model: str, transport: str, users: int, interval: float, seconds: float,
                 out: Any) -> None:
    """Closed-loop users; per interval: (index, latencies in ms, failures, first error)."""
    from serve.lifecycle import exit_with_parent

    exit_with_parent(signal.SIGKILL)  # nothing of a soak may outlive it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from client import EmbeddingClient
    from client.retry import RetryPolicy

    lock = threading.Lock()
    buckets: dict[int, tuple[list[float], list[str]]] = {}
    start = time.monotonic()
    stop_at = start + seconds

    def user(seed: int) -> None:
        with EmbeddingClient(url, model, payload=transport, timeout=60,
                             retry=RetryPolicy(attempts=1)) as client:
            dtype = np.uint8 if transport == "uint8" else np.float32
            shape = (1, *client.float_info.input_shape)
            rng = np.random.default_rng(seed)
            pixels = (rng.integers(0, 256, shape) if dtype == np.uint8 else rng.random(shape)).astype(dtype)
            while (now := time.monotonic()) < stop_at:
                error = None
                try:
                    client.embed_arrays(pixels)
                except Exception as exc:  # noqa: BLE001 - counted as failures
                    error = f"{type(exc).__name__}: {exc}"[:300]
                done = time.monotonic()
                with lock:
                    lat, errs = buckets.setdefault(int((done - start) // interval), ([], []))
                    (errs.append(error) if error else lat.append((done - now) * 1000))

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for t in threads:
        t.start()
    sent = 0
    while True:
        alive = any(t.is_alive() for t in threads)
        current = int((time.monotonic() - start) // interval)
        with lock:
            ready = sorted(i for i in buckets if i < current or not alive)
            rows = [(i, *buckets.pop(i)) for i in ready]
        for i, lat, errs in rows:
            out.put((i, lat, len(errs), errs[0] if errs else None))
            sent += 1
        if not alive:
            break
        time.sleep(0.2)
    out.put(None)


# -- measurement -----------------------------------------------------------------------------------
@dataclass
class Row:
    minute: float
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    rps: float
    server_rss_mb: float
    stubs_rss_mb: float
    client_rss_mb: float
    error: str | None = None


@dataclass
class Verdict:
    failures: int
    rss_growth: dict[str, float] = field(default_factory=dict)
    p99_drift: float = 0.0
    passed: bool = False
    reasons: list[str] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def stubs_rss_mb(server_pid: int) -> float:
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return float("nan")
    return sum(rss_mb(c.pid) for c in children)


class RssSampler:
    """RSS of tritonserver, its stubs and the client every second, on the parent's clock, so an
    interval's row shows memory at the interval's end, not when its numbers happened to arrive."""

    def __init__(self, server_pid: int, client_pid: int, every: float = 1.0) -> None:
        self.server_pid, self.client_pid, self.every = server_pid, client_pid, every
        self.start_time = time.monotonic()
        self.samples: list[tuple[float, float, float, float]] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((time.monotonic() - self.start_time, rss_mb(self.server_pid),
                                 stubs_rss_mb(self.server_pid), rss_mb(self.client_pid)))

    def start(self) -> RssSampler:
        threading.Thread(target=self._run, daemon=True, name="rss").start()
        return self

    def at(self, t: float) -> tuple[float, float, float]:
        """The last sample taken at or before `t` seconds after the start."""
        before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
        if not before:
            return (float("nan"),) * 3
        return before[-1][1:]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def judge(rows: list[Row], warmup: int, max_growth: float, max_drift: float) -> Verdict:
    failures = sum(r.failures for r in rows)
    v = Verdict(failures)
    if failures:
        v.reasons.append(f"{failures} failed requests")
    steady = rows[warmup:] if len(rows) > warmup + 1 else rows[-2:]
    if len(steady) >= 2:
        first, last = steady[0], steady[-1]
        for name in ("server_rss_mb", "stubs_rss_mb", "client_rss_mb"):
            a, b = getattr(first, name), getattr(last, name)
            v.rss_growth[name] = (b - a) / a if a else float("nan")
            if v.rss_growth[name] > max_growth:
                v.reasons.append(f"{name} grew {v.rss_growth[name]:+.1%} after warm-up "
                                 f"({a:.0f} -> {b:.0f} MB)")
        half = len(steady) // 2
        early = statistics.median(r.p99_ms for r in steady[:half] or steady[:1])
        late = statistics.median(r.p99_ms for r in steady[half:])
        v.p99_drift = late / early - 1 if early else float("nan")
        if v.p99_drift > max_drift:
            v.reasons.append(f"p99 drifted {v.p99_drift:+.1%} (median p99 {early:.0f} -> "
                             f"{late:.0f} ms)")
    else:
        v.reasons.append("too short to judge drift: run longer than the warm-up plus two intervals")
    v.passed = not v.reasons
    return v


def ramp(url: str, model: str, transport: str, step_s: float,
         stop: threading.Event) -> tuple[int, list[tuple[int, float, float, int]]]:
    """The knee from a short ramp: (users, [(users, requests/s, p50 ms, failures)])."""
    results = []
    for users in RAMP_USERS:
        if stop.is_set():
            break
        queue: Any = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(
            target=_client_main, args=(url, model, transport, users, step_s, step_s, queue))
        proc.start()
        lat: list[float] = []
        failed = 0
        while (item := queue.get()) is not None:
            lat += item[1]
            failed += item[2]
        proc.join()
        results.append((users, len(lat) / step_s, percentile(lat, 50), failed))
        print(f"ramp: {users} users -> {len(lat) / step_s:.1f} requests/s, p50 "
              f"{percentile(lat, 50):.0f} ms, {failed} failed", flush=True)
    from loadtest.sweep import find_knee

    knee = find_knee([{"rps": rps, "p50_ms": p50, "error_rate": failed / max(1, rps)}
                      for _, rps, p50, failed in results])
    return (results[knee][0] if knee is not None else 1), results


def format_table(rows: list[Row]) -> str:
    head = ("| minute | requests | failures | req/s | p50 ms | p99 ms | tritonserver RSS MB | "
            "stubs RSS MB | client RSS MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r.minute:g} | {r.requests} | {r.failures} | {r.rps:.1f} | {r.p50_ms:.0f} | "
            f"{r.p99_ms:.0f} | {r.server_rss_mb:.0f} | {r.stubs_rss_mb:.0f} | {r.client_rss_mb:.0f} |"
            for r in rows]
    return "\n".join([head, *body])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--model", default="pnasnet_large")
    p.add_argument("--duration", default=os.environ.get("SOAK_DURATION", "10m"),
                   help="how long the sustained load runs (default: SOAK_DURATION or 10m)")
    p.add_argument("--interval", default="1m", help="one row per interval (default: %(default)s)")
    p.add_argument("--warmup-intervals", type=int, default=1,
                   help="intervals left out of the RSS and drift baseline (default: %(default)s)")
    p.add_argument("--users", default="auto", help="concurrent users, or 'auto' for the knee")
    p.add_argument("--ramp-step", default="15s", help="length of each ramp level (default: %(default)s)")
    p.add_argument("--payload", dest="transport", choices=("float32", "uint8"), default="float32")
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    p.add_argument("--max-p99-drift", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=Path("reports/soak"),
                   help="writes <out>.md and <out>.json (default: %(default)s)")
    p.add_argument("--work-dir", type=Path, default=Path("build/soak"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from serve.lifecycle import ShutdownSignals
    from serve.server import LocalTritonServer, Ports, StartCancelled

    interval, seconds = parse_seconds(args.interval), parse_seconds(args.duration)
    signals = ShutdownSignals().install()
    server = LocalTritonServer(args.repository, ports=Ports.free(), work_dir=args.work_dir,
                               models=None)
    rows: list[Row] = []
    client: Any = None
    try:
        print(f"soak: starting tritonserver ({args.repository}, model {args.model}); machine: "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
        server.start(600, cancel=signals.requested)
        if args.users == "auto":
            users, _ = ramp(server.grpc_url, args.model, args.transport,
                            parse_seconds(args.ramp_step), signals.requested)
            print(f"knee: {users} users", flush=True)
        else:
            users = int(args.users)
        print(f"soak: {users} users, {args.transport}, for {seconds:.0f} s; one row per "
              f"{interval:.0f} s", flush=True)
        queue: Any = mp.get_context("spawn").Queue()
        client = mp.get_context("spawn").Process(
            target=_client_main,
            args=(server.grpc_url, args.model, args.transport, users, interval, seconds, queue))
        client.start()
        samples = RssSampler(server.process.pid, client.pid).start()
        print(format_table([]), flush=True)
        while not signals.requested.is_set():
            try:
                item = queue.get(timeout=1)
            except Exception:  # noqa: BLE001 - queue.Empty: poll the stop signal again
                if not client.is_alive() and queue.empty():
                    break
                continue
            if item is None:
                break
            index, lat, failures, error = item
            count = len(lat) + failures
            server_mb, stubs_mb, client_mb = samples.at((index + 1) * interval)
            row = Row(round((index + 1) * interval / 60, 2), count, failures, percentile(lat, 50),
                      percentile(lat, 99), count / interval, server_mb, stubs_mb, client_mb, error)
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
            if error:
                print(f"  first error: {error}", flush=True)
    except StartCancelled:
        pass
    finally:
        with_stop = signals.requested.is_set()
        if client is not None and client.is_alive():
            client.kill()
            client.join()
        server.stop()
        if with_stop:
            print(f"soak: stopped by {signals.first}", flush=True)
    if not rows:
        print("soak: no complete interval", file=sys.stderr)
        return 1
    if rows and rows[-1].requests < 0.5 * statistics.median(r.requests for r in rows):
        rows = rows[:-1]  # a partial last interval
    verdict = judge(rows, args.warmup_intervals, args.max_rss_growth, args.max_p99_drift)
    growth = ", ".join(f"{k.removesuffix('_rss_mb')} {v:+.1%}" for k, v in verdict.rss_growth.items())
    print(f"\nverdict: {'PASS' if verdict.passed else 'FAIL'}: failures {verdict.failures}; "
          f"RSS growth after warm-up: {growth}; p99 drift {verdict.p99_drift:+.1%}")
    for reason in verdict.reasons:
        print(f"  - {reason}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(format_table(rows) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"users": users, "interval_s": interval, "rows": [asdict(r) for r in rows],
         "verdict": asdict(verdict)}, indent=2))
    print(f"\n{format_table(rows)}\nwritten {args.out}.md, {args.out}.json")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
