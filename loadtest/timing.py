"""The one place a request is timed: a wrapper that fires Locust's `request` event around a call.

As in Locust's custom-client examples, users call their client through this wrapper, so each
user class only says what one request sends. The latency starts at `start` (open loop: the
scheduled arrival, so waiting for a free sender counts) or when the call starts; the listener in
`loadtest.listeners` records every event in the process's exact-latency histogram too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class TimedClient:
    """`timed.call(fn, *args)`: run `fn`, fire one `request` event (failures with their exception).

    `fn` returns the number of images it embedded (Locust's response_length: images/s comes
    from its sum); on an exception the event carries it and response_length 0.
    """

    def __init__(self, events: Any, request_type: str, name: str) -> None:
        self._fire = events.request.fire
        self.request_type = request_type
        self.name = name

    def call(self, fn: Callable[..., int], *args: Any, start: float | None = None) -> None:
        begin = time.perf_counter() if start is None else start
        images, exc = 0, None
        try:
            images = fn(*args)
        except Exception as error:  # every failure is counted, by type, in the report
            exc = error
        self._fire(request_type=self.request_type, name=self.name,
                   response_time=(time.perf_counter() - begin) * 1000.0,
                   response_length=images, exception=exc, context={})

    def fail(self, name: str, exc: Exception, response_time: float = 0.0) -> None:
        """A request that never got an answer (a user that could not start, an unfinished one)."""
        self._fire(request_type=self.request_type, name=name, response_time=response_time,
                   response_length=0, exception=exc, context={})
