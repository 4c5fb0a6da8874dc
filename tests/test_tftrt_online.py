"""Online TF-TRT: `configs/trt_fp16.pbtxt` (Triton 25.02's TensorFlow backend builds FP16 engines on the
serving GPU) parses, keeps the contract of `config.pbtxt`, and warms up every batch size it forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import model_config

ROOT = Path(__file__).resolve().parents[1]
MODEL = "pnasnet_large"


def _sources(exported_repo: Path) -> dict[str, Path]:
    return {"exported": exported_repo / MODEL, "committed": ROOT / "model_repository" / MODEL}


@pytest.mark.parametrize("where", ["exported", "committed"])
def test_trt_fp16_config_parses_and_matches_the_default(exported_repo: Path, where: str) -> None:
    folder = _sources(exported_repo)[where]
    trt = model_config.read(folder / "configs" / "trt_fp16.pbtxt")
    default = model_config.read(folder / "config.pbtxt")
    assert trt.name == default.name == MODEL
    assert model_config.interface_of(trt) == model_config.interface_of(default)
    assert trt.platform == "tensorflow_savedmodel"
    assert trt.parameters["TF_SIGNATURE_DEF"].string_value == "serving_default"
    assert [g.kind for g in trt.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert trt.max_batch_size == default.max_batch_size
    assert trt.dynamic_batching == default.dynamic_batching

    (accel,) = trt.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    assert accel.parameters["precision_mode"] == "FP16"
    assert int(accel.parameters["max_workspace_size_bytes"]) > 0
    assert int(accel.parameters["minimum_segment_size"]) >= 1
    # The default config runs plain TensorFlow: TF-TRT is only in this variant.
    assert not default.optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.parametrize("where", ["exported", "committed"])
def test_trt_fp16_warms_up_every_batch_size_the_batcher_forms(exported_repo: Path, where: str) -> None:
    """Engines are built per input shape during warmup, so live traffic never waits for one."""
    trt = model_config.read(_sources(exported_repo)[where] / "configs" / "trt_fp16.pbtxt")
    formed = {1, *trt.dynamic_batching.preferred_batch_size, trt.max_batch_size}
    warmed = {w.batch_size for w in trt.model_warmup}
    assert formed <= warmed
    for warm in trt.model_warmup:
        (inp,) = warm.inputs.values()
        assert list(inp.dims) == list(trt.input[0].dims) and inp.random_data


def test_committed_trt_fp16_is_what_the_generator_writes(exported_repo: Path) -> None:
    for where, folder in _sources(exported_repo).items():
        text = (folder / "configs" / "trt_fp16.pbtxt").read_text()
        iface = model_config.interface_of(model_config.parse(text))
        assert text == model_config.to_text(model_config.trt_fp16_config(MODEL, iface)), where
