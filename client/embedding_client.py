"""`EmbeddingClient`: images in, embedding vectors out, over Triton's gRPC or HTTP API, blocking.

One client object serves one model; it is safe to share between threads. What it does (the logic
lives in `client.core`, shared with `AsyncEmbeddingClient`; this module only waits):

- learns the model's contract (tensor names, input size and type, batch limit) from the server;
- preprocesses any supported input quickly (`client.preprocess`), in threads for batches;
- sends either the model's own float32 input or, with `payload="uint8"`, 8-bit pixels that the
  server-side uint8 model turns into the same float input (a quarter of the bytes on the wire);
- retries transient failures with backoff and jitter, applies per-call timeouts, speaks TLS and
  sends auth headers;
- `embed_many` keeps up to `max_in_flight` requests at the server (one thread each) while later
  images are being decoded, keeps results in input order and reports each failed item.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from client.core import STEP_VERSION_TTL, ClientCore, _deprecated, l2_normalize
from client.model_info import ModelInfo
from client.ops import Call, Pipeline, Prepare, Sleep, Steps, drive
from client.pipeline import Embeddings, EmbedResult, ItemFailure, Plan
from client.preprocess import ImageInput, to_model_input
from client.settings import (
    DEFAULT_GRPC_URL,
    DEFAULT_MODEL,
    PAYLOADS,
    UINT8_SUFFIX,
    check_payload,
    uint8_model_name,
)
from client.stats import ModelStats
from client.transport import Transport, default_url, open_transport, translate

DEFAULT_URL = DEFAULT_GRPC_URL
#: Old names of `client.settings.UINT8_SUFFIX` and `client.settings.PAYLOADS`.
COMPACT_SUFFIX = UINT8_SUFFIX
TRANSPORTS = PAYLOADS

__all__ = ["COMPACT_SUFFIX", "DEFAULT_MODEL", "DEFAULT_URL", "STEP_VERSION_TTL", "TRANSPORTS",
           "EmbedResult", "EmbeddingClient", "Embeddings", "ItemFailure", "compact_model_name",
           "default_url", "l2_normalize", "normalize_transport", "translate", "uint8_model_name"]


def compact_model_name(model: str) -> str:
    """Old name of `client.settings.uint8_model_name` (still works)."""
    return uint8_model_name(model)


def normalize_transport(value: str) -> str:
    """Old name of `client.settings.check_payload`."""
    return check_payload(value, "transport")


def _gevent_patched() -> bool:
    """True inside gevent-patched processes (Locust), where threads are greenlets."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("threading"))


