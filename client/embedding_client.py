"""`EmbeddingClient`: images in, embedding vectors out, over Triton's gRPC API."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import preprocess
from client.errors import (
    EmbeddingError,
    InferenceError,
    InvalidImageError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from client.model_info import ModelInfo
from client.preprocess import ImageInput

DEFAULT_URL = "localhost:8001"
DEFAULT_MODEL = "pnasnet_large"


def default_url() -> str:
    return os.environ.get("TRITON_GRPC_URL", DEFAULT_URL)


def translate(exc: InferenceServerException, model: str, url: str) -> EmbeddingError:
    """Map tritonclient's single exception type onto the client's typed errors."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    lowered = message.lower()
    if "unknown model" in lowered or "not found" in lowered or "NOT_FOUND" in status:
        return ModelNotReadyError(f"model {model!r} is not known to the server at {url}: {message}")
    if "not ready" in lowered or "unavailable model" in lowered:
        return ModelNotReadyError(f"model {model!r} is not ready at {url}: {message}")
    if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status or "CANCELLED" in status:
        return ServerUnavailableError(f"server at {url} unavailable ({status}): {message}")
    return InferenceError(f"server at {url} failed the request ({status or 'error'}): {message}")


class EmbeddingClient:
    """A thin typed wrapper over `tritonclient.grpc` for one embedding model.

    The model's tensor names, input size and batch limit come from the server on first use.
    """

    def __init__(self, url: str | None = None, model: str = DEFAULT_MODEL, *,
                 model_version: str = "", timeout: float | None = 60.0,
                 center_crop: bool = False, normalize: bool = False) -> None:
        self.url = url or default_url()
        self.model = model
        self.model_version = model_version
        self.timeout = timeout
        self.center_crop = center_crop
        self.normalize = normalize
        self._client = grpcclient.InferenceServerClient(self.url)
        self._info: ModelInfo | None = None

    # -- server state ---------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """True when the server is live and the model is ready; never raises."""
        try:
            return bool(self._client.is_server_live() and
                        self._client.is_model_ready(self.model, self.model_version))
        except InferenceServerException:
            return False

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() >= deadline:
                raise ServerUnavailableError(
                    f"model {self.model!r} at {self.url} not ready after {timeout:.0f} s")
            time.sleep(interval)

    @property
    def info(self) -> ModelInfo:
        """Model contract from the server (cached after the first call)."""
        if self._info is None:
            try:
                meta = self._client.get_model_metadata(self.model, self.model_version, as_json=True,
                                                       client_timeout=self.timeout)
                cfg = self._client.get_model_config(self.model, self.model_version, as_json=True,
                                                    client_timeout=self.timeout)
            except InferenceServerException as exc:
                raise translate(exc, self.model, self.url) from exc
            self._info = ModelInfo.from_server(meta, cfg)
        return self._info

    # -- embeddings ------------------------------------------------------------------------------
    def preprocess(self, item: ImageInput, index: int | None = None) -> np.ndarray:
        """One input -> float32 [H, W, 3] in [0, 1] at the model's size."""
        try:
            pixels = preprocess.to_pixels(item, self.info.size, self.center_crop)
        except InvalidImageError as exc:
            raise InvalidImageError(exc.reason, index, preprocess.describe(item)) from exc
        return preprocess.to_model_input(pixels)

    def embed(self, image: ImageInput) -> np.ndarray:
        """One image -> float32 vector of the model's output size."""
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Images -> [n, D], row i for images[i]; split into requests of at most max_batch_size.

        Every input is validated before anything is sent, so a bad item fails the call up front,
        naming its index, instead of leaving a partial result.
        """
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__len__"):
            raise TypeError("embed_batch takes a sequence of images; use embed() for one image")
        if len(images) == 0:
            return np.zeros((0, self.info.output_dim), np.float32)
        batch = np.stack([self.preprocess(img, i) for i, img in enumerate(images)])
        return self.embed_arrays(batch)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Already preprocessed float32 [n, H, W, 3] in [0, 1] -> [n, D]."""
        info = self.info
        expected = (info.height, info.width, info.channels)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise InvalidImageError(f"batch must be [n, {', '.join(map(str, expected))}], "
                                    f"got {list(batch.shape)}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [self._infer(batch[i:i + info.max_batch_size])
                 for i in range(0, len(batch), info.max_batch_size)]
        out = np.concatenate(parts, axis=0)
        if out.shape[0] != batch.shape[0]:
            raise InferenceError(f"server returned {out.shape[0]} rows for {batch.shape[0]} inputs")
        if self.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        info = self.info
        inp = grpcclient.InferInput(info.input_name, list(batch.shape), info.input_datatype)
        inp.set_data_from_numpy(batch)
        out = grpcclient.InferRequestedOutput(info.output_name)
        try:
            result = self._client.infer(self.model, [inp], model_version=self.model_version,
                                        outputs=[out], client_timeout=self.timeout)
        except InferenceServerException as exc:
            raise translate(exc, self.model, self.url) from exc
        array = result.as_numpy(info.output_name)
        if array is None:
            raise InferenceError(f"response has no output {info.output_name!r}")
        return array.astype(np.float32, copy=False)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
