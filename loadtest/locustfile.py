"""Locust users that call the embedding service the way applications do: through `client`.

Run headless through `python -m loadtest` (which adds a check of the target, server-side
statistics, a generator guard and SLO gates), or directly, alone or as a master with workers:
    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 30s --host 127.0.0.1:8001

One user kind runs (--loadtest-user / LOADTEST_USER) unless User classes are named; see
`loadtest/users.py`. Every option also reads a LOADTEST_* environment variable
(`loadtest/options.py`), which is how Kubernetes pods get them. Exact latency percentiles,
per-step rows and the SLO verdict go to --loadtest-extras-file at the end.
"""

from __future__ import annotations

# Before any channel exists: gRPC cooperating with gevent, its core held open for the process.
from loadtest import grpc_gevent

grpc_gevent.init()

from loadtest import listeners  # noqa: E402
from loadtest.shapes import LoadtestShape  # noqa: E402, F401
from loadtest.users import EmbeddingGrpcUser, EmbeddingHttpUser, RawTensorUser  # noqa: E402, F401

listeners.register()
