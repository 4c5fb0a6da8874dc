"""Locust users that call the embedding service the way applications do: through `client`.

Run headless through `python -m loadtest` (which adds server-side statistics, a saturation guard and
SLO gates), or directly, alone or as a master with workers:
    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 30s --host 127.0.0.1:8001

Users (one runs, chosen by --loadtest-user / LOADTEST_USER unless User classes are named):
    EmbeddingGrpcUser  `embed_batch` over gRPC: image bytes in, preprocessing in the user
    EmbeddingHttpUser  the same over HTTP (--host is then Triton's HTTP address)
    RawTensorUser      `embed_arrays` with inputs built once: server + transport only
                       (gRPC, or HTTP with --loadtest-raw-protocol http)
Load: closed loop by default (each user waits for its response); --loadtest-rate-per-user makes it
open loop (arrivals on a schedule, latency measured from the scheduled time); --loadtest-steps
holds a list of user counts for --loadtest-step-time each. Every option also reads an environment
variable (see `loadtest/settings.py`), which is how distributed workers get them.
"""

from __future__ import annotations

# gRPC's own threads block gevent unless its gevent integration is on before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import numpy as np  # noqa: E402
from gevent.pool import Group  # noqa: E402
from gevent.queue import Queue  # noqa: E402
from locust import LoadTestShape, User, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from client import EmbeddingClient  # noqa: E402
from loadtest.clients import make_client  # noqa: E402
from loadtest.report import from_histogram, summarize  # noqa: E402
from loadtest.settings import Settings, add_locust_options  # noqa: E402
from loadtest.slo import SLO_EXIT_CODE, Thresholds, evaluate  # noqa: E402

log = logging.getLogger("loadtest")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


# -- inputs ----------------------------------------------------------------------------------------
_CORPORA: dict[str, list[bytes]] = {}


def load_corpus(folder: str | None) -> list[bytes]:
    """Encoded images, read once per process so the disk is not part of the measurement."""
    key = folder or ""
    if key not in _CORPORA:
        if folder:
            paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            from samples import sample_paths

            paths = sample_paths()
        if not paths:
            raise ValueError(f"no images found in {folder}")
        _CORPORA[key] = [p.read_bytes() for p in paths]
    return _CORPORA[key]


# -- generator health: delays that come from the load generator, not the server -------------------
class LagStats:
    """Counts of delays. For open-loop arrivals: how late requests started against their schedule
    (the generator was slow, or every in-flight slot was taken). For the event loop: how much later
    than asked a 10 ms sleep returned (something held the loop: CPU-bound preprocessing in a user,
    or a starved process). Either way, latency then includes the generator's own queueing."""

    FIELDS = ("count", "total_s", "max_s", "over_10ms", "over_100ms", "waited_for_slot")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
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
        out, _ = dict(self.values), self.reset()
        return out

    def summary(self) -> dict[str, float]:
        v = self.values
        count = int(v["count"])
        return {"requests": count, "avg_ms": round(v["total_s"] / count * 1000, 3) if count else 0.0,
                "max_ms": round(v["max_s"] * 1000, 3),
                "late_10ms_ratio": round(v["over_10ms"] / count, 4) if count else 0.0,
                "late_100ms_ratio": round(v["over_100ms"] / count, 4) if count else 0.0,
                "waited_for_slot": int(v["waited_for_slot"])}


LAG = LagStats()  # open-loop schedule lag
LOOP = LagStats()  # event-loop lag
LOOP_TICK_S = 0.010


def _watch_event_loop() -> None:
    """Sleep 10 ms again and again; the oversleep is how long the loop could not run anything."""
    while True:
        start = time.perf_counter()
        gevent.sleep(LOOP_TICK_S)
        LOOP.add(max(time.perf_counter() - start - LOOP_TICK_S, 0.0), False)


# -- users -----------------------------------------------------------------------------------------
class RequestUnfinished(Exception):
    """An open-loop request that had not completed when the run stopped."""


