"""`AsyncEmbeddingClient`: the same client for asyncio applications.

Every call is a coroutine; none blocks the event loop: decoding and resizing run in a thread pool,
requests are awaited on gRPC's asyncio channel (`tritonclient.grpc.aio`, or aiohttp for
`protocol="http"`). The logic is `client.core`'s, shared with `EmbeddingClient`: only the waiting
differs, so both have the same methods, arguments and errors.

    async with AsyncEmbeddingClient("triton:8001", payload="uint8") as client:
        await client.wait_until_ready(60)
        vector = await client.embed("cat.jpg")
        result = await client.embed_many(paths)      # EmbedResult: rows in order + failures
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from client.core import ClientCore
from client.embedding_client import _gevent_patched
from client.errors import EmbeddingError
from client.model_info import ModelInfo
from client.ops import Call, Pipeline, Prepare, Sleep, Steps, adrive
from client.pipeline import Embeddings, EmbedResult, Plan
from client.preprocess import ImageInput, to_model_input
from client.stats import ModelStats
from client.transport import Transport, open_transport


class AsyncEmbeddingClient(ClientCore):
    """Embeddings of one model on one Triton server, for asyncio code.

    Takes the same arguments as `EmbeddingClient` (see `client.core.ClientCore`). Create it inside
    the event loop that will use it: gRPC's asyncio channel belongs to that loop.
    """

    _asyncio = True

    def _setup(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def _open_transport(self) -> Transport:
        if self.protocol == "grpc" and _gevent_patched():
            # grpc.aio never answers once gevent has patched threads (Locust does): say so
            # instead of hanging.
            raise EmbeddingError("AsyncEmbeddingClient over gRPC cannot run in a gevent-patched "
                                 "process (Locust imports patch it): use EmbeddingClient, or "
                                 "protocol='http'")
        return open_transport(self.connection, asyncio=True)

    # -- the driver: where this client awaits -----------------------------------------------------
    async def _run(self, steps: Steps[Any]) -> Any:
        return await adrive(steps, self._perform)

    async def _perform(self, step: Any) -> Any:
        if isinstance(step, Call):
            return await step.fn(self._opened())
        if isinstance(step, Prepare):
            return await self._map(step.fn, step.items)
        if isinstance(step, Pipeline):
            return await self._run_plan(step.plan)
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        raise TypeError(f"unknown step {step!r}")

    async def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """`fn` over items in the preprocessing threads; exceptions are returned, not raised."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedding-prep")
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(self._pool, fn, item) for item in items),
                                    return_exceptions=True)

    async def _run_plan(self, plan: Plan) -> EmbedResult:
        """Up to `max_in_flight` chunks at once, as tasks of this loop."""
        slots = asyncio.Semaphore(plan.max_in_flight)
        chunks = plan.chunks()
        tasks: list[asyncio.Task] = []

        async def run(chunk: Steps[None]) -> None:
            try:
                await self._run(chunk)
            finally:
                slots.release()

        try:
            while await slots.acquire() and (chunk := next(chunks, None)) is not None:
                tasks.append(asyncio.create_task(run(chunk)))
            await asyncio.gather(*tasks)
        finally:  # cancelled: stop the chunks still running
            for task in tasks:
                task.cancel()
        return plan.result()

    # -- server state -----------------------------------------------------------------------------
    async def is_live(self) -> bool:
        """True when the server answers its liveness check; never raises (but when closed)."""
        return await self._run(self._is_live())

    async def is_ready(self) -> bool:
        """True when the server is live and the model requests go to is ready; never raises (but
        when closed)."""
        return await self._run(self._is_ready())

    async def health(self) -> dict[str, Any]:
        """Liveness, readiness and per-model readiness as a dict, for probes and logs."""
        return await self._run(self._health())

    async def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Wait until `is_ready()`; raise ServerUnavailableError after `timeout` seconds."""
        await self._run(self._wait_until_ready(timeout, interval))

    async def statistics(self, model: str | None = None) -> ModelStats:
        """Triton's cumulative statistics of `model` (default: the model requests go to)."""
        return await self._run(self._statistics(model))

    # -- the model's contract ---------------------------------------------------------------------
    async def get_info(self) -> ModelInfo:
        """Contract of the model requests go to (the uint8 model for uint8), cached."""
        return await self._run(self._get_info())

    @property
    def info(self) -> ModelInfo:
        """The contract once `get_info()` (or any embed call) has fetched it."""
        if self._info is None:
            raise EmbeddingError("the model's contract is not fetched yet: "
                                 "call `await client.get_info()` first")
        return self._info

    async def get_float_info(self) -> ModelInfo:
        """Contract of the float32 model itself (for `embed_arrays` with float input)."""
        return await self._run(self._get_float_info())

    async def payload_in_use(self) -> str:
        """"float32" or "uint8": what requests actually carry (resolves "auto")."""
        return "uint8" if (await self.get_info()).input_datatype == "UINT8" else "float32"

    async def embedding_step(self, info: ModelInfo | None = None) -> tuple[str, str] | None:
        """(name, version) of the embedding model behind the uint8 model; None for float32."""
        return await self._run(self._embedding_step(info or await self.get_info()))

    # -- preprocessing ----------------------------------------------------------------------------
    async def pixels(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> uint8 [H, W, 3] at the model's size, decoded in a worker thread."""
        return await self._run(self._pixels(item, index))

    async def preprocess(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> float32 [H, W, 3] in [0, 1] at the model's size (the model's own input)."""
        return to_model_input(await self.pixels(item, index))

    # -- embeddings -------------------------------------------------------------------------------
    async def embed(self, image: ImageInput, *, timeout: float | None = None,
                    traceparent: str | None = None) -> np.ndarray:
        """One image -> float32 vector of the model's output size (`traceparent`: see tracing)."""
        return (await self._run(self._infer_batch([image], timeout, False, traceparent,
                                                  True))).vectors[0]

    async def embed_batch(self, images: Sequence[ImageInput], *, timeout: float | None = None,
                          progress: bool = False, traceparent: str | None = None) -> np.ndarray:
        """Images -> [n, D] in order; any failure raises (the lowest index's error)."""
        return (await self.infer_batch(images, timeout=timeout, progress=progress,
                                       traceparent=traceparent)).vectors

    async def infer_batch(self, images: Sequence[ImageInput], *, timeout: float | None = None,
                          progress: bool = False, traceparent: str | None = None) -> Embeddings:
        """Like `embed_batch`, with the name and version of the embedding model that answered."""
        return await self._run(self._infer_batch(images, timeout, progress, traceparent))

    async def embed_many(self, images: Iterable[ImageInput], *, batch_size: int | None = None,
                         max_in_flight: int | None = None, timeout: float | None = None,
                         progress: bool = False, traceparent: str | None = None) -> EmbedResult:
        """Many images, pipelined, in order; failures are reported per item (see EmbedResult)."""
        return await self._run(self._embed_many(images, batch_size, max_in_flight, timeout,
                                                progress, traceparent))

    async def embed_arrays(self, batch: np.ndarray, *, timeout: float | None = None,
                           traceparent: str | None = None) -> np.ndarray:
        """Preprocessed images [n, H, W, 3] -> [n, D]: float32 in [0, 1] to the float32 model,
        uint8 pixels this client's way."""
        return (await self._run(self._embed_arrays(batch, timeout, traceparent))).vectors

    # -- lifecycle --------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close the channel and the preprocessing threads; later calls raise ClientClosedError."""
        self._closed = True
        io, self._io = self._io, None
        if io is not None:
            await io.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
