"""Is the load generator itself the bottleneck? Then its numbers are not the server's.

A Locust process runs its users on one core (gevent). When that core is busy (decoding and resizing
images, serializing tensors), requests wait for the event loop, and that wait is reported as
latency, and closed-loop users send fewer requests: the run measures the generator. The guard
samples every Locust process's CPU while the run lasts, reads Locust's own CPU warnings and, for open
loop runs, how late requests started against their schedule, and says whether the result is
reliable and why not.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

#: A Locust process above this share of one core is treated as busy.
BUSY_PERCENT = 85.0
#: ...and saturated when busy for at least this share of the run's samples.
BUSY_SHARE = 0.25
#: Open loop: share of requests that may start more than 10 ms late before the run is unreliable.
LATE_SHARE = 0.05
#: Mean event-loop delay (what a response waits before its user runs again) that is tolerated:
#: below LOOP_MIN_MS, or at most this share of the median latency.
LOOP_MIN_MS = 1.0
LOOP_SHARE_OF_P50 = 0.10
#: A server on this machine shares its cores with the generator: when the machine is saturated,
#: every core-second the generator uses is one the server did not get. Above this share of the
#: machine's CPU (all generator processes together) the result measures the generator too.
#: Measured here (2 cores, tiny twin, raw user, 8 users, server on the same machine): Triton's
#: C++ perf_analyzer costs ~1.0 ms of CPU per request, 0.10-0.13 of the machine; the raw user
#: that rebuilt each request in the client library cost ~1.6 ms, ~0.18 of it, and reached 0.83x
#: perf_analyzer's requests/s; with requests serialized once it costs ~1.0 ms, like perf_analyzer.
CO_LOCATED_SHARE = 0.15
MACHINE_SATURATED_PERCENT = 90.0
LOCUST_CPU_WARNING = re.compile(r"CPU usage (above|was too high|threshold was exceeded)|"
                                r"exceeded cpu threshold", re.I)


@dataclass
class CpuMonitor:
    """Samples the CPU of a process tree (the Locust master and its workers) in a thread."""

    pid: int
    interval: float = 0.5
    samples: dict[int, list[float]] = field(default_factory=dict)
    machine: list[float] = field(default_factory=list)
    #: (time, CPU seconds the whole tree has used so far) at each sample
    totals: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._procs: dict[int, psutil.Process] = {}
        self._used: dict[int, float] = {}  # last CPU seconds read per process (kept after it exits)
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)

    def start(self) -> CpuMonitor:
        psutil.cpu_percent(None)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for proc in found:
            if proc.pid not in self._procs:
                self._procs[proc.pid] = proc
                try:
                    proc.cpu_percent(None)  # the first call only sets the baseline
                except psutil.Error:
                    pass
        return [self._procs[p.pid] for p in found]

    def _run(self) -> None:
        self._tree()
        while not self._stop.wait(self.interval):
            for proc in self._tree():
                try:
                    value = proc.cpu_percent(None)
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                self.samples.setdefault(proc.pid, []).append(value)
                self._used[proc.pid] = times.user + times.system
            self.machine.append(psutil.cpu_percent(None))
            self.totals.append((time.monotonic(), sum(self._used.values())))

    def steady_cores(self) -> float | None:
        """Cores the generator used while under way: CPU between 20 % and 90 % of the samples
        over the time between them (start-up imports and shutdown left out)."""
        if len(self.totals) < 4:
            return None
        (t0, c0), (t1, c1) = self.totals[len(self.totals) // 5], self.totals[len(self.totals) * 9 // 10]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def summary(self) -> dict[str, Any]:
        """Per process: mean and max % of one core and the share of busy samples; machine mean."""
        per_process = {}
        for pid, values in self.samples.items():
            values = values[1:] or values  # the first interval includes process start-up
            if not values:
                continue
            per_process[str(pid)] = {
                "mean_percent": round(sum(values) / len(values), 1),
                "max_percent": round(max(values), 1),
                "busy_share": round(sum(v >= BUSY_PERCENT for v in values) / len(values), 3),
                "samples": len(values)}
        n = len(self.machine)
        machine = self.machine[n // 5:n * 9 // 10 + 1] if n >= 4 else (self.machine[1:] or self.machine)
        steady = self.steady_cores()
        return {"processes": per_process, "interval": self.interval,
                "generator_cores": round(steady, 3) if steady is not None else None,
                "machine_mean_percent": round(sum(machine) / len(machine), 1) if machine else None,
                "cores": psutil.cpu_count() or 1}


def is_local(host: str) -> bool:
    """True when `host` (host:port, maybe with a scheme) is this machine: the server then competes
    with the generator for the same cores."""
    name = host.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]") or "localhost"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return False
    local = {"127.0.0.1", "::1"}
    try:
        local |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in local for a in addresses)


def locust_cpu_warnings(log_text: str) -> list[str]:
    """Locust's own CPU warnings found in its log output."""
    return [line.strip() for line in log_text.splitlines() if LOCUST_CPU_WARNING.search(line)]


