"""Everything `EmbeddingClient` and `AsyncEmbeddingClient` do that is not waiting, written once.

`ClientCore` holds the options and the logic: which model requests go to (float32 model or uint8
model), preparing items, cutting batches into requests, retries, failures by item, the version
that answered, normalisation, progress, health. Its methods that talk to the server are generators
of steps (`client.ops`); the two clients run them with their own driver, blocking (threads) or
asyncio (the event loop), and are otherwise thin. So a feature, a message or a fix lands in both.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from client import preprocess
from client.errors import (
    ClientClosedError,
    EmbeddingError,
    InvalidImageError,
    ModelContractError,
    ModelNotReadyError,
    ServerUnavailableError,
    VersionChangedError,
)
from client.model_info import ModelInfo, latest_version
from client.ops import Call, Pipeline, Prepare, Sleep, Steps
from client.pipeline import Embeddings, EmbedResult, Plan
from client.preprocess import MAX_PIXELS, ImageInput
from client.retry import RetryPolicy, retrying
from client.settings import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT,
    check_payload,
    env_model,
    env_payload,
    env_protocol,
    uint8_model_name,
)
from client.stats import ModelStats, stats_from_response
from client.tracing import trace_headers
from client.transport import Answer, Connection, InferRequest, Transport, check_available

log = logging.getLogger("client")

#: Seconds the uint8 path trusts its answer to "which version of the embedding model runs behind
#: the uint8 model" before asking the server again (see `ClientCore._embedding_step`).
STEP_VERSION_TTL = 5.0
#: With `exact_versions`, how often a request is sent again when the version changed under it.
EXACT_VERSION_ATTEMPTS = 3
#: Readiness and liveness checks never wait longer than this, whatever the call timeout.
CHECK_TIMEOUT = 10.0


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Unit-length rows (NaN rows of failed items stay NaN; zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


class ClientCore:
    """The options and logic of a client of one embedding model on one Triton server.

    Args:
        url: `host:port` (a scheme is accepted; `https://`/`grpcs://` turn TLS on). Default:
            `TRITON_GRPC_URL` / `TRITON_HTTP_URL`, else localhost.
        model: the embedding model (its float32 input is the contract). Default: `TRITON_MODEL`,
            else "pnasnet_large".
        protocol: "grpc" or "http" (needs `tritonclient[http]`). Default: `TRITON_PROTOCOL`, else
            "grpc".
        payload: what requests carry: "float32" (the model's own input), "uint8" (8-bit pixels to
            the `<model>_uint8` model: a quarter of the bytes, the same embeddings) or "auto"
            (uint8 when the server has the uint8 model, else float32). Default: `TRITON_PAYLOAD`,
            else "auto". (Old name: `transport="..."`, which warns.)
        transport: a `client.transport.Transport` to use instead of opening one for `url`, e.g.
            `client.testing.FakeTransport()` in tests.
        uint8_model: name of the uint8 model (default `<model>_uint8`).
        model_version: pin a version of the float32 model ("" = the server's choice).
        exact_versions: uint8 payload: know exactly which version of the embedding model made
            each row, even while a new version replaces the old one: a version check follows
            every request (one more metadata call), and a request that straddles a version change
            is sent again. Off, the version behind the uint8 model is cached for
            `STEP_VERSION_TTL` seconds and rows answered in that window after a rollout can carry
            the old number. float32 answers always name their own version.
        timeout: seconds per call (None: no limit); every method takes `timeout=` to override.
        retry: the `RetryPolicy` for transient failures (`RetryPolicy.none()` to disable).
        normalize: return unit-length (L2) vectors.
        center_crop: crop the central square before resizing (default: resize the whole image).
        fast_preprocessing: reduced-size JPEG decode (default); False for the reference path.
        max_pixels: refuse larger images, as a pixel count (decompression bomb guard).
        batch_size, max_in_flight, workers: images per request (default: the model's
            max_batch_size), requests at the server at once in `embed_many`, preprocessing threads.
        ssl, root_certificates, private_key, certificate_chain, insecure: TLS (PEM file paths).
        headers: sent with every call, e.g. `{"authorization": "Bearer ..."}`.
        grpc_options: gRPC channel arguments, e.g. `[("grpc.lb_policy_name", "round_robin")]`
            with a `dns:///` URL of a headless Service (they are added to tritonclient's own).
    """

    _asyncio = False  # what the client waits with: threads, or an event loop

    def __init__(self, url: str | None = None, model: str | None = None, *,
                 protocol: str | None = None, payload: str | None = None,
                 transport: Transport | str | None = None, uint8_model: str | None = None,
                 model_version: str = "", exact_versions: bool = False,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, center_crop: bool = False,
                 normalize: bool = False, fast_preprocessing: bool = True,
                 max_pixels: int = MAX_PIXELS, batch_size: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, workers: int | None = None,
                 ssl: bool = False, root_certificates: str | None = None,
                 private_key: str | None = None, certificate_chain: str | None = None,
                 insecure: bool = False, headers: dict[str, str] | None = None,
                 grpc_options: Sequence[tuple[str, Any]] = (),
                 compact_model: str | None = None) -> None:
        if isinstance(transport, str):  # the old name of `payload`
            _deprecated("transport='...' (what requests carry)", f"payload={transport!r}")
            payload = payload or transport
            transport = None
        if compact_model is not None:
            _deprecated("compact_model=", "uint8_model=")
            uint8_model = uint8_model or compact_model
        if transport is not None and transport.is_async != self._asyncio:
            raise TypeError(f"{type(self).__name__} needs {'an asyncio' if self._asyncio else 'a blocking'} "
                            f"transport, got {type(transport).__name__}")
        self._io: Transport | None = transport
        self.connection = transport.conn if transport is not None else Connection.make(
            url, protocol or env_protocol(), ssl=ssl, root_certificates=root_certificates,
            private_key=private_key, certificate_chain=certificate_chain, insecure=insecure,
            headers=headers, grpc_options=tuple(grpc_options))
        self.url = self.connection.url
        self.protocol = self.connection.protocol
        if transport is None:
            check_available(self.protocol)  # the transport itself opens on first use
        self.model = model or env_model()
        self.model_version = model_version
        self.exact_versions = exact_versions
        self.payload = check_payload(payload) if payload else env_payload()
        if self.payload == "uint8" and model_version:
            raise ValueError("the uint8 payload serves the model's latest version; model_version "
                             "pins a float32 model version (use payload='float32')")
        self.uint8_model = uint8_model or uint8_model_name(self.model)
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.center_crop = center_crop
        self.normalize = normalize
        self.fast_preprocessing = fast_preprocessing
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.max_in_flight = max(1, max_in_flight)
        self.workers = workers or min(8, os.cpu_count() or 2)
        self._closed = False
        self._info: ModelInfo | None = None
        self._float_info: ModelInfo | None = None
        self._step_version: tuple[str, str, float] | None = None
        self._setup()

    def _setup(self) -> None:
        """State of the blocking or asyncio client (pools, locks), after the options are set."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.url!r}, {self.model!r}, protocol={self.protocol!r}, "
                f"payload={self.payload!r})")

    # -- old names --------------------------------------------------------------------------------
    @property
    def transport(self) -> str:
        """Deprecated: the payload option (see `payload`)."""
        _deprecated("client.transport (the payload option)", "client.payload")
        return self.payload

    @property
    def compact_model(self) -> str:
        """Deprecated: see `uint8_model`."""
        _deprecated("client.compact_model", "client.uint8_model")
        return self.uint8_model

    # -- plumbing ---------------------------------------------------------------------------------
    def _opened(self) -> Transport:
        """The transport, opened on first use; ClientClosedError after `close()`."""
        if self._closed:
            raise ClientClosedError(type(self).__name__)
        if self._io is None:
            self._io = self._open_transport()
        return self._io

    def _open_transport(self) -> Transport:
        raise NotImplementedError

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _check_timeout(self) -> float:
        return min(self.timeout or CHECK_TIMEOUT, CHECK_TIMEOUT)

    def _call(self, fn: Callable[[Transport], Any], what: str) -> Steps[Any]:
        """One server call, retried by the policy."""
        return retrying(Call(fn), self.retry, what)

    # -- server state -----------------------------------------------------------------------------
    def _is_live(self) -> Steps[bool]:
        try:
            return bool((yield Call(lambda t: t.live(self._check_timeout()))))
        except ClientClosedError:
            raise
        except EmbeddingError:
            return False

    def _ready_targets(self) -> list[tuple[str, str]]:
        if self._info is not None:
            return [(self._info.name, self._version_for(self._info))]
        if self.payload == "uint8":
            return [(self.uint8_model, ""), (self.model, "")]
        return [(self.model, self.model_version)]

    def _is_ready(self) -> Steps[bool]:
        try:
            if not (yield Call(lambda t: t.live(self._check_timeout()))):
                return False
            for name, version in self._ready_targets():
                if not (yield Call(lambda t, n=name, v=version: t.ready(n, v, self._check_timeout()))):
                    return False
            return True
        except ClientClosedError:
            raise
        except EmbeddingError:
            return False

    def _health(self) -> Steps[dict[str, Any]]:
        report: dict[str, Any] = {"url": self.url, "protocol": self.protocol, "live": False,
                                  "ready": False, "models": {}}
        timeout = self._check_timeout()
        try:
            report["live"] = yield Call(lambda t: t.live(timeout))
            report["ready"] = yield Call(lambda t: t.ready(None, "", timeout))
            for name in dict.fromkeys([self.model, self.uint8_model]):
                try:
                    report["models"][name] = yield Call(lambda t, n=name: t.ready(n, "", timeout))
                except EmbeddingError:
                    report["models"][name] = False
        except ClientClosedError:
            raise
        except EmbeddingError as exc:
            report["error"] = str(exc)
        return report

    def _wait_until_ready(self, timeout: float, interval: float) -> Steps[None]:
        deadline = time.monotonic() + timeout
        while not (yield from self._is_ready()):
            if time.monotonic() >= deadline:
                raise ServerUnavailableError(
                    f"model {self.model!r} at {self.url} not ready after {timeout:g} s",
                    transient=False)
            yield Sleep(min(interval, max(deadline - time.monotonic(), 0.0)))

    def _statistics(self, model: str | None) -> Steps[ModelStats]:
        name = model or (yield from self._get_info()).name
        response = yield from self._call(lambda t: t.statistics(name, self.timeout),
                                         f"statistics of {name}")
        return stats_from_response(response)

    # -- the model's contract ---------------------------------------------------------------------
    def _fetch_info(self, model: str, version: str) -> Steps[ModelInfo]:
        meta = yield from self._call(lambda t: t.metadata(model, version, self.timeout),
                                     f"metadata of {model}")
        cfg = yield from self._call(lambda t: t.config(model, version, self.timeout),
                                    f"config of {model}")
        return ModelInfo.from_server(meta, cfg)

    def _get_info(self) -> Steps[ModelInfo]:
        """Contract of the model requests go to (the uint8 model for uint8), cached."""
        if self._info is None:
            self._info = yield from self._resolve()
        return self._info

    def _resolve(self) -> Steps[ModelInfo]:
        if self.payload in ("uint8", "auto") and not self.model_version:
            try:
                info = yield from self._fetch_info(self.uint8_model, "")
            except (ModelNotReadyError, ModelContractError) as exc:
                if self.payload == "uint8":
                    raise type(exc)(
                        f"uint8 payload: {exc}. Export writes {self.uint8_model!r} beside "
                        f"{self.model!r}; the server must load both (or use payload='float32')",
                        status=exc.status, transient=exc.transient) from exc
                log.debug("no usable uint8 model %r (%s); sending float32", self.uint8_model, exc)
            else:
                if info.input_datatype == "UINT8":
                    return info
                if self.payload == "uint8":
                    raise ModelContractError(
                        f"{self.uint8_model!r} takes {info.input_datatype}, not UINT8 pixels: it "
                        f"is not the uint8 model export writes (set uint8_model= or use "
                        f"payload='float32')")
        return (yield from self._fetch_info(self.model, self.model_version))

    def _get_float_info(self) -> Steps[ModelInfo]:
        """Contract of the float32 model itself (for `embed_arrays` with float input)."""
        info = yield from self._get_info()
        if info.input_datatype == "FP32":
            return info
        if self._float_info is None:
            self._float_info = yield from self._fetch_info(self.model, self.model_version)
        return self._float_info

    def _version_for(self, info: ModelInfo) -> str:
        return self.model_version if info.name == self.model else ""

    def _embedding_step(self, info: ModelInfo) -> Steps[tuple[str, str] | None]:
        """(name, version) of the embedding model behind an ensemble; None for a plain model.

        A response of the uint8 model names the ensemble ("pnasnet_large_uint8", version 1), not
        the model that computed the vectors, and Triton does not report the composing model's
        version per request. So the client reads it from the server: the step's pinned version
        when the ensemble pins one, else the latest version the server lists as available (what an
        ensemble step with version -1 runs), cached for `STEP_VERSION_TTL` seconds. Limit: while
        a new version replaces the old one, rows answered within that window (and requests in
        flight during the swap) can be attributed to the other version, unless `exact_versions`
        is on (see `_exact_request`). float32 answers name their own version and have no such
        window.
        """
        step = info.embedding_step(self.model)
        if step is None or step[1] != "-1":
            return step
        name = step[0]
        cached = self._step_version
        if cached is not None and cached[0] == name and \
                time.monotonic() - cached[2] < STEP_VERSION_TTL:
            return name, cached[1]
        return name, (yield from self._latest_version(name))

    def _latest_version(self, name: str) -> Steps[str]:
        """The newest version of `name` the server lists as available, asked now (and cached)."""
        meta = yield from self._call(lambda t: t.metadata(name, "", self.timeout),
                                     f"metadata of {name}")
        version = latest_version(meta)
        self._step_version = (name, version, time.monotonic())
        return version

    # -- preprocessing ----------------------------------------------------------------------------
    def _preparer(self, info: ModelInfo) -> Callable[[ImageInput], np.ndarray]:
        """One input -> what requests to `info` carry (float32 or uint8); errors not located."""

        def prepare(item: ImageInput) -> np.ndarray:
            pixels = preprocess.to_pixels(item, info.size, self.center_crop, self.max_pixels,
                                          self.fast_preprocessing)
            return preprocess.to_datatype(pixels, info.input_datatype)

        return prepare

    def _pixels(self, item: ImageInput, index: int | None) -> Steps[np.ndarray]:
        info = yield from self._get_info()
        [value] = yield Prepare(lambda x: preprocess.to_pixels(
            x, info.size, self.center_crop, self.max_pixels, self.fast_preprocessing), [item])
        if isinstance(value, InvalidImageError):
            raise value.at(index, preprocess.describe(item)) from value.__cause__
        if isinstance(value, BaseException):
            raise value
        return value

    def _prepared(self, images: Sequence[ImageInput], info: ModelInfo,
                  single: bool) -> Steps[np.ndarray]:
        """Preprocess a batch of one request; the first bad item raises, named (and indexed
        unless the caller gave a single image: "item 0" would name nothing of theirs)."""
        prepared = yield Prepare(self._preparer(info), images)
        for index, value in enumerate(prepared):
            where = None if single else index
            if isinstance(value, InvalidImageError):
                raise value.at(where, preprocess.describe(images[index])) from value.__cause__
            if isinstance(value, BaseException):
                raise InvalidImageError(f"preprocessing failed ({type(value).__name__}: {value})",
                                        where, preprocess.describe(images[index])) from value
        return np.stack(prepared)

    # -- requests ---------------------------------------------------------------------------------
    def _request(self, batch: np.ndarray, info: ModelInfo, timeout: float | None,
                 headers: dict[str, str] | None, step: tuple[str, str] | None) -> Steps[Answer]:
        """One request (at most max_batch_size rows), retried, named after the embedding model."""
        request = InferRequest(info.name, self._version_for(info), info.input_name,
                               info.input_datatype, batch, info.output_name, headers)
        what = f"inference on {info.name} ({len(batch)} rows)"
        if self.exact_versions and step is not None and \
                info.embedding_step(self.model) == (step[0], "-1"):
            return (yield from self._exact_request(request, timeout, step[0], what))
        answer = yield from self._call(lambda t: t.infer(request, timeout), what)
        return answer if step is None else Answer(answer.rows, step[0], step[1])

    def _exact_request(self, request: InferRequest, timeout: float | None, name: str,
                       what: str) -> Steps[Answer]:
        """A request through an ensemble that runs the latest version of `name`, with that
        version known exactly: bracketed by the last version check before it was sent and a fresh
        one after its answer. Versions only move forward in a rollout, so when both name the same
        version, that version made the rows; when they differ, the request straddled a version
        change and is sent again (embedding is idempotent)."""
        for _ in range(EXACT_VERSION_ATTEMPTS):
            cached = self._step_version
            before = cached[1] if cached is not None and cached[0] == name else \
                (yield from self._latest_version(name))
            answer = yield from self._call(lambda t: t.infer(request, timeout), what)
            after = yield from self._latest_version(name)
            if after == before:
                return Answer(answer.rows, name, after)
            log.debug("%s: version of %s moved from %s to %s during the request; sending it again",
                      what, name, before, after)
        raise VersionChangedError(f"{what}: the version of {name} changed during each of "
                                  f"{EXACT_VERSION_ATTEMPTS} attempts, so no answer can be "
                                  f"attributed to one version; retry when the rollout has settled")

    def _requests(self, batch: np.ndarray, info: ModelInfo, timeout: float | None,
                  headers: dict[str, str] | None) -> Steps[Embeddings]:
        """Requests of at most the batch size, one after another; versions per row."""
        step = yield from self._embedding_step(info)
        size = self._request_size(info)
        answers = []
        for start in range(0, len(batch), size):
            answers.append((yield from self._request(batch[start:start + size], info, timeout,
                                                     headers, step)))
        if not answers:
            return Embeddings(np.zeros((0, info.output_dim), np.float32),
                              step[0] if step else info.name, ())
        versions = tuple(a.version for a in answers for _ in range(len(a.rows)))
        return Embeddings(self._finish(np.concatenate([a.rows for a in answers])),
                          answers[0].model, versions)

    def _request_size(self, info: ModelInfo, batch_size: int | None = None) -> int:
        return max(1, min(batch_size or self.batch_size or info.max_batch_size,
                          info.max_batch_size))

    def _finish(self, rows: np.ndarray) -> np.ndarray:
        return l2_normalize(rows) if self.normalize else rows

    # -- embeddings -------------------------------------------------------------------------------
    def _infer_batch(self, images: Sequence[ImageInput], timeout: float | None, progress: bool,
                     traceparent: str | None, single: bool = False) -> Steps[Embeddings]:
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__len__"):
            raise TypeError("embed_batch takes a sequence of images; use embed() for one image")
        headers = trace_headers(traceparent)
        info = yield from self._get_info()
        if len(images) <= self._request_size(info):
            batch = (yield from self._prepared(images, info, single)) if len(images) else \
                np.zeros((0, *info.input_shape), np.float32)
            return (yield from self._requests(batch, info, self._timeout(timeout), headers))
        result = yield from self._many(images, info, None, None, timeout, progress, headers,
                                       fail_fast=True)
        result.raise_for_failures()
        return Embeddings(result.embeddings, result.model, tuple(result.versions))

    def _embed_many(self, images: Iterable[ImageInput], batch_size: int | None,
                    max_in_flight: int | None, timeout: float | None, progress: bool,
                    traceparent: str | None) -> Steps[EmbedResult]:
        headers = trace_headers(traceparent)
        items = images if isinstance(images, Sequence) else list(images)
        info = yield from self._get_info()
        return (yield from self._many(items, info, batch_size, max_in_flight, timeout, progress,
                                      headers))

    def _many(self, items: Sequence[ImageInput], info: ModelInfo, batch_size: int | None,
              max_in_flight: int | None, timeout: float | None, progress: bool,
              headers: dict[str, str] | None, fail_fast: bool = False) -> Steps[EmbedResult]:
        step = yield from self._embedding_step(info)
        call_timeout = self._timeout(timeout)
        bar = _progress_bar(len(items), progress)
        plan = Plan(items, prepare=self._preparer(info),
                    send=lambda batch: self._request(batch, info, call_timeout, headers, step),
                    output_dim=info.output_dim, batch_size=self._request_size(info, batch_size),
                    max_in_flight=max(1, max_in_flight or self.max_in_flight),
                    fail_fast=fail_fast, on_progress=bar.update if bar else None,
                    finish=self._finish)
        try:
            return (yield Pipeline(plan))
        finally:
            if bar is not None:
                bar.close()

    def _embed_arrays(self, batch: np.ndarray, timeout: float | None,
                      traceparent: str | None) -> Steps[Embeddings]:
        """float32 in [0, 1] goes to the float32 model as is; uint8 pixels go the client's way
        (to the uint8 model, or converted to float32 here)."""
        headers = trace_headers(traceparent)
        batch = np.asarray(batch)
        if batch.dtype == np.uint8:
            info = yield from self._get_info()
        elif np.issubdtype(batch.dtype, np.floating):
            info = yield from self._get_float_info()
        else:
            raise InvalidImageError(f"arrays must be uint8 pixels or float32 in [0, 1], got "
                                    f"{batch.dtype}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != info.input_shape:
            raise InvalidImageError(f"batch must be [n, {', '.join(map(str, info.input_shape))}], "
                                    f"got {list(batch.shape)}")
        if batch.dtype == np.uint8:
            batch = preprocess.to_datatype(batch, info.input_datatype)
        batch = np.ascontiguousarray(batch, dtype=np.uint8 if info.input_datatype == "UINT8"
                                     else np.float32)
        return (yield from self._requests(batch, info, self._timeout(timeout), headers))


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="embedding", smoothing=0.1)