class _EmbeddingUser(User):
    """Shared loop of every user: closed loop, or open loop at --loadtest-rate-per-user.

    Open loop: the user's task only keeps the schedule, putting each arrival's scheduled time on
    a queue; up to --loadtest-max-inflight sender greenlets take them and send. All share the
    user's one client, as an application's threads do (gRPC multiplexes one channel; the HTTP
    client keeps one connection per sender). Latency counts from the scheduled time, so waiting
    for a free sender is latency too.
    """

    abstract = True
    protocol = "grpc"
    request_type = "grpc"
    kind = "grpc"
    STOP_GRACE_S = 10.0  # open loop: how long queued and in-flight requests may finish at the end

    def wait_time(self) -> float:
        if self.settings.rate_per_user > 0:
            return 0.0  # the schedule sleeps, not Locust
        return self.settings.think_ms / 1000.0

    def configure(self) -> None:
        """Hook for per-run choices that depend on options (read after the master's update)."""

    def on_start(self) -> None:
        self._senders = Group()
        self._arrivals: Queue = Queue()
        self._idle_senders = 0
        self._next_arrival: float | None = None
        self._pending: list[float] = []  # open loop: scheduled times not yet answered
        self.client: EmbeddingClient | None = None
        try:
            self.settings = Settings.from_options(self.environment.parsed_options)
            self.configure()
            self.client = self.new_client()
            self.client.info  # noqa: B018 - fetch the model contract once, outside the measurement
            self.prepare()
        except Exception as exc:
            # Count it (the report shows it by type), then stop this user through on_stop: an
            # exception escaping on_start would skip on_stop and leave the gRPC client open,
            # which hangs the process at exit.
            log.error("user setup failed: %s: %s", type(exc).__name__, exc)
            self.environment.events.request.fire(
                request_type=self.request_type, name="setup", response_time=0.0,
                response_length=0, exception=exc, context={})
            raise StopUser() from exc

    def on_stop(self) -> None:
        # Let queued and in-flight open-loop requests end, then close and drop the client, or the
        # process can hang at exit in the gRPC client's __del__.
        if self._pending:
            deadline = time.perf_counter() + self.STOP_GRACE_S
            while self._pending and time.perf_counter() < deadline:
                gevent.sleep(0.05)
            # What is still unanswered is the slowest part of the run; leaving it out would
            # flatter the percentiles, so each counts as a failed request.
            for scheduled in list(self._pending):
                self.environment.events.request.fire(
                    request_type=self.request_type, name="unfinished",
                    response_time=(time.perf_counter() - scheduled) * 1000.0, response_length=0,
                    exception=RequestUnfinished(
                        f"not answered {self.STOP_GRACE_S:.0f} s after the run ended"),
                    context={})
            self._pending.clear()
        self._senders.kill(block=True, timeout=5.0)
        if self.client is not None:
            self.client.close()
            self.client = None

    def new_client(self) -> EmbeddingClient:
        s = self.settings
        return make_client(self.host, s.model, protocol=self.protocol, transport=s.transport,
                           timeout=s.timeout, attempts=s.attempts)

    # Subclasses: what one request sends.
    def prepare(self) -> None:
        self.corpus = load_corpus(self.settings.images)

    def request_name(self) -> str:
        return f"embed_batch[{self.settings.batch}]"

    def call(self, client: EmbeddingClient) -> None:
        client.embed_batch(random.choices(self.corpus, k=self.settings.batch))

    # The loop.
    @task
    def embed(self) -> None:
        if self.settings.rate_per_user > 0:
            self._schedule_next()
        else:
            self._measure(time.perf_counter())

    def _measure(self, start: float) -> None:
        exc: Exception | None = None
        try:
            self.call(self.client)
        except Exception as error:  # every failure is counted, by type, in the report
            exc = error
        self.environment.events.request.fire(
            request_type=self.request_type, name=self.request_name(),
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0 if exc else self.settings.batch, exception=exc, context={})

    def _schedule_next(self) -> None:
        rate = self.settings.rate_per_user
        now = time.perf_counter()
        interval = random.expovariate(rate) if self.settings.arrivals == "poisson" else 1.0 / rate
        if self._next_arrival is None:  # users start out of phase
            self._next_arrival = now + random.uniform(0.0, 1.0 / rate)
        else:
            self._next_arrival += interval
        scheduled = self._next_arrival
        if scheduled > now:
            gevent.sleep(scheduled - now)
        no_free_sender = self._idle_senders == 0
        if no_free_sender and len(self._senders) < self.settings.max_inflight:
            self._senders.spawn(self._sender)
            no_free_sender = False
        self._pending.append(scheduled)
        self._arrivals.put((scheduled, no_free_sender))

    def _sender(self) -> None:
        while True:
            self._idle_senders += 1
            try:
                scheduled, waited = self._arrivals.get()
            finally:
                self._idle_senders -= 1
            LAG.add(max(time.perf_counter() - scheduled, 0.0), waited)
            try:
                self._measure(scheduled)
            finally:
                self._pending.remove(scheduled)


