"""Locust users: what one request sends. Pacing (closed or open loop) is shared; timing is in
`loadtest.timing.TimedClient`.

    EmbeddingGrpcUser  `embed_batch` over gRPC: image bytes in, preprocessing in the user
    EmbeddingHttpUser  the same over HTTP (--host is then Triton's HTTP address)
    RawTensorUser      pre-built requests, serialized once and sent as bytes (gRPC or HTTP), as
                       perf_analyzer does: server + transport only
"""

from __future__ import annotations

import functools
import logging
import random
import time
from pathlib import Path

import gevent
import numpy as np
from gevent.pool import Group
from gevent.queue import Queue
from locust import User, task
from locust.exception import StopUser

from client import EmbeddingClient, RetryPolicy
from loadtest.listeners import state_of
from loadtest.options import Settings
from loadtest.raw import RawGrpcSender, RawHttpSender
from loadtest.timing import TimedClient

try:  # the client's one list of image file suffixes
    from client.preprocess import IMAGE_SUFFIXES
except ImportError:  # older layout: it lives in the client's command line
    from client.cli import IMAGE_SUFFIXES

log = logging.getLogger("loadtest")


@functools.lru_cache(maxsize=4)
def load_corpus(folder: str) -> tuple[bytes, ...]:
    """Encoded images, read once per process so the disk is not part of the measurement."""
    if folder:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        from samples import sample_paths

        paths = sample_paths()
    if not paths:
        raise ValueError(f"no images found in {folder}")
    return tuple(p.read_bytes() for p in paths)


def make_client(url: str | None, settings: Settings, protocol: str) -> EmbeddingClient:
    """The project's client for one user; retries only when asked for, so failures show."""
    retry = RetryPolicy.none() if settings.attempts <= 1 else RetryPolicy(attempts=settings.attempts)
    if url and url.startswith("http://"):
        url = url[len("http://"):]
    return EmbeddingClient(url.rstrip("/") if url else None, settings.model, protocol=protocol,
                           payload=settings.payload, timeout=settings.timeout, retry=retry)


class RequestUnfinished(Exception):
    """An open-loop request that had not completed when the run stopped."""


class EmbeddingUser(User):
    """Shared loop of every user: closed loop, or open loop at --loadtest-rate-per-user.

    Open loop: the user's task only keeps the schedule, putting each arrival's scheduled time on
    a queue; up to --loadtest-max-inflight sender greenlets take them and send. All share the
    user's one client, as an application's threads do. Latency counts from the scheduled time, so
    waiting for a free sender is latency too.
    """

    abstract = True
    kind = "grpc"
    protocol = "grpc"
    STOP_GRACE_S = 10.0  # open loop: how long queued and in-flight requests may finish at the end

    # Subclasses: what one request sends (returns its image count).
    def prepare(self) -> None:
        self.corpus = load_corpus(self.settings.images)

    def send(self) -> int:
        return len(self.client.embed_batch(random.choices(self.corpus, k=self.settings.batch)))

    def request_name(self) -> str:
        return f"embed_batch[{self.settings.batch}]"

    # The loop.
    def wait_time(self) -> float:
        if self.settings.rate_per_user > 0:
            return 0.0  # the schedule sleeps, not Locust
        return self.settings.think_ms / 1000.0

    def on_start(self) -> None:
        self._senders, self._arrivals = Group(), Queue()
        self._idle_senders = 0
        self._next_arrival: float | None = None
        self._pending: list[float] = []  # open loop: scheduled times not yet answered
        self.client: EmbeddingClient | None = None
        self.settings = Settings.from_options(self.environment.parsed_options)
        if self.kind == "raw":
            self.protocol = self.settings.raw_protocol
        self.timed = TimedClient(self.environment.events, f"{self.protocol}"
                                 f"{'-raw' if self.kind == 'raw' else ''}", self.request_name())
        try:
            self.client = make_client(self.host, self.settings, self.protocol)
            self.client.info  # noqa: B018 - fetch the model contract once, outside the measurement
            self.prepare()
        except Exception as exc:
            # Count it (the report shows it by type), then stop this user through on_stop: an
            # exception escaping on_start would skip on_stop and leave the gRPC client open,
            # which hangs the process at exit.
            log.error("user setup failed: %s: %s", type(exc).__name__, exc)
            self.timed.fail("setup", exc)
            raise StopUser() from exc

    def on_stop(self) -> None:
        # Let queued and in-flight open-loop requests end, then close and drop the clients, or the
        # process can hang at exit in the gRPC client's __del__.
        if self._pending:
            deadline = time.perf_counter() + self.STOP_GRACE_S
            while self._pending and time.perf_counter() < deadline:
                gevent.sleep(0.05)
            # What is still unanswered is the slowest part of the run; leaving it out would
            # flatter the percentiles, so each counts as a failed request.
            for scheduled in list(self._pending):
                self.timed.fail("unfinished", RequestUnfinished(
                    f"not answered {self.STOP_GRACE_S:.0f} s after the run ended"),
                    (time.perf_counter() - scheduled) * 1000.0)
            self._pending.clear()
        self._senders.kill(block=True, timeout=5.0)
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @task
    def embed(self) -> None:
        if self.settings.rate_per_user > 0:
            self._schedule_next()
        else:
            self.timed.call(self.send)

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
        lag = state_of(self.environment).schedule_lag
        while True:
            self._idle_senders += 1
            try:
                scheduled, waited = self._arrivals.get()
            finally:
                self._idle_senders -= 1
            lag.add(max(time.perf_counter() - scheduled, 0.0), waited)
            try:
                self.timed.call(self.send, start=scheduled)
            finally:
                self._pending.remove(scheduled)


class EmbeddingGrpcUser(EmbeddingUser):
    """An application thread calling `embed_batch` with encoded images over gRPC."""


class EmbeddingHttpUser(EmbeddingUser):
    """An application thread calling `embed_batch` with encoded images over HTTP."""

    kind = "http"
    protocol = "http"


class RawTensorUser(EmbeddingUser):
    """Sends requests built once at start (no decoding or resizing in the measured loop), so its
    latency is server + transport; compare with EmbeddingGrpcUser to see preprocessing cost."""

    kind = "raw"
    BATCHES = 4  # distinct pre-built batches cycled through

    def prepare(self) -> None:
        corpus = load_corpus(self.settings.images)
        # uint8 pixels for the uint8 payload (the server's ensemble converts), float32 in
        # [0, 1] for the model's own input.
        build = self.client.pixels if self.settings.payload == "uint8" else self.client.preprocess
        pixels = [build(item, i) for i, item in enumerate(corpus)]
        batch = self.settings.batch
        self.batches = [np.stack([pixels[(b * batch + j) % len(pixels)] for j in range(batch)])
                        for b in range(min(self.BATCHES, len(pixels)))]
        self._turn = 0
        sender = RawGrpcSender if self.protocol == "grpc" else RawHttpSender
        self.raw = sender(self.client, self.batches, self.settings.timeout,
                          concurrency=self.settings.max_inflight)

    def request_name(self) -> str:
        return f"embed_arrays[{self.settings.batch}]"

    def send(self) -> int:
        self._turn = (self._turn + 1) % len(self.batches)
        return self.raw.send(self._turn)

    def close(self) -> None:
        raw, self.raw = getattr(self, "raw", None), None
        if raw is not None:
            raw.close()
        super().close()
