"""`EmbeddingClient`: images in, embedding vectors out, over Triton's gRPC or HTTP API.

One client object serves one model. What it does for the caller:

- learns the model's contract (tensor names, input size and type, batch limit) from the server;
- preprocesses any supported input quickly (`client.preprocess`), in threads for batches;
- sends either the model's own float32 input or, with `transport="uint8"`, 8-bit pixels that a
  server-side ensemble turns into the same float input (a quarter of the bytes on the wire);
- retries transient failures with backoff and jitter, applies per-call timeouts, speaks TLS and
  sends auth headers;
- `embed_many` keeps up to `max_in_flight` requests at the server while later images are being
  decoded, keeps results in input order and reports each failed item instead of losing it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from client import pipeline, preprocess
from client.errors import (
    EmbeddingError,
    InferenceError,
    InvalidImageError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from client.model_info import ModelInfo, latest_version
from client.pipeline import Embeddings, EmbedResult, ItemFailure
from client.preprocess import MAX_PIXELS, ImageInput
from client.retry import RetryPolicy, acall_with_retry, call_with_retry
from client.stats import ModelStats, stats_from_response
from client.tracing import trace_headers
from client.transport import (
    DEFAULT_GRPC_URL,
    Answer,
    AsyncTransport,
    Connection,
    Protocol,
    SyncTransport,
    async_transport,
    sync_transport,
    translate,
)
from client.transport import default_url as _default_url

DEFAULT_URL = DEFAULT_GRPC_URL
DEFAULT_MODEL = "pnasnet_large"
#: The ensemble that takes UINT8 pixels is named after the model with this suffix (see export).
COMPACT_SUFFIX = "_uint8"
TRANSPORTS = ("float32", "uint8", "auto")
#: Seconds the uint8 path trusts its answer to "which version of the embedding model runs behind
#: the ensemble" before asking the server again (see `ClientOptions.embedding_step`).
STEP_VERSION_TTL = 5.0
_ALIASES = {"float": "float32", "fp32": "float32", "compact": "uint8"}

T = TypeVar("T")

__all__ = ["COMPACT_SUFFIX", "DEFAULT_MODEL", "DEFAULT_URL", "EmbedResult", "EmbeddingClient",
           "Embeddings", "ItemFailure", "compact_model_name", "default_url", "translate"]


def default_url(protocol: Protocol = "grpc") -> str:
    """`TRITON_GRPC_URL` (or `TRITON_HTTP_URL` for HTTP), else localhost on Triton's port."""
    return _default_url(protocol)


def compact_model_name(model: str) -> str:
    """Name of the uint8 ensemble that export writes beside `model`."""
    return f"{model}{COMPACT_SUFFIX}"