class EmbeddingClient(ClientCore):
    """Embeddings of one model on one Triton server (arguments: see `client.core.ClientCore`)."""

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _open_transport(self) -> Transport:
        with self._lock:
            if self._io is None:
                self._io = open_transport(self.connection)
            return self._io

    # -- the driver: where this client waits ----------------------------------------------------
    def _run(self, steps: Steps[Any]) -> Any:
        return drive(steps, self._perform)

    def _perform(self, step: Any) -> Any:
        if isinstance(step, Call):
            return step.fn(self._opened())
        if isinstance(step, Prepare):
            return self._map(step.fn, step.items)
        if isinstance(step, Pipeline):
            return self._run_plan(step.plan)
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        raise TypeError(f"unknown step {step!r}")

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """`fn` over items in the preprocessing threads; exceptions are returned, not raised."""

        def safe(item: Any) -> Any:
            try:
                return fn(item)
            except Exception as exc:  # noqa: BLE001 - reported by the core with the item's index
                return exc

        if len(items) < 2 or _gevent_patched():
            return [safe(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedding-prep")
            pool = self._pool
        return list(pool.map(safe, items))

    def _run_plan(self, plan: Plan) -> EmbedResult:
        """Up to `max_in_flight` chunks at once, one thread each (one after another under gevent)."""
        chunks = plan.chunks()
        if plan.max_in_flight == 1 or _gevent_patched():
            for chunk in chunks:
                self._run(chunk)
            return plan.result()
        slots = threading.Semaphore(plan.max_in_flight)
        pool = ThreadPoolExecutor(plan.max_in_flight, thread_name_prefix="embedding-request")
        futures: list[Future] = []
        try:
            while slots.acquire() and (chunk := next(chunks, None)) is not None:
                futures.append(pool.submit(self._run, chunk))
                futures[-1].add_done_callback(lambda _done: slots.release())
            for future in futures:
                future.result()
        finally:  # Ctrl-C: requests not yet started are dropped, running ones end by themselves
            pool.shutdown(wait=False, cancel_futures=True)
        return plan.result()

    # -- server state -----------------------------------------------------------------------------
    def is_live(self) -> bool:
        """True when the server answers its liveness check; never raises (but when closed)."""
        return self._run(self._is_live())

    def is_ready(self) -> bool:
        """True when the server is live and the model requests go to is ready; never raises (but
        when closed)."""
        return self._run(self._is_ready())

    def health(self) -> dict[str, Any]:
        """Liveness, readiness and per-model readiness as a dict, for probes and logs."""
        return self._run(self._health())

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Block until `is_ready()`; raise ServerUnavailableError after `timeout` seconds.

        For start-up ordering (a job that starts with the server, a test fixture): the server may
        refuse connections, then answer while models still load; both count as "not yet".
        """
        self._run(self._wait_until_ready(timeout, interval))

    def statistics(self, model: str | None = None) -> ModelStats:
        """Triton's cumulative statistics of `model` (default: the model requests go to)."""
        return self._run(self._statistics(model))

    # -- the model's contract ---------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        """Contract of the model requests go to (the uint8 model for uint8), cached."""
        return self._info or self._run(self._get_info())

    @property
    def float_info(self) -> ModelInfo:
        """Contract of the float32 model itself (for `embed_arrays` with float input)."""
        return self._run(self._get_float_info())

    @property
    def payload_in_use(self) -> str:
        """"float32" or "uint8": what requests actually carry (resolves "auto")."""
        return "uint8" if self.info.input_datatype == "UINT8" else "float32"

    @property
    def transport_in_use(self) -> str:
        """Deprecated: see `payload_in_use`."""
        _deprecated("transport_in_use", "payload_in_use")
        return self.payload_in_use

    def embedding_step(self, info: ModelInfo | None = None) -> tuple[str, str] | None:
        """(name, version) of the embedding model behind the uint8 model; None for float32.

        See `ClientCore._embedding_step` for how it is learned and its limit during rollouts.
        """
        return self._run(self._embedding_step(info or self.info))

    # -- preprocessing ----------------------------------------------------------------------------
    def pixels(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> uint8 [H, W, 3] at the model's size (what the uint8 payload sends)."""
        return self._run(self._pixels(item, index))

    def preprocess(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> float32 [H, W, 3] in [0, 1] at the model's size (the model's own input)."""
        return to_model_input(self.pixels(item, index))

    # -- embeddings -------------------------------------------------------------------------------
    def embed(self, image: ImageInput, *, timeout: float | None = None,
              traceparent: str | None = None) -> np.ndarray:
        """One image -> float32 vector of the model's output size.

        `traceparent` (W3C trace context, see `client.tracing`) goes with every request of the
        call, so Triton's OpenTelemetry spans join the caller's trace (the same on every method).
        """
        return self._run(self._infer_batch([image], timeout, False, traceparent, True)).vectors[0]

    def embed_batch(self, images: Sequence[ImageInput], *, timeout: float | None = None,
                    progress: bool = False, traceparent: str | None = None) -> np.ndarray:
        """Images -> [n, D], row i for images[i]; any failure raises (the lowest index's error).

        A batch up to one request is preprocessed (in threads), then sent; a larger one goes
        through `embed_many`'s pipeline and stops starting new requests after a failure. Use
        `embed_many` to get the successful rows and the list of failures instead of an error.
        """
        return self.infer_batch(images, timeout=timeout, progress=progress,
                                traceparent=traceparent).vectors

    def infer_batch(self, images: Sequence[ImageInput], *, timeout: float | None = None,
                    progress: bool = False, traceparent: str | None = None) -> Embeddings:
        """Like `embed_batch`, with the name and version of the embedding model that answered.

        For the uint8 model the name and version are those of the embedding model behind it (the
        ensemble's composing model), not the ensemble's; see `embedding_step`.
        """
        return self._run(self._infer_batch(images, timeout, progress, traceparent))

    def embed_many(self, images: Iterable[ImageInput], *, batch_size: int | None = None,
                   max_in_flight: int | None = None, timeout: float | None = None,
                   progress: bool = False, traceparent: str | None = None) -> EmbedResult:
        """Many images, pipelined; never raises for a single item.

        Returns an `EmbedResult`: `embeddings[i]` belongs to input i, `failures` lists each input
        without an embedding (index, input, typed error), `ok` is the mask of embedded rows,
        `model` and `versions[i]` say which model version made each row. Errors that concern the
        whole call (server unreachable when the model contract is first fetched, a closed
        client) still raise.
        """
        return self._run(self._embed_many(images, batch_size, max_in_flight, timeout, progress,
                                          traceparent))

    def embed_arrays(self, batch: np.ndarray, *, timeout: float | None = None,
                     traceparent: str | None = None) -> np.ndarray:
        """Already preprocessed images [n, H, W, 3] -> [n, D].

        float32 in [0, 1] goes to the float32 model as is; uint8 pixels go this client's way (to
        the uint8 model, or converted to float32 here).
        """
        return self._run(self._embed_arrays(batch, timeout, traceparent)).vectors

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the connection and the preprocessing threads; later calls raise
        ClientClosedError."""
        self._closed = True
        with self._lock:
            pool, self._pool = self._pool, None
            io, self._io = self._io, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if io is not None:
            io.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
