"""Retries with exponential backoff and full jitter, for transient failures only.

Only errors whose `transient` flag is set are retried: the server unreachable or restarting
(gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED; HTTP 429/502/503/504; connection refused) and a
known model that is unloading or loading (Triton's NOT_FOUND "has no available versions" during a
restart). Invalid input, unknown models, refused credentials and server-side failures are
returned at once: repeating them cannot help. Timeouts are not retried unless asked, since a
per-call timeout is a promise to the caller about how long one call may take.

Jitter spreads the retries of many clients after a shared outage, so a restarted server is not
hit by every client at the same instant.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from client.errors import EmbeddingError, RequestTimeoutError
from client.ops import Call, Sleep, drive

T = TypeVar("T")
log = logging.getLogger("client")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one call.

    attempts: total tries (1 = no retry). deadline: seconds after the first try after which no new
    try starts (None: only `attempts` limits). Delays grow as initial * multiplier**n, capped at
    max_delay, and each is drawn uniformly from [0, that] ("full jitter").
    """

    attempts: int = 5
    initial_delay: float = 0.25
    multiplier: float = 2.0
    max_delay: float = 4.0
    deadline: float | None = 30.0
    retry_timeouts: bool = False

    @classmethod
    def none(cls) -> RetryPolicy:
        """No retries: the first failure is raised."""
        return cls(attempts=1, deadline=None)

    def should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, EmbeddingError):
            return False
        if isinstance(error, RequestTimeoutError):
            return self.retry_timeouts
        return error.transient

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The sleep before each retry (attempts - 1 of them)."""
        draw = (rng or random).uniform
        for n in range(max(self.attempts - 1, 0)):
            yield draw(0.0, min(self.max_delay, self.initial_delay * self.multiplier ** n))


def retrying(call: Any, policy: RetryPolicy, what: str = "call",
             on_retry: Callable[[int, BaseException, float], None] | None = None,
             ) -> Generator[Any, Any, Any]:
    """Yield `call` until it succeeds, fails for good, or the policy runs out; `Sleep` between.

    A step of the client's core (see `client.ops`): the driver performs what is yielded, blocking
    or awaiting. Each retry is logged at DEBUG on the "client" logger with the error and the delay.
    """
    start = time.monotonic()
    delays = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return (yield call)
        except EmbeddingError as error:
            delay = _next_delay(policy, error, delays, start)
            if delay is None:
                if attempt > 1:
                    log.debug("%s: giving up after %d attempts: %s", what, attempt, error)
                raise
            log.debug("%s: attempt %d failed (%s: %s); retrying in %.3f s", what, attempt,
                      type(error).__name__, error, delay)
            if on_retry is not None:
                on_retry(attempt, error, delay)
            yield Sleep(delay)


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy,
                    on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """Run `fn` until it succeeds, fails for good, or the policy's attempts/deadline run out."""
    return drive(retrying(Call(lambda _: fn()), policy, getattr(fn, "__name__", "call"), on_retry),
                 lambda op: op.fn(None) if isinstance(op, Call) else time.sleep(op.seconds))


def _next_delay(policy: RetryPolicy, error: BaseException, delays: Iterator[float],
                start: float) -> float | None:
    if not policy.should_retry(error):
        return None
    delay = next(delays, None)
    if delay is None:
        return None
    if policy.deadline is not None and time.monotonic() + delay - start > policy.deadline:
        return None
    return delay
