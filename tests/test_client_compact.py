"""The compact (uint8) transport: the ensemble export writes, its parity, its bytes on the wire."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import _utils as grpc_utils

from client import EmbeddingClient, ModelNotReadyError
from client.stats import model_stats
from export import ensemble, model_config
from serve.server import LocalTritonServer

ROOT = Path(__file__).resolve().parents[1]
MODEL = "pnasnet_large"
ENSEMBLE, STEP = "pnasnet_large_uint8", "pnasnet_large_uint8_to_float"


def test_export_writes_the_ensemble_for_every_config_variant(exported_repo: Path) -> None:
    assert ensemble.ensemble_name(MODEL) == ENSEMBLE and ensemble.step_name(MODEL) == STEP
    variants = ensemble.model_variants(exported_repo, MODEL)
    assert {"config.pbtxt", "configs/cpu.pbtxt"} <= set(variants)
    for rel, cfg in variants.items():
        ens = model_config.read(exported_repo / ENSEMBLE / rel)
        step = model_config.read(exported_repo / STEP / rel)
        # The ensemble may not batch more than the model it feeds, and that differs per variant.
        assert ens.max_batch_size == step.max_batch_size == cfg.max_batch_size
        assert ens.platform == "ensemble" and step.backend == "python"
        assert ens.input[0].name == cfg.input[0].name and list(ens.input[0].dims) == \
            list(cfg.input[0].dims)
        assert ens.input[0].data_type == model_config.mc.TYPE_UINT8
        assert [s.model_name for s in ens.ensemble_scheduling.step] == [STEP, MODEL]
    gpu = model_config.read(exported_repo / STEP / "config.pbtxt")
    assert gpu.instance_group[0].kind == model_config.mc.ModelInstanceGroup.KIND_CPU
    assert (exported_repo / STEP / "1" / "model.py").read_text() == \
        (ROOT / "export" / "uint8_to_float.py").read_text()
    assert (exported_repo / ENSEMBLE / "1").is_dir()


def test_committed_ensemble_configs_match_the_generator() -> None:
    repo = ROOT / "model_repository"
    for name, configs in ensemble.all_configs(repo, MODEL).items():
        assert configs, name
        for rel, cfg in configs.items():
            committed = (repo / name / rel).read_text()
            assert committed == model_config.to_text(cfg), \
                "regenerate with: python -m export.ensemble --repository model_repository"


def test_uint8_transport_gives_the_float_embedding_bit_for_bit(grpc_url: str,
                                                               sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url, payload="float32") as f, \
            EmbeddingClient(grpc_url, payload="uint8") as q:
        assert q.info.name == ENSEMBLE and q.info.input_datatype == "UINT8"
        assert q.payload_in_use == "uint8" and f.payload_in_use == "float32"
        assert q.info.bytes_per_image * 4 == f.info.bytes_per_image
        before = model_stats(grpc_url, MODEL)
        compact = q.embed_batch(sample_images)
        # A composing model's statistics are recorded after its response is sent: wait for them.
        deadline = time.monotonic() + 30
        while True:
            after = model_stats(grpc_url, MODEL)
            if (after - before).inference_count >= len(sample_images) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        floats = f.embed_batch(sample_images)
    # The server converts with the client's own expression: the model sees identical input.
    np.testing.assert_array_equal(compact, floats)
    # The ensemble ran the one loaded model (no second copy of the weights).
    assert (after - before).inference_count == len(sample_images)


def test_auto_transport_picks_uint8_when_the_ensemble_is_there(grpc_url: str) -> None:
    with EmbeddingClient(grpc_url, payload="auto") as c:
        assert c.payload_in_use == "uint8"
    with EmbeddingClient(grpc_url, payload="auto", uint8_model="missing_ensemble") as c:
        assert c.payload_in_use == "float32"
    with EmbeddingClient(grpc_url, payload="uint8", uint8_model="missing_ensemble") as c:
        with pytest.raises(ModelNotReadyError, match="uint8 payload"):
            c.info  # noqa: B018


def test_uint8_arrays_and_float_arrays_take_their_own_route(grpc_url: str,
                                                            sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url, payload="uint8") as q:
        pixels = np.stack([q.pixels(p) for p in sample_images[:3]])
        via_ensemble = q.embed_arrays(pixels)
        via_model = q.embed_arrays(pixels.astype(np.float32) / np.float32(255.0))
    # x / 255 and x * (1 / 255) differ by an ulp here and there; the local default runs bf16 where
    # the CPU has it, which can round such inputs apart (seen: 2e-5 on outputs up to ~2).
    np.testing.assert_allclose(via_ensemble, via_model, rtol=1e-3, atol=1e-4)


def _request_bytes(name: str, batch: np.ndarray, datatype: str) -> int:
    inp = grpcclient.InferInput("images", list(batch.shape), datatype)
    inp.set_data_from_numpy(batch)
    request = grpc_utils._get_inference_request(name, [inp], "", "", None, 0, False, False, 0, None,
                                                None)
    return request.ByteSize()


def test_uint8_request_is_at_most_a_quarter_of_float32() -> None:
    def per_image(name: str, dtype: type, datatype: str) -> float:
        one, eight = (_request_bytes(name, np.zeros((n, 331, 331, 3), dtype), datatype)
                      for n in (1, 8))
        return (eight - one) / 7  # the request's fixed header (about 40 bytes) cancels out

    float_bytes = per_image(MODEL, np.float32, "FP32")
    uint8_bytes = per_image(ENSEMBLE, np.uint8, "UINT8")
    assert float_bytes == pytest.approx(331 * 331 * 3 * 4, abs=8)  # varint lengths grow a little
    assert uint8_bytes <= float_bytes / 4 + 1  # exactly a quarter, up to the varint bytes


def test_server_loads_the_ensemble_and_its_step(server: LocalTritonServer) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        index = {m["name"]: m.get("state") for m in
                 triton.get_model_repository_index(as_json=True)["models"]}
    assert index.get(ENSEMBLE) == "READY" and index.get(STEP) == "READY"