def normalize_transport(transport: str) -> str:
    value = _ALIASES.get(transport.lower(), transport.lower())
    if value not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    return value


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Unit-length rows (NaN rows of failed items stay NaN; zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _gevent_patched() -> bool:
    """True inside gevent-patched processes (Locust), where threads and event loops are greenlets."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("threading"))


class _LoopThread:
    """A private asyncio loop in a daemon thread, running `embed_many`'s pipeline for sync callers.

    The async transport lives on this loop (gRPC aio channels belong to the loop that made them).
    """

    def __init__(self, make_transport: Callable[[], AsyncTransport]) -> None:
        self._make = make_transport
        self._transport: AsyncTransport | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="embedding-client-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def transport(self) -> AsyncTransport:
        if self._transport is None:
            self._transport = self._make()
        return self._transport

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the pipeline too
            raise

    def close(self) -> None:
        if self._transport is not None:
            try:
                self.run(self._transport.close())
            except Exception:  # noqa: BLE001 - closing must not raise
                pass
            self._transport = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class ClientOptions:
    """What the sync and asyncio clients share: the connection and how images are embedded.

    Args:
        url: `host:port` (a scheme is accepted; `https://`/`grpcs://` turn TLS on). Default:
            `TRITON_GRPC_URL` / `TRITON_HTTP_URL` or localhost.
        model: the embedding model (its float32 input is the contract).
        protocol: "grpc" (default) or "http" (needs `tritonclient[http]`).
        transport: "float32" (default: the model's own input, works with any server), "uint8"
            (8-bit pixels to the `<model>_uint8` ensemble: a quarter of the bytes, same result) or
            "auto" (uint8 when the server has the ensemble, else float32).
        timeout: seconds per call (None: no limit); every method takes `timeout=` to override.
        retry: the `RetryPolicy` for transient failures (`RetryPolicy.none()` to disable).
        normalize: return unit-length (L2) vectors.
        center_crop: crop the central square before resizing (default: resize the whole image).
        fast_preprocessing: reduced-size JPEG decode (default); False for the reference path.
        max_pixels: refuse larger images (decompression bomb guard).
        batch_size, max_in_flight, workers: images per request (default: the model's
            max_batch_size), requests at the server at once in `embed_many`, preprocessing threads.
        ssl, root_certificates, private_key, certificate_chain, insecure: TLS (PEM file paths).
        headers: sent with every call, e.g. `{"authorization": "Bearer ..."}`.
        grpc_options: gRPC channel arguments, e.g. `[("grpc.lb_policy_name", "round_robin")]`
            with a `dns:///` URL of a headless Service (they are added to tritonclient's own).
    """

    def __init__(self, url: str | None = None, model: str = DEFAULT_MODEL, *,
                 protocol: Protocol = "grpc", transport: str = "float32",
                 compact_model: str | None = None, model_version: str = "",
                 timeout: float | None = 60.0, retry: RetryPolicy | None = None,
                 center_crop: bool = False, normalize: bool = False,
                 fast_preprocessing: bool = True, max_pixels: int = MAX_PIXELS,
                 batch_size: int | None = None, max_in_flight: int = 4, workers: int | None = None,
                 ssl: bool = False, root_certificates: str | None = None,
                 private_key: str | None = None, certificate_chain: str | None = None,
                 insecure: bool = False, headers: dict[str, str] | None = None,
                 grpc_options: Sequence[tuple[str, Any]] = ()) -> None:
        self.connection = Connection.make(
            url, protocol, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, insecure=insecure, headers=headers,
            grpc_options=tuple(grpc_options))
        self.url = self.connection.url
        self.protocol = self.connection.protocol
        self.model = model
        self.model_version = model_version
        self.transport = normalize_transport(transport)
        if self.transport == "uint8" and model_version:
            raise ValueError("the uint8 transport serves the model's latest version; "
                             "model_version pins a float32 model version (use transport='float32')")
        self.compact_model = compact_model or compact_model_name(model)
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.center_crop = center_crop
        self.normalize = normalize
        self.fast_preprocessing = fast_preprocessing
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.workers = workers or min(8, os.cpu_count() or 2)
        self._setup()

    def _setup(self) -> None:
        """Per-class state (transport, caches, pools), after the shared options are set."""

    def _labelled(self, answer: Answer, step: tuple[str, str] | None) -> Answer:
        """The answer named after the embedding model that made it (see `embedding_step`)."""
        return answer if step is None else Answer(answer.rows, step[0], step[1])

    def _step_cached(self, info: ModelInfo) -> tuple[tuple[str, str] | None, str | None]:
        """(step, None) when known without asking the server; (step, name) when it must be asked."""
        step = info.embedding_step(self.model)
        if step is None:
            return None, None
        name, pinned = step
        if pinned != "-1":
            return step, None
        cached = getattr(self, "_step_version", None)
        if cached is not None and cached[0] == name and \
                time.monotonic() - cached[2] < STEP_VERSION_TTL:
            return (name, cached[1]), None
        return None, name

    def _step_learned(self, name: str, metadata: dict[str, Any]) -> tuple[str, str]:
        version = latest_version(metadata)
        self._step_version = (name, version, time.monotonic())
        return name, version

    def wants_compact(self) -> bool:
        return self.transport in ("uint8", "auto") and not self.model_version

    def compact_choice(self, info: ModelInfo | None, error: ModelNotReadyError | None) -> ModelInfo | None:
        """The ensemble's contract when it takes uint8 pixels; None to fall back to float32 ("auto").

        With transport="uint8" a missing or mismatched ensemble is an error, not a silent fallback.
        """
        if error is not None:
            if self.transport == "uint8":
                raise ModelNotReadyError(
                    f"uint8 transport: {error}. Export writes {self.compact_model!r} beside "
                    f"{self.model!r}; the server must load both", status=error.status) from error
            return None
        if info is not None and info.input_datatype == "UINT8":
            return info
        if self.transport == "uint8":
            raise ModelNotReadyError(
                f"{self.compact_model!r} takes {info.input_datatype if info else '?'}, not UINT8 pixels")
        return None


class EmbeddingClient(ClientOptions):
    """Embeddings of one model on one Triton server (arguments: see `ClientOptions`)."""

    def _setup(self) -> None:
        self._client: SyncTransport | None = sync_transport(self.connection)
        self._info: ModelInfo | None = None
        self._float_info: ModelInfo | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._loop: _LoopThread | None = None

    def __repr__(self) -> str:
        return (f"EmbeddingClient({self.url!r}, {self.model!r}, protocol={self.protocol!r}, "
                f"transport={self.transport!r})")

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def _transport(self) -> SyncTransport:
        if self._client is None:
            raise ServerUnavailableError("the client is closed", transient=False)
        return self._client

    def _retrying(self, fn: Callable[[], T]) -> T:
        return call_with_retry(fn, self.retry)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedding-prep")
            return self._pool

    def _event_loop(self) -> _LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = _LoopThread(lambda: async_transport(self.connection))
            return self._loop

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    # -- server state -----------------------------------------------------------------------------
    def _check_timeout(self) -> float:
        return min(self.timeout or 10.0, 10.0)

    def is_live(self) -> bool:
        """True when the server answers its liveness check; never raises."""
        try:
            return self._transport.server_live(self._check_timeout())
        except EmbeddingError:
            return False

    def _models_to_check(self) -> list[tuple[str, str]]:
        if self._info is not None:
            version = self.model_version if self._info.name == self.model else ""
            return [(self._info.name, version)]
        if self.transport == "uint8":
            return [(self.compact_model, ""), (self.model, "")]
        return [(self.model, self.model_version)]

    def is_ready(self) -> bool:
        """True when the server is live and the model this client sends to is ready; never raises."""
        try:
            t = self._transport
            return t.server_live(self._check_timeout()) and all(
                t.model_ready(m, v, self._check_timeout()) for m, v in self._models_to_check())
        except EmbeddingError:
            return False

    def health(self) -> dict[str, Any]:
        """Liveness, readiness and per-model readiness as a dict, for probes and logs; never raises."""
        report: dict[str, Any] = {"url": self.url, "protocol": self.protocol, "live": False,
                                  "ready": False, "models": {}}
        t = self._transport
        try:
            report["live"] = t.server_live(self._check_timeout())
            report["ready"] = t.server_ready(self._check_timeout())
            for name in dict.fromkeys([self.model, self.compact_model]):
                try:
                    report["models"][name] = t.model_ready(name, "", self._check_timeout())
                except EmbeddingError:
                    report["models"][name] = False
        except EmbeddingError as exc:
            report["error"] = str(exc)
        return report

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Block until `is_ready()`; raise ServerUnavailableError after `timeout` seconds.

        For start-up ordering (a job that starts with the server, a test fixture): the server may
        refuse connections, then answer while models still load; both count as "not yet".
        """
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() >= deadline:
                raise ServerUnavailableError(
                    f"model {self.model!r} at {self.url} not ready after {timeout:.0f} s",
                    transient=False)
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))

    # -- the model's contract -----------------------------------------------------------------------
    def _fetch_info(self, model: str, version: str) -> ModelInfo:
        meta = self._retrying(lambda: self._transport.metadata(model, version, self.timeout))
        cfg = self._retrying(lambda: self._transport.config(model, version, self.timeout))
        return ModelInfo.from_server(meta, cfg)

    @property
    def info(self) -> ModelInfo:
        """Contract of the model requests go to (the ensemble for uint8), cached after first use."""
        if self._info is None:
            with self._lock:
                if self._info is None:
                    self._info = self._resolve()
        return self._info

    def _resolve(self) -> ModelInfo:
        if self.wants_compact():
            info, error = None, None
            try:
                info = self._fetch_info(self.compact_model, "")
            except ModelNotReadyError as exc:
                error = exc
            chosen = self.compact_choice(info, error)
            if chosen is not None:
                return chosen
        return self._fetch_info(self.model, self.model_version)

    @property
    def transport_in_use(self) -> str:
        """"float32" or "uint8": what requests actually carry (resolves "auto")."""
        return "uint8" if self.info.input_datatype == "UINT8" else "float32"

    @property
    def float_info(self) -> ModelInfo:
        """Contract of the float32 model itself (for `embed_arrays` with float input)."""
        if self.info.input_datatype == "FP32":
            return self.info
        if self._float_info is None:
            self._float_info = self._fetch_info(self.model, self.model_version)
        return self._float_info

    def _version_for(self, info: ModelInfo) -> str:
        return self.model_version if info.name == self.model else ""

    def embedding_step(self, info: ModelInfo | None = None) -> tuple[str, str] | None:
        """(name, version) of the embedding model behind an ensemble; None for a plain model.

        A response of the uint8 ensemble names the ensemble ("pnasnet_large_uint8", version 1), not
        the model that computed the vectors. Triton does not report the composing model's version
        per request, so the client reads it from the server: the step's pinned version when the
        ensemble pins one, else the latest version the server lists as available (what an
        ensemble step with version -1 runs). That answer is cached for `STEP_VERSION_TTL`
        seconds. Limit: while a new version replaces the old one, rows answered within that
        window (and requests in flight during the swap) can be attributed to the other version;
        the float32 path has no such window (each response names its version).
        """
        step, ask = self._step_cached(info or self.info)
        if ask is None:
            return step
        meta = self._retrying(lambda: self._transport.metadata(ask, "", self.timeout))
        return self._step_learned(ask, meta)

    # -- preprocessing ----------------------------------------------------------------------------
    def pixels(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> uint8 [H, W, 3] at the model's size (what the uint8 transport sends)."""
        try:
            return preprocess.to_pixels(item, self.info.size, self.center_crop, self.max_pixels,
                                        self.fast_preprocessing)
        except InvalidImageError as exc:
            raise exc.at(index, preprocess.describe(item)) from exc.__cause__

    def preprocess(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> float32 [H, W, 3] in [0, 1] at the model's size (the model's own input)."""
        return preprocess.to_model_input(self.pixels(item, index))

    def _prepare(self, item: ImageInput) -> np.ndarray:
        """One input -> what requests carry (float32 or uint8), without locating errors."""
        info = self.info
        pixels = preprocess.to_pixels(item, info.size, self.center_crop, self.max_pixels,
                                      self.fast_preprocessing)
        return preprocess.to_datatype(pixels, info.input_datatype)

    def _prepare_all(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Preprocess a small batch (in threads when it helps); the first bad item raises."""

        def safe(item: ImageInput) -> np.ndarray | BaseException:
            try:
                return self._prepare(item)
            except Exception as exc:  # noqa: BLE001 - reported below with the item's index
                return exc

        if len(images) > 1 and not _gevent_patched():
            prepared = list(self._executor().map(safe, images))
        else:
            prepared = [safe(item) for item in images]
        for index, value in enumerate(prepared):
            if isinstance(value, InvalidImageError):
                raise value.at(index, preprocess.describe(images[index])) from value.__cause__
            if isinstance(value, BaseException):
                raise InvalidImageError(f"preprocessing failed ({type(value).__name__}: {value})",
                                        index, preprocess.describe(images[index])) from value
        return np.stack(prepared)  # type: ignore[arg-type]

    # -- requests ---------------------------------------------------------------------------------
    def _send(self, batch: np.ndarray, info: ModelInfo, timeout: float | None,
              headers: dict[str, str] | None = None) -> Embeddings:
        """Blocking: split into requests of at most max_batch_size, each retried on its own."""
        version = self._version_for(info)
        embedding = self.embedding_step(info)
        step = max(1, min(self.batch_size or info.max_batch_size, info.max_batch_size))
        answers = []
        for start in range(0, len(batch), step):
            part = batch[start:start + step]
            answers.append(self._labelled(self._retrying(lambda part=part: self._transport.infer(
                info.name, version, info.input_name, info.input_datatype, part, info.output_name,
                timeout, headers)), embedding))
        return _joined(answers, info)

    def _finish(self, rows: np.ndarray) -> np.ndarray:
        return l2_normalize(rows) if self.normalize else rows

    # -- embeddings -------------------------------------------------------------------------------
    def embed(self, image: ImageInput, *, timeout: float | None = None,
              traceparent: str | None = None) -> np.ndarray:
        """One image -> float32 vector of the model's output size.

        `traceparent` (W3C trace context, see `client.tracing`) goes with every request of the
        call, so Triton's OpenTelemetry spans join the caller's trace (the same on every method).
        """
        return self.embed_batch([image], timeout=timeout, traceparent=traceparent)[0]

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

        For the uint8 ensemble the name and version are the embedding model's (the ensemble's
        composing model), not the ensemble's; see `embedding_step` for how exact that is.
        """
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__len__"):
            raise TypeError("embed_batch takes a sequence of images; use embed() for one image")
        headers = trace_headers(traceparent)
        info = self.info
        if len(images) == 0:
            step = self.embedding_step(info)
            return Embeddings(np.zeros((0, info.output_dim), np.float32),
                              step[0] if step else info.name, ())
        step = min(self.batch_size or info.max_batch_size, info.max_batch_size)
        if len(images) <= step or _gevent_patched():
            sent = self._send(self._prepare_all(images), info, self._timeout(timeout), headers)
            return Embeddings(self._finish(sent.vectors), sent.model, sent.versions)
        result = self._many(images, timeout=timeout, progress=progress, fail_fast=True,
                            headers=headers)
        result.raise_for_failures()
        return Embeddings(result.embeddings, result.model, tuple(result.versions))

    def embed_many(self, images: Iterable[ImageInput], *, batch_size: int | None = None,
                   max_in_flight: int | None = None, timeout: float | None = None,
                   progress: bool = False, traceparent: str | None = None) -> EmbedResult:
        """Many images, pipelined; never raises for a single item.

        Returns an `EmbedResult`: `embeddings[i]` belongs to input i, `failures` lists each input
        without an embedding (index, input, typed error), `ok` is the mask of embedded rows.
        Errors that concern the whole call (server unreachable when the model contract is first
        fetched, a closed client) still raise.
        """
        headers = trace_headers(traceparent)
        return self._many(list(images) if not isinstance(images, Sequence) else images,
                          batch_size=batch_size, max_in_flight=max_in_flight, timeout=timeout,
                          progress=progress, headers=headers)

    def _many(self, items: Sequence[ImageInput], *, batch_size: int | None = None,
              max_in_flight: int | None = None, timeout: float | None = None,
              progress: bool = False, fail_fast: bool = False,
              headers: dict[str, str] | None = None) -> EmbedResult:
        info = self.info
        size = max(1, min(batch_size or self.batch_size or info.max_batch_size, info.max_batch_size))
        in_flight = max(1, max_in_flight or self.max_in_flight)
        call_timeout = self._timeout(timeout)
        bar = _progress_bar(len(items), progress)
        try:
            if _gevent_patched():
                result = self._many_blocking(items, info, size, call_timeout, bar, fail_fast,
                                             headers)
            else:
                result = self._event_loop().run(pipeline.run(
                    items, prepare=self._prepare,
                    send=self._async_sender(info, call_timeout, headers, self.embedding_step(info)),
                    output_dim=info.output_dim, batch_size=size, max_in_flight=in_flight,
                    executor=self._executor(), on_progress=bar.update if bar else None,
                    fail_fast=fail_fast))
        finally:
            if bar is not None:
                bar.close()
        if self.normalize:
            result.embeddings = l2_normalize(result.embeddings)
        return result

    def _async_sender(self, info: ModelInfo, timeout: float | None,
                      headers: dict[str, str] | None, embedding: tuple[str, str] | None,
                      ) -> Callable[[np.ndarray], Coroutine[Any, Any, Answer]]:
        loop = self._event_loop()
        version = self._version_for(info)

        async def send(batch: np.ndarray) -> Answer:
            transport = await loop.transport()
            return self._labelled(await acall_with_retry(lambda: transport.infer(
                info.name, version, info.input_name, info.input_datatype, batch, info.output_name,
                timeout, headers), self.retry), embedding)

        return send

    def _many_blocking(self, items: Sequence[ImageInput], info: ModelInfo, size: int,
                       timeout: float | None, bar: Any, fail_fast: bool,
                       headers: dict[str, str] | None) -> EmbedResult:
        """The pipeline's contract without threads or event loops (gevent-patched processes)."""
        out = np.full((len(items), info.output_dim), np.nan, dtype=np.float32)
        versions = [""] * len(items)
        models: dict[str, None] = {}
        failures: list[ItemFailure] = []
        for start in range(0, len(items), size):
            if fail_fast and failures:
                skipped = InferenceError("not attempted: an earlier item failed")
                failures.extend(ItemFailure(i, preprocess.describe(items[i]), skipped)
                                for i in range(start, len(items)))
                break
            good, arrays = [], []
            for i in range(start, min(start + size, len(items))):
                try:
                    arrays.append(self._prepare(items[i]))
                    good.append(i)
                except InvalidImageError as exc:
                    failures.append(ItemFailure(i, preprocess.describe(items[i]),
                                                exc.at(i, preprocess.describe(items[i]))))
            if arrays:
                try:
                    sent = self._send(np.stack(arrays), info, timeout, headers)
                except EmbeddingError as exc:
                    failures.extend(ItemFailure(i, preprocess.describe(items[i]), exc) for i in good)
                else:
                    out[good] = sent.vectors
                    models.setdefault(sent.model, None)
                    for i, v in zip(good, sent.versions, strict=True):
                        versions[i] = v
            if bar is not None:
                bar.update(min(start + size, len(items)) - start)
        return EmbedResult(out, failures, versions, ",".join(models))

    def embed_arrays(self, batch: np.ndarray, *, timeout: float | None = None,
                     traceparent: str | None = None) -> np.ndarray:
        """Already preprocessed images [n, H, W, 3] -> [n, D].

        float32 in [0, 1] goes to the float model as is; uint8 pixels go through this client's
        transport (the ensemble for uint8, converted to float here for float32).
        """
        headers = trace_headers(traceparent)
        batch = np.asarray(batch)
        info = self.info if batch.dtype == np.uint8 else self.float_info
        if batch.ndim != 4 or tuple(batch.shape[1:]) != info.input_shape:
            raise InvalidImageError(f"batch must be [n, {', '.join(map(str, info.input_shape))}], "
                                    f"got {list(batch.shape)}")
        if batch.dtype == np.uint8:
            batch = preprocess.to_datatype(batch, info.input_datatype)
        batch = np.ascontiguousarray(batch, dtype=np.uint8 if info.input_datatype == "UINT8"
                                     else np.float32)
        if len(batch) == 0:
            return np.zeros((0, info.output_dim), np.float32)
        return self._finish(self._send(batch, info, self._timeout(timeout), headers).vectors)

    # -- statistics -------------------------------------------------------------------------------
    def statistics(self, model: str | None = None) -> ModelStats:
        """Triton's cumulative statistics of `model` (default: the model requests go to)."""
        name = model or self.info.name
        response = self._retrying(lambda: self._transport.statistics(name, self.timeout))
        return stats_from_response(response)

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release connections, the preprocessing threads and the pipeline's event loop."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _joined(answers: Sequence[Answer], info: ModelInfo) -> Embeddings:
    """The answers of one call's requests as one `Embeddings` (versions per row)."""
    if not answers:
        return Embeddings(np.zeros((0, info.output_dim), np.float32), info.name, ())
    versions = tuple(a.version for a in answers for _ in range(len(a.rows)))
    return Embeddings(np.concatenate([a.rows for a in answers], axis=0), answers[0].model,
                      versions)


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="embedding", smoothing=0.1)