class EmbeddingGrpcUser(_EmbeddingUser):
    """An application thread calling `embed_batch` with encoded images over gRPC."""


class EmbeddingHttpUser(_EmbeddingUser):
    """An application thread calling `embed_batch` with encoded images over HTTP."""

    protocol = "http"
    request_type = "http"
    kind = "http"


class RawTensorUser(_EmbeddingUser):
    """Sends input tensors built once at start: no decoding or resizing in the measured loop, so
    its latency is server + transport; compare with EmbeddingGrpcUser to see preprocessing cost."""

    request_type = "grpc-raw"
    kind = "raw"
    _BATCHES = 4  # distinct pre-built batches cycled through

    def configure(self) -> None:
        self.protocol = self.settings.raw_protocol
        self.request_type = f"{self.protocol}-raw"

    def prepare(self) -> None:
        corpus = load_corpus(self.settings.images)
        # What the transport carries, built once: uint8 pixels for the compact transport (the
        # server-side ensemble converts), float32 in [0, 1] for the model's own input.
        build = self.client.pixels if self.settings.transport == "uint8" else self.client.preprocess
        pixels = [build(item, i) for i, item in enumerate(corpus)]
        batch = self.settings.batch
        self.batches = [np.stack([pixels[(b * batch + j) % len(pixels)] for j in range(batch)])
                        for b in range(min(self._BATCHES, len(pixels)))]
        self._turn = 0

    def request_name(self) -> str:
        return f"embed_arrays[{self.settings.batch}]"

    def call(self, client: EmbeddingClient) -> None:
        self._turn = (self._turn + 1) % len(self.batches)
        client.embed_arrays(self.batches[self._turn])


USERS: dict[str, type[_EmbeddingUser]] = {
    cls.kind: cls for cls in (EmbeddingGrpcUser, EmbeddingHttpUser, RawTensorUser)}


# -- load shape ------------------------------------------------------------------------------------
class StepMarks:
    """Snapshots of the aggregated statistics when each ramp step starts, for per-step summaries."""

    def __init__(self) -> None:
        self.marks: list[dict[str, Any]] = []

    def mark(self, index: int, users: int, total: Any) -> None:
        self.marks.append({"step": index, "users": users, "time": time.time(), **_snapshot(total)})

    def steps(self, total: Any, rate_per_user: float) -> list[dict[str, Any]]:
        if not self.marks:
            return []
        end = {"time": time.time(), **_snapshot(total)}
        out = []
        for begin, after in zip(self.marks, [*self.marks[1:], end], strict=True):
            hist = {k: after["hist"].get(k, 0) - begin["hist"].get(k, 0) for k in after["hist"]}
            hist = {k: v for k, v in hist.items() if v > 0}
            summary = from_histogram(
                hist, requests=after["requests"] - begin["requests"],
                failures=after["failures"] - begin["failures"],
                total_ms=after["total_ms"] - begin["total_ms"], max_ms=max(hist, default=0.0),
                images=after["images"] - begin["images"], span_s=after["time"] - begin["time"])
            row = {"step": begin["step"], "users": begin["users"], **summary.as_dict()}
            if rate_per_user > 0:
                row["offered_rps"] = round(begin["users"] * rate_per_user, 3)
            out.append(row)
        return out


def _snapshot(total: Any) -> dict[str, Any]:
    return {"hist": {float(k): v for k, v in total.response_times.items()},
            "requests": total.num_requests, "failures": total.num_failures,
            "total_ms": total.total_response_time, "images": total.total_content_length}


STEPS = StepMarks()


