"""gRPC inside Locust's gevent process: cooperative, and initialised once for the process's life.

Two things go wrong with plain gRPC there:

- Its calls block gevent, so users run one at a time. Its gevent integration has to be on
  before any channel exists.
- gRPC's C core counts its holders (every channel and every completion queue). When the count
  reaches zero, it shuts its event engine down. In a load test that happens when the last user
  closes its client at the end of the run, while the process is still writing its reports.
  That shutdown can race with the poller still being kicked, and the process aborts
  (`ev_epoll1_linux.cc ... Check failed: wakeup_fd_->Wakeup().ok()`, SIGABRT, no report).
  One completion queue, held until the process exits, keeps the count above zero. The core then
  never shuts down mid-process; the process's own exit ends it, as for any gRPC program that
  is stopped.
"""

from __future__ import annotations

import ctypes

_held: object | None = None


def init() -> None:
    """Turn on gRPC's gevent integration and hold the core open; call before any channel exists."""
    global _held
    if _held is not None:
        return
    import grpc.experimental.gevent as grpc_gevent
    from grpc._cython import cygrpc

    grpc_gevent.init_gevent()
    _held = cygrpc.CompletionQueue()
    # One reference that is never released, so that interpreter finalization doesn't free it
    # (and run the core's shutdown) while gRPC's threads may still be finishing.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_held))
