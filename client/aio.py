"""`AsyncEmbeddingClient`: the same client for asyncio applications (`tritonclient.grpc.aio`).

Every call is a coroutine; no call blocks the event loop: decoding and resizing run in a thread
pool, requests are awaited on gRPC's asyncio channel (or aiohttp for `protocol="http"`).

    async with AsyncEmbeddingClient("triton:8001", transport="uint8") as client:
        await client.wait_until_ready(60)
        vector = await client.embed("cat.jpg")
        result = await client.embed_many(paths)      # EmbedResult: rows in order + failures
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from client import pipeline, preprocess
from client.embedding_client import ClientOptions, _joined, l2_normalize
from client.errors import EmbeddingError, InvalidImageError, ModelNotReadyError, ServerUnavailableError
from client.model_info import ModelInfo
from client.pipeline import Embeddings, EmbedResult
from client.preprocess import ImageInput
from client.retry import acall_with_retry
from client.tracing import trace_headers
from client.transport import Answer, AsyncTransport, async_transport

T = TypeVar("T")


class AsyncEmbeddingClient(ClientOptions):
    """Embeddings of one model on one Triton server, for asyncio code.

    Takes the same arguments as `EmbeddingClient` (see there). Create it inside the event loop
    that will use it: gRPC's asyncio channel belongs to that loop.
    """

    def _setup(self) -> None:
        self._client: AsyncTransport | None = None
        self._closed = False
        self._info: ModelInfo | None = None
        self._info_lock: asyncio.Lock | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return (f"AsyncEmbeddingClient({self.url!r}, {self.model!r}, protocol={self.protocol!r}, "
                f"transport={self.transport!r})")

    # -- plumbing ---------------------------------------------------------------------------------
    def _transport(self) -> AsyncTransport:
        if self._closed:
            raise ServerUnavailableError("the client is closed", transient=False)
        if self._client is None:
            self._client = async_transport(self.connection)
        return self._client

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await acall_with_retry(fn, self.retry)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedding-prep")
        return self._pool

    def _check_timeout(self) -> float:
        return min(self.timeout or 10.0, 10.0)

    # -- server state -----------------------------------------------------------------------------
    async def is_live(self) -> bool:
        """True when the server answers its liveness check; never raises."""
        try:
            return await self._transport().server_live(self._check_timeout())
        except EmbeddingError:
            return False

    async def is_ready(self) -> bool:
        """True when the server is live and the model requests go to is ready; never raises."""
        if self._info is not None:
            models = [(self._info.name, self.model_version if self._info.name == self.model else "")]
        elif self.transport == "uint8":
            models = [(self.compact_model, ""), (self.model, "")]
        else:
            models = [(self.model, self.model_version)]
        try:
            t = self._transport()
            if not await t.server_live(self._check_timeout()):
                return False
            for name, version in models:
                if not await t.model_ready(name, version, self._check_timeout()):
                    return False
            return True
        except EmbeddingError:
            return False

    async def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Wait until `is_ready()`; raise ServerUnavailableError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not await self.is_ready():
            if time.monotonic() >= deadline:
                raise ServerUnavailableError(
                    f"model {self.model!r} at {self.url} not ready after {timeout:.0f} s",
                    transient=False)
            await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))

    # -- the model's contract -----------------------------------------------------------------------
    async def _fetch_info(self, model: str, version: str) -> ModelInfo:
        t = self._transport()
        meta = await self._retrying(lambda: t.metadata(model, version, self.timeout))
        cfg = await self._retrying(lambda: t.config(model, version, self.timeout))
        return ModelInfo.from_server(meta, cfg)

    async def get_info(self) -> ModelInfo:
        """Contract of the model requests go to (the ensemble for uint8), cached after first use."""
        if self._info is None:
            if self._info_lock is None:
                self._info_lock = asyncio.Lock()
            async with self._info_lock:
                if self._info is None:
                    self._info = await self._resolve()
        return self._info

    @property
    def info(self) -> ModelInfo:
        """The contract once `get_info()` (or any embed call) has fetched it."""
        if self._info is None:
            raise RuntimeError("call `await client.get_info()` first")
        return self._info

    async def _resolve(self) -> ModelInfo:
        if self.wants_compact():
            info, error = None, None
            try:
                info = await self._fetch_info(self.compact_model, "")
            except ModelNotReadyError as exc:
                error = exc
            chosen = self.compact_choice(info, error)
            if chosen is not None:
                return chosen
        return await self._fetch_info(self.model, self.model_version)

    async def embedding_step(self, info: ModelInfo | None = None) -> tuple[str, str] | None:
        """(name, version) of the embedding model behind an ensemble; None for a plain model.

        See `EmbeddingClient.embedding_step` for how it is learned and its limit during rollouts.
        """
        step, ask = self._step_cached(info or await self.get_info())
        if ask is None:
            return step
        t = self._transport()
        meta = await self._retrying(lambda: t.metadata(ask, "", self.timeout))
        return self._step_learned(ask, meta)

    # -- embeddings -------------------------------------------------------------------------------
    def _prepare_with(self, info: ModelInfo) -> Callable[[ImageInput], np.ndarray]:
        def prepare(item: ImageInput) -> np.ndarray:
            pixels = preprocess.to_pixels(item, info.size, self.center_crop, self.max_pixels,
                                          self.fast_preprocessing)
            return preprocess.to_datatype(pixels, info.input_datatype)

        return prepare

    async def _sender(self, info: ModelInfo, timeout: float | None,
                      headers: dict[str, str] | None) -> Callable[[np.ndarray], Awaitable[Answer]]:
        version = self.model_version if info.name == self.model else ""
        call_timeout = self.timeout if timeout is None else timeout
        embedding = await self.embedding_step(info)

        async def send(batch: np.ndarray) -> Answer:
            t = self._transport()
            return self._labelled(await self._retrying(lambda: t.infer(
                info.name, version, info.input_name, info.input_datatype, batch, info.output_name,
                call_timeout, headers)), embedding)

        return send

    async def embed(self, image: ImageInput, *, timeout: float | None = None,
                    traceparent: str | None = None) -> np.ndarray:
        """One image -> float32 vector of the model's output size (`traceparent`: see tracing)."""
        return (await self.embed_batch([image], timeout=timeout, traceparent=traceparent))[0]

    async def embed_batch(self, images: Sequence[ImageInput], *, timeout: float | None = None,
                          traceparent: str | None = None) -> np.ndarray:
        """Images -> [n, D] in order; any failure raises (the lowest index's error)."""
        return (await self.infer_batch(images, timeout=timeout, traceparent=traceparent)).vectors

    async def infer_batch(self, images: Sequence[ImageInput], *, timeout: float | None = None,
                          traceparent: str | None = None) -> Embeddings:
        """Like `embed_batch`, with the name and version of the embedding model that answered."""
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__len__"):
            raise TypeError("embed_batch takes a sequence of images; use embed() for one image")
        result = await self._many(images, timeout=timeout, fail_fast=True,
                                  headers=trace_headers(traceparent))
        result.raise_for_failures()
        if not result.model:  # no request was sent (empty input)
            step = await self.embedding_step()
            result.model = step[0] if step else self.info.name
        return Embeddings(result.embeddings, result.model, tuple(result.versions))

    async def embed_many(self, images: Iterable[ImageInput], *, batch_size: int | None = None,
                         max_in_flight: int | None = None, timeout: float | None = None,
                         progress: bool = False, traceparent: str | None = None) -> EmbedResult:
        """Many images, pipelined, in order; failures are reported per item (see EmbedResult)."""
        headers = trace_headers(traceparent)
        items = images if isinstance(images, Sequence) else list(images)
        return await self._many(items, batch_size=batch_size, max_in_flight=max_in_flight,
                                timeout=timeout, progress=progress, headers=headers)

    async def _many(self, items: Sequence[ImageInput], *, batch_size: int | None = None,
                    max_in_flight: int | None = None, timeout: float | None = None,
                    progress: bool = False, fail_fast: bool = False,
                    headers: dict[str, str] | None = None) -> EmbedResult:
        info = await self.get_info()
        size = max(1, min(batch_size or self.batch_size or info.max_batch_size, info.max_batch_size))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(items), unit="img", desc="embedding", smoothing=0.1)
        try:
            result = await pipeline.run(
                items, prepare=self._prepare_with(info),
                send=await self._sender(info, timeout, headers),
                output_dim=info.output_dim, batch_size=size,
                max_in_flight=max(1, max_in_flight or self.max_in_flight),
                executor=self._executor(), on_progress=bar.update if bar else None,
                fail_fast=fail_fast)
        finally:
            if bar is not None:
                bar.close()
        if self.normalize:
            result.embeddings = l2_normalize(result.embeddings)
        return result

    async def embed_arrays(self, batch: np.ndarray, *, timeout: float | None = None,
                           traceparent: str | None = None) -> np.ndarray:
        """Preprocessed uint8 pixels [n, H, W, 3] -> [n, D], through this client's transport."""
        headers = trace_headers(traceparent)
        info = await self.get_info()
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or tuple(batch.shape[1:]) != info.input_shape:
            raise InvalidImageError(f"batch must be uint8 [n, {', '.join(map(str, info.input_shape))}]"
                                    f", got {batch.dtype} {list(batch.shape)}")
        data = np.ascontiguousarray(preprocess.to_datatype(batch, info.input_datatype))
        send = await self._sender(info, timeout, headers)
        size = min(self.batch_size or info.max_batch_size, info.max_batch_size)
        out = _joined([await send(data[i:i + size]) for i in range(0, len(data), size)], info).vectors
        return l2_normalize(out) if self.normalize else out

    # -- lifecycle --------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close the channel and the preprocessing threads."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