class LoadtestShape(LoadTestShape):
    """Fixed users (-u/-r/-t, as without a shape), or a stepped ramp with --loadtest-steps.

    With a shape Locust leaves --run-time to it, so both modes end the run at --run-time.
    """

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self._step = -1

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        settings = Settings.from_options(options)
        if options.run_time and self.get_run_time() >= options.run_time:
            return None
        if not settings.steps:
            return int(options.num_users or 1), float(options.spawn_rate or 1)
        index = int(self.get_run_time() // settings.step_time)
        if index >= len(settings.steps):
            return None
        users = int(settings.steps[index])
        if index != self._step:
            self._step = index
            STEPS.mark(index, users, self.runner.stats.total)
            log.info("step %d: %d users", index, users)
        return users, float(options.spawn_rate or max(settings.steps))


# -- wiring ----------------------------------------------------------------------------------------
@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    add_locust_options(parser)


@events.init.add_listener
def _init(environment: Any, runner: Any = None, **_kwargs: Any) -> None:
    """Run only the chosen user kind unless User classes were named; check options early."""
    options = environment.parsed_options
    settings = Settings.from_options(options)
    if isinstance(runner, WorkerRunner):
        return  # workers instantiate whatever the master dispatches
    named = getattr(options, "user_classes", None)
    if not named:
        chosen = [c for c in environment.user_classes if getattr(c, "kind", None) == settings.user]
        if chosen:
            environment.user_classes[:] = chosen


_WATCHER: list[gevent.Greenlet] = []


@events.test_start.add_listener
def _start_watch(environment: Any, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner) and not _WATCHER:
        _WATCHER.append(gevent.spawn(_watch_event_loop))


@events.test_stop.add_listener
def _stop_watch(environment: Any, **_kwargs: Any) -> None:
    while _WATCHER:
        _WATCHER.pop().kill(block=False)


@events.report_to_master.add_listener
def _report_lag(client_id: str, data: dict, **_kwargs: Any) -> None:
    data["loadtest_lag"] = LAG.pop()
    data["loadtest_loop"] = LOOP.pop()


@events.worker_report.add_listener
def _collect_lag(client_id: str, data: dict, **_kwargs: Any) -> None:
    LAG.merge(data.get("loadtest_lag", {}))
    LOOP.merge(data.get("loadtest_loop", {}))


_CPU: dict[str, float] = {"max_percent": 0.0, "warnings": 0}
_WORKERS: set[str] = set()


@events.worker_connect.add_listener
def _worker_connected(client_id: str, **_kwargs: Any) -> None:
    _WORKERS.add(client_id)  # by the end of the run they have disconnected: count them here


@events.cpu_warning.add_listener
def _cpu_warning(environment: Any, cpu_usage: float, **_kwargs: Any) -> None:
    _CPU["max_percent"] = max(_CPU["max_percent"], float(cpu_usage))
    _CPU["warnings"] += 1


@events.quitting.add_listener
def _finish(environment: Any, **_kwargs: Any) -> None:
    """On the master (or a single process): per-step statistics, generator health, SLO verdict."""
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    settings = Settings.from_options(environment.parsed_options)
    stats = runner.stats
    entries = [e.serialize() for e in stats.entries.values() if e.num_requests or e.num_failures]
    summary = summarize(entries)
    thresholds = Thresholds.from_options(environment.parsed_options)
    violations = evaluate(summary.metrics(), thresholds) if thresholds.any else []
    if violations:
        log.error("SLO missed: %s", "; ".join(violations))
        environment.process_exit_code = SLO_EXIT_CODE
    elif thresholds.max_error_rate is not None and not runner.exceptions:
        environment.process_exit_code = 0  # failures within the allowed error rate
    extras = {
        "runner": type(runner).__name__,
        "workers": len(_WORKERS) if isinstance(runner, MasterRunner) else 0,
        "user_classes": [c.__name__ for c in environment.user_classes],
        "cpu_warning": bool(runner.cpu_warning_emitted),
        "worker_cpu_warning": bool(getattr(runner, "worker_cpu_warning_emitted", False)),
        "cpu_warning_max_percent": _CPU["max_percent"],
        "open_loop": settings.rate_per_user > 0,
        "rate_per_user": settings.rate_per_user,
        "schedule_lag": LAG.summary() if settings.rate_per_user > 0 else None,
        "event_loop_lag": LOOP.summary(),
        "steps": STEPS.steps(stats.total, settings.rate_per_user),
        "errors": list(stats.serialize_errors().values()),
        "exceptions": len(runner.exceptions),
        "summary": summary.as_dict(),
        "slo": {"thresholds": thresholds.as_dict(), "violations": violations,
                "passed": not violations},
    }
    if settings.extras_file:
        path = Path(settings.extras_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(extras, indent=2))