def verdict(cpu: dict[str, Any] | None, extras: dict[str, Any] | None,
            log_warnings: list[str], p50_ms: float | None = None, local_server: bool = False,
            rps: float = 0.0) -> dict[str, Any]:
    """`reliable` is False when any sign says the generator, not the server, set the numbers:
    a generator process saturated, Locust's own CPU warning, an event loop held for a noticeable
    share of the latency, an open-loop schedule not kept, or (server on this machine) a
    generator taking a noticeable share of a saturated machine's CPU from the server."""
    reasons: list[str] = []
    notes: list[str] = []
    processes = (cpu or {}).get("processes", {})
    cores = (cpu or {}).get("cores") or 1
    used = (cpu or {}).get("generator_cores")  # cores the generator used while under way
    if used is None:
        used = sum(p["mean_percent"] for p in processes.values()) / 100.0
    share = used / cores
    machine = (cpu or {}).get("machine_mean_percent")
    cpu_ms = round(used * 1000.0 / rps, 3) if rps else None
    for pid, proc in processes.items():
        if proc["busy_share"] >= BUSY_SHARE:
            reasons.append(f"Locust process {pid} was >= {BUSY_PERCENT:.0f}% of a core in "
                           f"{proc['busy_share']:.0%} of samples (mean {proc['mean_percent']}%)")
    extras = extras or {}
    if extras.get("cpu_warning") or extras.get("worker_cpu_warning"):
        reasons.append("Locust reported CPU usage above 90% in a load-generating process")
    elif log_warnings:
        reasons.append(f"Locust warned: {log_warnings[0][:160]}")
    loop = extras.get("event_loop_lag") or {}
    if loop.get("requests"):
        held = loop["avg_ms"]
        share = held / p50_ms if p50_ms else 0.0
        text = (f"the Locust event loop was held {held:.1f} ms on average (max {loop['max_ms']:.0f} "
                f"ms; > 10 ms in {loop['late_10ms_ratio']:.0%} of 10 ms ticks)")
        if held >= LOOP_MIN_MS and share > LOOP_SHARE_OF_P50:
            reasons.append(f"{text}, {share:.0%} of the p50 latency: CPU work in the generator "
                           f"(image preprocessing, serialization) or a starved process delays "
                           f"responses; use --processes, the raw user, or more cores")
        elif held >= LOOP_MIN_MS:
            notes.append(f"{text}: about {held:.1f} ms of each latency is the generator's")
    lag = extras.get("schedule_lag") or {}
    if lag.get("requests"):
        if lag.get("late_10ms_ratio", 0) > LATE_SHARE:
            reasons.append(f"{lag['late_10ms_ratio']:.0%} of open-loop requests started >10 ms "
                           f"after their scheduled time (max {lag['max_ms']:.0f} ms): the generator "
                           f"could not keep the schedule")
        if lag.get("waited_for_slot"):
            notes.append(f"{lag['waited_for_slot']} arrivals waited for a free in-flight slot "
                         f"(raise --max-inflight if the server is not the limit)")
    saturated = machine is not None and machine >= MACHINE_SATURATED_PERCENT
    if local_server and saturated and share >= CO_LOCATED_SHARE:
        reasons.append(f"the server runs on this machine, whose CPUs were {machine:.0f}% busy, and "
                       f"the generator used {share:.0%} of them ({used:.2f} cores"
                       + (f", {cpu_ms:.2f} ms of CPU per request" if cpu_ms else "")
                       + "): CPU the server did not get; run the generator elsewhere, or make it "
                         "cheaper (the raw user)")
    elif saturated:
        notes.append(f"the machine's CPUs averaged {machine:.0f}% busy"
                     + (": a server on the same machine competes with the load generator"
                        if local_server else ""))
    return {"reliable": not reasons, "reasons": reasons, "notes": notes,
            "machine_share": round(share, 3), "cpu_ms_per_request": cpu_ms,
            "event_loop_lag": loop or None}
