"""Locust users that call the embedding service the way applications do: through `client`.

Run headless through `python -m loadtest` (which also prints a summary), or directly:
    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 30s --host 127.0.0.1:8001

Parameters come from the environment, so distributed workers read the same ones:
    LOADTEST_MODEL (pnasnet_large), LOADTEST_IMAGES (a folder; default: the shipped samples),
    LOADTEST_BATCH (images per request, default 1).
"""

from __future__ import annotations

# gRPC's own threads block gevent unless its gevent integration is on before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from locust import User, between, events, task  # noqa: E402

from client import EmbeddingClient, EmbeddingError  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def load_corpus(folder: str | None) -> list[bytes]:
    """Encoded images, read once per process so the disk is not part of the measurement."""
    if folder:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        from samples import sample_paths

        paths = sample_paths()
    if not paths:
        raise SystemExit(f"no images found in {folder}")
    return [p.read_bytes() for p in paths]


CORPUS: list[bytes] = []


@events.init.add_listener
def _load(environment, **_kwargs) -> None:  # noqa: ANN001 - Locust's signature
    CORPUS[:] = load_corpus(os.environ.get("LOADTEST_IMAGES"))


class EmbeddingGrpcUser(User):
    """One application thread calling `embed_batch` in a loop over gRPC."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.batch = int(os.environ.get("LOADTEST_BATCH", "1"))
        self.model = os.environ.get("LOADTEST_MODEL", "pnasnet_large")
        self.client = EmbeddingClient(self.host or None, self.model, timeout=120.0)
        self.client.info  # noqa: B018 - fetch the model contract once, outside the measurement

    def on_stop(self) -> None:
        # Close and drop the client, or the process can hang at exit in the gRPC client's __del__.
        self.client.close()
        self.client = None

    @task
    def embed(self) -> None:
        images = random.choices(CORPUS, k=self.batch)
        start = time.perf_counter()
        exc: Exception | None = None
        try:
            self.client.embed_batch(images)
        except EmbeddingError as error:
            exc = error
        self.environment.events.request.fire(
            request_type="grpc", name=f"embed_batch[{self.batch}]",
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=self.batch, exception=exc, context={})
