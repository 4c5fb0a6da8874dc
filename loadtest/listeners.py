"""Locust event listeners: exact latency, generator health, per-step rows and the final verdict.

Per-run state lives in one `RunState` on the Locust Environment (`state_of(environment)`), not in
module globals, so several environments in one process (tests, library use) never mix. In every
process that runs users, each successful request's latency goes into the process's histogram;
workers ship what they recorded with each report to the master (`report_to_master`), which merges
it (`worker_report`) into the run's histogram and the current step's. A single process merges its
own. At the end the master (or the single process) writes the extras file the runner reads.

Locust itself is imported inside the functions that run in a Locust process: importing it
monkey-patches the standard library, which must not happen as a side effect of importing this
module (a test process that already uses ssl would recurse forever).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent

from loadtest.latency import Latencies
from loadtest.options import Settings, add_locust_options
from loadtest.report import UNANSWERED, Throughput, failures_by_type, metrics, throughput
from loadtest.slo import SLO_EXIT_CODE, Thresholds, evaluate

log = logging.getLogger("loadtest")
LOOP_TICK_S = 0.010


class LagStats:
    """Counts of delays. For open-loop arrivals: how late requests started against their schedule
    (the generator was slow, or every in-flight slot was taken). For the event loop: how much later
    than asked a 10 ms sleep returned (something held the loop: CPU-bound preprocessing in a user,
    or a starved process). Either way, latency then includes the generator's own queueing."""

    FIELDS = ("count", "total_s", "max_s", "over_10ms", "over_100ms", "waited_for_slot")

    def __init__(self) -> None:
        self.values: dict[str, float] = dict.fromkeys(self.FIELDS, 0.0)

    def add(self, lag_s: float, waited: bool) -> None:
        v = self.values
        v["count"] += 1
        v["total_s"] += lag_s
        v["max_s"] = max(v["max_s"], lag_s)
        v["over_10ms"] += lag_s > 0.010
        v["over_100ms"] += lag_s > 0.100
        v["waited_for_slot"] += waited

    def merge(self, other: dict[str, float]) -> None:
        for key, value in other.items():
            if key == "max_s":
                self.values[key] = max(self.values[key], value)
            elif key in self.values:
                self.values[key] += value

    def pop(self) -> dict[str, float]:
        out = dict(self.values)
        self.values = dict.fromkeys(self.FIELDS, 0.0)
        return out

    def summary(self) -> dict[str, float]:
        v = self.values
        count = int(v["count"])
        return {"requests": count, "avg_ms": round(v["total_s"] / count * 1000, 3) if count else 0.0,
                "max_ms": round(v["max_s"] * 1000, 3),
                "late_10ms_ratio": round(v["over_10ms"] / count, 4) if count else 0.0,
                "late_100ms_ratio": round(v["over_100ms"] / count, 4) if count else 0.0,
                "waited_for_slot": int(v["waited_for_slot"])}


@dataclass
class Step:
    """One step of a ramp: Locust's counters when it began, and the latencies recorded in it."""

    index: int
    users: int
    began: float
    counters: dict[str, float]
    latencies: Latencies = field(default_factory=Latencies)


@dataclass
class RunState:
    """Everything one Locust environment accumulates during a run."""

    pending: Latencies = field(default_factory=Latencies)  # this process, not yet merged
    total: Latencies = field(default_factory=Latencies)  # the run (master or single process)
    steps: list[Step] = field(default_factory=list)
    schedule_lag: LagStats = field(default_factory=LagStats)
    loop_lag: LagStats = field(default_factory=LagStats)
    workers: set[str] = field(default_factory=set)
    cpu_warning_max_percent: float = 0.0
    watcher: gevent.Greenlet | None = None

    def absorb(self, latencies: Latencies) -> None:
        """Merge recorded latencies into the run and the current step."""
        if not latencies.count:
            return
        self.total.add(latencies)
        if self.steps:
            self.steps[-1].latencies.add(latencies)

    def flush_local(self) -> None:
        """A process that runs users and reports to nobody merges its own recordings."""
        self.absorb(self.pending.pop())

    def mark_step(self, index: int, users: int, entries: dict) -> None:
        self.steps.append(Step(index, users, time.time(), counters(entries)))

    def step_rows(self, entries: dict, rate_per_user: float) -> list[dict[str, Any]]:
        now, end = time.time(), counters(entries)
        rows = []
        for step, nxt in zip(self.steps, [*self.steps[1:], None], strict=False):
            after, until = (nxt.counters, nxt.began) if nxt else (end, now)
            d = {k: after[k] - step.counters[k] for k in after}
            flow = Throughput.of(int(d["requests"]), int(d["failures"]), int(d["unanswered"]),
                                 int(d["images"]), until - step.began)
            row: dict[str, Any] = {"step": step.index, "users": step.users}
            if rate_per_user > 0:
                row["offered_rps"] = round(step.users * rate_per_user, 3)
            rows.append({**row, "throughput": flow.as_dict(),
                         "latency_ms": step.latencies.summary().as_dict()})
        return rows


def counters(entries: dict) -> dict[str, float]:
    """Requests, failures, unanswered ones and images over Locust's statistics entries now."""
    out = dict.fromkeys(("requests", "failures", "unanswered", "images"), 0.0)
    for entry in entries.values():
        out["requests"] += entry.num_requests
        out["failures"] += entry.num_failures
        if entry.name in UNANSWERED:
            out["unanswered"] += entry.num_requests
        else:
            out["images"] += entry.total_content_length
    return out


def state_of(environment: Any) -> RunState:
    state = getattr(environment, "loadtest_state", None)
    if state is None:
        state = environment.loadtest_state = RunState()
    return state


