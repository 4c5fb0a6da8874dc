"""Many images through the server at once: preprocessing in threads, requests in flight, in order.

The inputs are cut into chunks of `batch_size`. Up to `max_in_flight` chunks are active at a time:
their images are decoded and resized in a thread pool (Pillow and libjpeg-turbo release the GIL, so
threads use every core) while earlier chunks are at the server. Each chunk is one request; its rows
are written to the output at the chunk's own indices, so results are in input order whatever order
the answers arrive in.

Nothing is lost: an input that cannot be preprocessed is recorded as a failure with its index and
reason, and the rest of its chunk is still sent; a request that fails after its retries marks each
of its items as failed with the server's error. Every index ends up either embedded or failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.errors import EmbeddingError, InferenceError, InvalidImageError
from client.preprocess import describe
from client.transport import Answer


@dataclass(frozen=True)
class ItemFailure:
    """One input that has no embedding: which one, and why."""

    index: int
    item: str
    error: EmbeddingError

    @property
    def reason(self) -> str:
        return str(self.error)

    @property
    def kind(self) -> str:
        return type(self.error).__name__


@dataclass(frozen=True)
class Embeddings:
    """Vectors and the embedding model that produced them: its name and version.

    `versions[i]` is the version that produced row i. `version` is that version when every row has
    the same (the usual case); rows of one call can differ only when a call of several requests
    overlaps a version rollout, and then `version` lists them, comma-separated, in row order.
    """

    vectors: np.ndarray
    model: str
    versions: tuple[str, ...]

    @property
    def version(self) -> str:
        return ",".join(dict.fromkeys(self.versions))

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass
class EmbedResult:
    """Row i of `embeddings` belongs to input i; rows of failed inputs are NaN (see `failures`).

    `model` is the embedding model that produced the rows and `versions[i]` the version of it that
    produced row i ("" for a failed row).
    """

    embeddings: np.ndarray
    failures: list[ItemFailure] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    model: str = ""

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the inputs that were embedded."""
        mask = np.ones(len(self), dtype=bool)
        for failure in self.failures:
            mask[failure.index] = False
        return mask

    @property
    def succeeded(self) -> int:
        return len(self) - len(self.failures)

    def raise_for_failures(self) -> None:
        """Raise the error of the first failed input (lowest index), if any."""
        if self.failures:
            raise min(self.failures, key=lambda f: f.index).error


ProgressCallback = Callable[[int], None]


async def run(items: Sequence[Any], *, prepare: Callable[[Any], np.ndarray],
              send: Callable[[np.ndarray], Awaitable[Answer]], output_dim: int,
              batch_size: int, max_in_flight: int, executor: Executor | None,
              on_progress: ProgressCallback | None = None, fail_fast: bool = False) -> EmbedResult:
    """Embed `items` in order; see the module docstring for the guarantees.

    `prepare(item)` runs in `executor` and returns one model input (raises InvalidImageError for
    bad input); `send(batch)` returns the `Answer` for a stacked batch: its rows and the embedding
    model and version that made them (retries are its business).
    With `fail_fast`, no new chunk starts after a failure (the items never started are reported as
    failed too, so the result still accounts for every index).
    """
    if batch_size < 1 or max_in_flight < 1:
        raise ValueError("batch_size and max_in_flight must be at least 1")
    n = len(items)
    out = np.full((n, output_dim), np.nan, dtype=np.float32)
    versions = [""] * n
    models: dict[str, None] = {}
    failures: list[ItemFailure] = []
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(max_in_flight)

    def fail(index: int, error: BaseException) -> None:
        if isinstance(error, InvalidImageError):
            error = error.at(index, describe(items[index]))
        elif not isinstance(error, EmbeddingError):
            error = InvalidImageError(f"preprocessing failed ({type(error).__name__}: {error})",
                                      index, describe(items[index]))
        failures.append(ItemFailure(index, describe(items[index]), error))

    async def chunk(start: int, stop: int) -> None:
        try:
            indices = range(start, stop)
            prepared = await asyncio.gather(
                *(loop.run_in_executor(executor, prepare, items[i]) for i in indices),
                return_exceptions=True)
            good: list[int] = []
            arrays: list[np.ndarray] = []
            for i, value in zip(indices, prepared, strict=True):
                if isinstance(value, BaseException):
                    if isinstance(value, asyncio.CancelledError):
                        raise value
                    fail(i, value)
                else:
                    good.append(i)
                    arrays.append(value)
            if arrays:
                try:
                    answer = await send(np.stack(arrays))
                except EmbeddingError as error:
                    for i in good:
                        failures.append(ItemFailure(i, describe(items[i]), error))
                except Exception as error:  # noqa: BLE001 - never drop items on an unexpected error
                    wrapped = InferenceError(f"request failed ({type(error).__name__}: {error})")
                    for i in good:
                        failures.append(ItemFailure(i, describe(items[i]), wrapped))
                else:
                    out[good] = answer.rows
                    models.setdefault(answer.model, None)
                    for i in good:
                        versions[i] = answer.version
            if on_progress is not None:
                on_progress(stop - start)
        finally:
            slots.release()

    tasks: list[asyncio.Task] = []
    try:
        for start in range(0, n, batch_size):
            await slots.acquire()
            stop = min(start + batch_size, n)
            if fail_fast and failures:
                slots.release()
                skipped = InferenceError("not attempted: an earlier item failed")
                failures.extend(ItemFailure(i, describe(items[i]), skipped) for i in range(start, n))
                break
            tasks.append(asyncio.create_task(chunk(start, stop)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    failures.sort(key=lambda f: f.index)
    return EmbedResult(out, failures, versions, ",".join(models))
