"""Many images through the server at once: preprocessing in threads, requests in flight, in order.

A `Plan` cuts the inputs into chunks of `batch_size`. The client runs up to `max_in_flight` chunks
at a time (threads for the blocking client, tasks for the asyncio one): their images are decoded
and resized in a thread pool (Pillow and libjpeg-turbo release the GIL, so threads use every core)
while earlier chunks are at the server. Each chunk is one request; its rows are written to the
output at the chunk's own indices, so results are in input order whatever order the answers
arrive in.

Nothing is lost: an input that cannot be preprocessed is recorded as a failure with its index and
reason, and the rest of its chunk is still sent; a request that fails after its retries marks each
of its items as failed with the server's error. Every index ends up either embedded or failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.errors import EmbeddingError, InferenceError, InvalidImageError
from client.ops import Prepare, Steps
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
        """Why, without the item's name (`item` has it): what a report prints after the name."""
        return getattr(self.error, "reason", None) or str(self.error)

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


class Plan:
    """One `embed_many`-style call: its chunks, and the result they fill in.

    `prepare(item)` runs in the preprocessing threads and returns one model input (raises
    InvalidImageError for bad input); `send(batch)` is the core's steps for one request (retries
    included) returning the `Answer`: its rows and the embedding model and version that made them.
    With `fail_fast`, no chunk starts after a failure (the items never started are reported as
    failed too, so the result still accounts for every index).
    """

    def __init__(self, items: Sequence[Any], *, prepare: Callable[[Any], np.ndarray],
                 send: Callable[[np.ndarray], Steps[Answer]], output_dim: int, batch_size: int,
                 max_in_flight: int, fail_fast: bool = False,
                 on_progress: ProgressCallback | None = None,
                 finish: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be at least 1")
        self.items, self.prepare, self.send = items, prepare, send
        self.batch_size, self.max_in_flight, self.fail_fast = batch_size, max_in_flight, fail_fast
        self.on_progress, self.finish = on_progress, finish
        self.out = np.full((len(items), output_dim), np.nan, dtype=np.float32)
        self.versions = [""] * len(items)
        self.models: dict[str, None] = {}
        self.failures: list[ItemFailure] = []

    def chunks(self) -> Iterator[Steps[None]]:
        """The chunks' steps, in order; ask for the next one only when a slot is free."""
        for start in range(0, len(self.items), self.batch_size):
            if self.fail_fast and self.failures:
                skipped = InferenceError("not attempted: an earlier item failed")
                self.failures.extend(ItemFailure(i, describe(self.items[i]), skipped)
                                     for i in range(start, len(self.items)))
                return
            yield self.chunk(start, min(start + self.batch_size, len(self.items)))

    def _fail(self, index: int, error: BaseException) -> None:
        item = describe(self.items[index])
        if isinstance(error, InvalidImageError):
            error = error.at(index, item)
        elif not isinstance(error, EmbeddingError):
            error = InvalidImageError(f"preprocessing failed ({type(error).__name__}: {error})",
                                      index, item)
        self.failures.append(ItemFailure(index, item, error))

    def chunk(self, start: int, stop: int) -> Steps[None]:
        """Prepare items start..stop, send the good ones as one request, record every outcome."""
        prepared = yield Prepare(self.prepare, self.items[start:stop])
        good: list[int] = []
        arrays: list[np.ndarray] = []
        for i, value in zip(range(start, stop), prepared, strict=True):
            if isinstance(value, BaseException):
                self._fail(i, value)
            else:
                good.append(i)
                arrays.append(value)
        if arrays:
            try:
                answer = yield from self.send(np.stack(arrays))
            except EmbeddingError as error:
                self.failures.extend(ItemFailure(i, describe(self.items[i]), error) for i in good)
            except Exception as error:  # noqa: BLE001 - never drop items on an unexpected error
                wrapped = InferenceError(f"request failed ({type(error).__name__}: {error})")
                self.failures.extend(ItemFailure(i, describe(self.items[i]), wrapped) for i in good)
            else:
                self.out[good] = answer.rows
                self.models.setdefault(answer.model, None)
                for i in good:
                    self.versions[i] = answer.version
        if self.on_progress is not None:
            self.on_progress(stop - start)

    def result(self) -> EmbedResult:
        """Every index embedded or failed, failures in index order."""
        self.failures.sort(key=lambda f: f.index)
        out = self.finish(self.out) if self.finish is not None else self.out
        return EmbedResult(out, self.failures, self.versions, ",".join(self.models))