def _watch_event_loop(state: RunState) -> None:
    """Sleep 10 ms again and again; the oversleep is how long the loop could not run anything."""
    while True:
        start = time.perf_counter()
        gevent.sleep(LOOP_TICK_S)
        state.loop_lag.add(max(time.perf_counter() - start - LOOP_TICK_S, 0.0), False)


# -- wiring ----------------------------------------------------------------------------------------
def register() -> None:
    """Attach the listeners (the locustfile calls this once on import); the per-run ones are bound
    to their environment when Locust initialises it."""
    from locust import events

    events.init_command_line_parser.add_listener(add_locust_options)
    events.init.add_listener(on_init)


def on_init(environment: Any, runner: Any = None, **_kwargs: Any) -> None:
    """Bind the run's listeners to this environment; run only the chosen user kind unless User
    classes were named; check the options early."""
    from locust.runners import WorkerRunner

    settings = Settings.from_options(environment.parsed_options)
    state = state_of(environment)
    ev = environment.events
    ev.request.add_listener(lambda **kw: on_request(state, **kw))
    ev.test_start.add_listener(lambda **kw: on_test_start(environment, state))
    ev.test_stop.add_listener(lambda **kw: on_test_stop(state))
    ev.report_to_master.add_listener(lambda client_id, data, **kw: on_report_to_master(state, data))
    ev.worker_report.add_listener(lambda client_id, data, **kw: on_worker_report(state, data))
    ev.worker_connect.add_listener(lambda client_id, **kw: state.workers.add(client_id))
    ev.cpu_warning.add_listener(lambda cpu_usage, **kw: on_cpu_warning(state, cpu_usage))
    ev.quitting.add_listener(lambda **kw: on_quitting(environment, state))
    if isinstance(runner, WorkerRunner):
        return  # workers instantiate whatever the master dispatches
    if not getattr(environment.parsed_options, "user_classes", None):
        chosen = [c for c in environment.user_classes if getattr(c, "kind", None) == settings.user]
        if chosen:
            environment.user_classes[:] = chosen


def on_request(state: RunState, exception: Any = None, name: str = "", response_time: float = 0.0,
               **_kwargs: Any) -> None:
    """Every successful request's latency, at full resolution, into this process's histogram."""
    if exception is None and name not in UNANSWERED:
        state.pending.record(response_time)


def on_test_start(environment: Any, state: RunState) -> None:
    from locust.runners import MasterRunner

    if not isinstance(environment.runner, MasterRunner) and state.watcher is None:
        state.watcher = gevent.spawn(_watch_event_loop, state)


def on_test_stop(state: RunState) -> None:
    if state.watcher is not None:
        state.watcher.kill(block=False)
        state.watcher = None


def on_report_to_master(state: RunState, data: dict) -> None:
    data["loadtest_latency"] = state.pending.pop().encode()
    data["loadtest_lag"] = state.schedule_lag.pop()
    data["loadtest_loop"] = state.loop_lag.pop()


def on_worker_report(state: RunState, data: dict) -> None:
    state.absorb(Latencies.decode(data.get("loadtest_latency")))
    state.schedule_lag.merge(data.get("loadtest_lag", {}))
    state.loop_lag.merge(data.get("loadtest_loop", {}))


def on_cpu_warning(state: RunState, cpu_usage: float) -> None:
    state.cpu_warning_max_percent = max(state.cpu_warning_max_percent, float(cpu_usage))


def on_quitting(environment: Any, state: RunState) -> None:
    """On the master (or a single process): exact latency, steps, generator health, SLO verdict."""
    from locust.runners import MasterRunner, WorkerRunner

    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    if not isinstance(runner, MasterRunner):
        state.flush_local()
    settings = Settings.from_options(environment.parsed_options)
    stats = runner.stats
    entries = [e.serialize() for e in stats.entries.values() if e.num_requests or e.num_failures]
    flow = throughput(entries).as_dict()
    latency = state.total.summary().as_dict()
    thresholds = Thresholds.from_options(environment.parsed_options)
    violations = evaluate(metrics(flow, latency), thresholds) if thresholds.any else []
    if violations:
        log.error("SLO missed: %s", "; ".join(violations))
        environment.process_exit_code = SLO_EXIT_CODE
    elif thresholds.max_error_rate is not None and not runner.exceptions:
        environment.process_exit_code = 0  # failures within the allowed error rate
    extras = {
        "throughput": flow,
        "latency_ms": latency,
        "latency_histogram": state.total.encode(),
        "failures_by_type": failures_by_type(stats.serialize_errors().values()),
        "steps": state.step_rows(stats.entries, settings.rate_per_user),
        "slo": {"thresholds": thresholds.as_dict(), "violations": violations,
                "passed": not violations},
        "locust": {"runner": type(runner).__name__,
                   "workers": len(state.workers) if isinstance(runner, MasterRunner) else 0,
                   "user_classes": [c.__name__ for c in environment.user_classes],
                   "exceptions": len(runner.exceptions)},
        "health": {"cpu_warning": bool(runner.cpu_warning_emitted),
                   "worker_cpu_warning": bool(getattr(runner, "worker_cpu_warning_emitted", False)),
                   "cpu_warning_max_percent": state.cpu_warning_max_percent,
                   "schedule_lag": state.schedule_lag.summary()
                   if settings.rate_per_user > 0 else None,
                   "event_loop_lag": state.loop_lag.summary()},
    }
    log.warning("exact latency ms: " + " ".join(f"{k} {latency[k]}" for k in
                                                 ("p50", "p90", "p95", "p99", "max")))
    if settings.extras_file:
        path = Path(settings.extras_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(extras, indent=2))
