"""The OpenVINO IR through a real local Triton server.

Triton's own OpenVINO backend is not in the pip-installable tritonserver, so what its config must
survive is run here with `configs/local_openvino.pbtxt`: `openvino_cpu.pbtxt` with only the backend
swapped for the Python-based one (serve/backends/openvino_cpu), the same IR and the same batching
shape (max_batch_size 0, a dynamic batch dimension, two instances). Partial batches and concurrent
requests of mixed sizes must each get exactly their own rows back.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from client import EmbeddingClient
from client.preprocess import to_model_input, to_pixels
from client.stats import model_stats
from export import openvino as ov_path
from samples import sample_paths
from serve.server import LocalTritonServer, Ports, ServerError

MODEL = "pnasnet_large"
# Same IR, same precision: only thread scheduling differs from the in-process reference. The test
# inputs' embeddings differ pairwise by more than 10x this, so a misrouted row cannot pass.
ROW_RTOL = 5e-3


@pytest.fixture(scope="module")
def cases(exported_repo: Path) -> tuple[np.ndarray, np.ndarray]:
    """Distinct inputs (sample photos at several brightness levels, near-duplicates such as a photo
    and its full-HD twin dropped) and their in-process OpenVINO embeddings: the same IR at the
    precision the server uses (OpenVINO's default)."""
    compiled = ov_path.compile_ir(exported_repo / MODEL / "1" / "model.xml")
    photos = [to_model_input(to_pixels(p, (331, 331))) for p in sample_paths()]
    kept_x: list[np.ndarray] = []
    kept_y: list[np.ndarray] = []
    for x in (p * s for s in (1.0, 0.6, 0.3) for p in photos):
        y = compiled(x[None].astype(np.float32))[0][0]
        scale = max([np.max(np.abs(y))] + [np.max(np.abs(k)) for k in kept_y])
        if all(np.max(np.abs(y - k)) > 10 * ROW_RTOL * scale for k in kept_y):
            kept_x.append(x.astype(np.float32))
            kept_y.append(y)
    assert len(kept_x) >= 12
    return np.stack(kept_x), np.stack(kept_y)


@pytest.fixture(scope="module")
def images(cases: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return cases[0]


@pytest.fixture(scope="module")
def reference(cases: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return cases[1]


@pytest.fixture(scope="module")
def unbatched_server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    srv = LocalTritonServer(exported_repo, ports=Ports.free(), config_name="local_openvino",
                            work_dir=tmp_path_factory.mktemp("triton-local-openvino"))
    srv.start(timeout=300)
    yield srv
    srv.stop()


def _infer(url: str, batch: np.ndarray, model: str = MODEL) -> np.ndarray:
    dtype = "UINT8" if batch.dtype == np.uint8 else "FP32"
    inp = grpcclient.InferInput("images", list(batch.shape), dtype)
    inp.set_data_from_numpy(batch)
    with grpcclient.InferenceServerClient(url) as triton:
        return triton.infer(model, [inp]).as_numpy("embedding")


def _assert_rows(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    scale = np.max(np.abs(want))
    for row, (g, w) in enumerate(zip(got, want, strict=True)):
        assert np.max(np.abs(g - w)) <= ROW_RTOL * scale, f"row {row} is not its own image's embedding"


def test_distinct_inputs_have_distinct_embeddings(reference: np.ndarray) -> None:
    """The premise of the row checks below."""
    scale = np.max(np.abs(reference))
    gaps = [np.max(np.abs(a - b)) / scale for i, a in enumerate(reference) for b in reference[i + 1:]]
    assert min(gaps) > 10 * ROW_RTOL


def test_the_server_runs_the_unbatched_shape(unbatched_server: LocalTritonServer) -> None:
    with grpcclient.InferenceServerClient(unbatched_server.grpc_url) as triton:
        cfg = triton.get_model_config(MODEL, as_json=True)["config"]
    assert cfg["backend"] == "openvino_cpu" and cfg.get("max_batch_size", 0) == 0
    assert cfg["input"][0]["dims"][0] == "-1" and "dynamic_batching" not in cfg
    assert sum(int(g["count"]) for g in cfg["instance_group"]) == 2


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_partial_batches_of_any_size(unbatched_server: LocalTritonServer, images: np.ndarray,
                                     reference: np.ndarray, size: int) -> None:
    start = size % 5
    _assert_rows(_infer(unbatched_server.grpc_url, images[start:start + size]),
                 reference[start:start + size])


def test_concurrent_requests_of_mixed_sizes_each_get_their_own_rows(
        unbatched_server: LocalTritonServer, images: np.ndarray, reference: np.ndarray) -> None:
    """What the stale-padding bug breaks: full and partial batches interleaved across instances."""
    url = unbatched_server.grpc_url
    jobs = [(i % len(images), 1 + (i * 5) % 7) for i in range(24)]  # (start, size), sizes 1..7
    before = model_stats(url, MODEL)
    barrier = threading.Barrier(8)

    def run(index: int) -> tuple[int, int, np.ndarray]:
        start, size = jobs[index]
        rows = np.take(images, range(start, start + size), axis=0, mode="wrap")
        if index < 8:
            barrier.wait(timeout=60)  # the first eight start together
        return start, size, _infer(url, rows)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(len(jobs))))
    for start, size, got in results:
        _assert_rows(got, np.take(reference, range(start, start + size), axis=0, mode="wrap"))
    deadline = time.monotonic() + 30  # statistics are recorded after the responses are sent
    while (delta := model_stats(url, MODEL) - before).success_count < len(jobs):
        assert time.monotonic() < deadline, delta
        time.sleep(0.05)
    # No batcher: every request ran as its own execution, whatever its size.
    assert delta.success_count == len(jobs) == delta.execution_count


def test_uint8_ensemble_and_client_on_the_unbatched_shape(unbatched_server: LocalTritonServer,
                                                          exported_repo: Path) -> None:
    compiled = ov_path.compile_ir(exported_repo / MODEL / "1" / "model.xml")
    pixels = np.stack([to_pixels(p, (331, 331)) for p in sample_paths()])
    want = np.concatenate([compiled(to_model_input(p)[None])[0] for p in pixels])
    _assert_rows(_infer(unbatched_server.grpc_url, pixels[:3], f"{MODEL}_uint8"), want[:3])
    with EmbeddingClient(unbatched_server.grpc_url, payload="uint8") as client:
        _assert_rows(client.embed_batch(sample_paths()), want)


def test_default_local_server_is_openvino_and_tensorflow_is_one_option_away(
        server: LocalTritonServer, exported_repo: Path, tmp_path: Path) -> None:
    """configs/cpu.pbtxt (python -m serve's default) serves the IR; --config-name local_tf the
    SavedModel, and both agree (bf16 here, f32 elsewhere: cosine >= 0.9999)."""
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        assert triton.get_model_config(MODEL, as_json=True)["config"]["backend"] == "openvino_cpu"
    with EmbeddingClient(server.grpc_url) as client:
        ov_vectors = client.embed_batch(sample_paths())
    with LocalTritonServer(exported_repo, ports=Ports.free(), config_name="local_tf",
                           models=[MODEL], work_dir=tmp_path / "tf") as tf_server:
        with grpcclient.InferenceServerClient(tf_server.grpc_url) as triton:
            cfg = triton.get_model_config(MODEL, as_json=True)["config"]
        assert cfg["backend"] == "savedmodel_cpu"
        with EmbeddingClient(tf_server.grpc_url) as client:
            tf_vectors = client.embed_batch(sample_paths())
    cos = np.sum(ov_vectors * tf_vectors, axis=1) / (
        np.linalg.norm(ov_vectors, axis=1) * np.linalg.norm(tf_vectors, axis=1))
    assert np.min(cos) >= ov_path.BF16_MIN_COSINE


def test_a_misspelt_parameter_stops_the_model_with_a_clear_error(exported_repo: Path,
                                                                 tmp_path: Path) -> None:
    from export import model_config

    repo = tmp_path / "repo"
    (repo / MODEL / "configs").mkdir(parents=True)
    (repo / MODEL / "1").symlink_to(exported_repo / MODEL / "1", target_is_directory=True)
    cfg = model_config.read(exported_repo / MODEL / "configs" / "cpu.pbtxt")
    cfg.parameters["INFERENCE_PRECISON"].string_value = "f32"  # sic
    (repo / MODEL / "configs" / "cpu.pbtxt").write_text(model_config.to_text(cfg))
    srv = LocalTritonServer(repo, ports=Ports.free(), work_dir=tmp_path / "work")
    with pytest.raises(ServerError, match="INFERENCE_PRECISON"):
        srv.start(timeout=120)
    assert srv.process is None
    shutil.rmtree(repo)
