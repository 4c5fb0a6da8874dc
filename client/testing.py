"""An in-memory Triton for tests: `FakeTransport` speaks the client's transport interface.

    from client import EmbeddingClient
    from client.testing import FakeTransport

    fake = FakeTransport()                       # "pnasnet_large" and its uint8 model, tiny sizes
    with EmbeddingClient(transport=fake) as c:
        c.embed(image)                           # runs all of the client's logic, no server
    fake.fail("infer", fake.unavailable())       # the next infer call fails like a restart would

Like httpx's `MockTransport`, it replaces only the I/O: model resolution, preprocessing, batching,
retries, failures by item and normalisation run as they do against a server. Its errors are
tritonclient's own exceptions put through the client's translation table, so they are the errors
a real server's answers become. The model is a fixed random linear map of the float input, so a
row depends only on its image (and the uint8 model gives the float model's rows bit for bit).
`AsyncFakeTransport` is the same for `AsyncEmbeddingClient`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from client.errors import ClientClosedError
from client.settings import DEFAULT_MODEL, uint8_model_name
from client.transport import Answer, Connection, InferRequest, translate


@dataclass
class FakeModel:
    name: str
    datatype: str  # "FP32" or "UINT8"
    height: int
    width: int
    dim: int
    max_batch_size: int
    versions: list[str] = field(default_factory=lambda: ["1"])
    steps: list[tuple[str, int]] = field(default_factory=list)  # an ensemble's (model, version)
    output_shape: list[int] | None = None  # None: [dim]

    def metadata(self) -> dict[str, Any]:
        batch = ["-1"] if self.max_batch_size else []
        out = self.output_shape or [self.dim]
        return {"name": self.name, "versions": list(self.versions),
                "platform": "ensemble" if self.steps else "python",
                "inputs": [{"name": "images", "datatype": self.datatype,
                            "shape": batch + [str(self.height), str(self.width), "3"]}],
                "outputs": [{"name": "embedding", "datatype": "FP32",
                             "shape": batch + [str(d) for d in out]}]}

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.name, "max_batch_size": self.max_batch_size}
        if self.steps:
            cfg["ensemble_scheduling"] = {"step": [{"model_name": m, "model_version": str(v)}
                                                   for m, v in self.steps]}
        return {"config": cfg}


class FakeTransport:
    """The transport interface over in-memory models; records every call and request."""

    is_async = False

    def __init__(self, model: str = DEFAULT_MODEL, *, size: int = 8, dim: int = 16,
                 max_batch_size: int = 4, version: str = "3", uint8: bool = True,
                 url: str = "fake-triton:8001", protocol: str = "grpc") -> None:
        self.conn = Connection.make(url, protocol)
        self.models: dict[str, FakeModel] = {
            model: FakeModel(model, "FP32", size, size, dim, max_batch_size, [version])}
        if uint8:
            name = uint8_model_name(model)
            self.models[name] = FakeModel(name, "UINT8", size, size, dim, max_batch_size, ["1"],
                                          steps=[(f"{name}_to_float", -1), (model, -1)])
        self.weights = self.weights_for(size * size * 3, dim)
        self.live_now = True
        self.calls: list[tuple[str, str]] = []  # (method, model)
        self.requests: list[InferRequest] = []
        self.counts: dict[str, int] = defaultdict(int)  # rows inferred per model
        self._failures: dict[str, deque[BaseException]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.closed = False
        #: Called with each inference request while it is "at the server", before it is
        #: answered: a test's way to make things happen mid-request (a rollout, for example).
        self.during_infer: Callable[[InferRequest], None] | None = None

    @staticmethod
    def weights_for(inputs: int, dim: int) -> np.ndarray:
        """The fixed linear map of a model with `inputs` input values and `dim` outputs."""
        return np.random.default_rng(inputs * 1000 + dim).standard_normal(
            (inputs, dim)).astype(np.float32)

    # -- scripting --------------------------------------------------------------------------------
    def fail(self, method: str, *errors: BaseException) -> None:
        """The next calls of `method` ("infer", "metadata", ..., or "*") raise these, in order."""
        with self._lock:
            self._failures[method].extend(errors)

    @staticmethod
    def unavailable() -> InferenceServerException:
        """What gRPC says while the server restarts (transient)."""
        return InferenceServerException("failed to connect to all addresses; Connection refused",
                                        status="StatusCode.UNAVAILABLE")

    @staticmethod
    def server_error(message: str = "backend failed") -> InferenceServerException:
        return InferenceServerException(message, status="StatusCode.INTERNAL")

    def _enter(self, method: str, model: str) -> None:
        if self.closed:
            raise ClientClosedError("transport")
        with self._lock:
            self.calls.append((method, model))
            queue = self._failures[method] or self._failures["*"]
            error = queue.popleft() if queue else None
        if error is not None:
            raise translate(error, model, self.conn.url) from error

    def _model(self, model: str) -> FakeModel:
        if model not in self.models:
            raise translate(InferenceServerException(
                f"Request for unknown model: '{model}' is not found",
                status="StatusCode.NOT_FOUND"), model, self.conn.url)
        return self.models[model]

    # -- the transport interface ------------------------------------------------------------------
    def live(self, timeout: float | None) -> bool:
        self._enter("live", "")
        return self.live_now

    def ready(self, model: str | None, version: str, timeout: float | None) -> bool:
        self._enter("ready", model or "")
        return self.live_now and (model is None or model in self.models)

    def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        self._enter("metadata", model)
        return self._model(model).metadata()

    def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        self._enter("config", model)
        return self._model(model).config()

    def statistics(self, model: str, timeout: float | None) -> dict[str, Any]:
        self._enter("statistics", model)
        self._model(model)
        n = self.counts[model]
        return {"model_stats": [{"name": model, "inference_count": str(n),
                                 "execution_count": str(n),
                                 "inference_stats": {"success": {"count": str(n), "ns": "0"}}}]}

    def infer(self, request: InferRequest, timeout: float | None) -> Answer:
        self._enter("infer", request.model)
        model = self._model(request.model)
        batch = request.batch
        expected = (model.height, model.width, 3)
        if batch.dtype != (np.uint8 if model.datatype == "UINT8" else np.float32) or \
                tuple(batch.shape[1:]) != expected or len(batch) > model.max_batch_size:
            raise translate(InferenceServerException(
                f"unexpected shape or type for input 'images' for model '{model.name}': "
                f"{batch.dtype} {list(batch.shape)}", status="StatusCode.INVALID_ARGUMENT"),
                model.name, self.conn.url)
        with self._lock:
            self.requests.append(request)
            self.counts[model.name] += len(batch)
        if self.during_infer is not None:
            self.during_infer(request)
        floats = batch.astype(np.float32) * np.float32(1 / 255) if model.datatype == "UINT8" \
            else batch
        rows = floats.reshape(len(batch), -1) @ self.weights_for(floats[0].size, model.dim)
        return Answer(rows.astype(np.float32), model.name, model.versions[-1])

    def close(self) -> None:
        self.closed = True


class AsyncFakeTransport(FakeTransport):
    """`FakeTransport` for `AsyncEmbeddingClient`: the same methods, as coroutines."""

    is_async = True


def _coroutine(name: str) -> Any:
    blocking = getattr(FakeTransport, name)

    async def method(self: FakeTransport, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)  # a real await point, so concurrency is exercised
        return blocking(self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in ("live", "ready", "metadata", "config", "statistics", "infer", "close"):
    setattr(AsyncFakeTransport, _name, _coroutine(_name))
