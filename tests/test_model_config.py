"""Configs are real ModelConfig protobufs derived from the signature, and the committed ones are current."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import model_config
from export.signature import Interface

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["config.pbtxt", "configs/cpu.pbtxt", "configs/tf_cpu.pbtxt", "configs/trt_fp16.pbtxt"]
IFACE = Interface("images", (331, 331, 3), "embedding", (4320,))


@pytest.mark.parametrize("rel", VARIANTS)
def test_exported_configs_parse_and_match_the_signature(exported_repo: Path, rel: str) -> None:
    cfg = model_config.read(exported_repo / "pnasnet_large" / rel)
    assert cfg.name == "pnasnet_large"
    assert model_config.interface_of(cfg) == IFACE
    assert cfg.input[0].data_type == cfg.output[0].data_type == mc.TYPE_FP32
    assert cfg.max_batch_size > 0
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert all(0 < b <= cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size)
    assert cfg.version_policy.latest.num_versions == 1
    (warm,) = [w for w in cfg.model_warmup if w.batch_size == 1]
    assert list(warm.inputs["images"].dims) == [331, 331, 3]


def test_gpu_variants_use_the_tensorflow_backend_on_gpu(exported_repo: Path) -> None:
    for rel in ("config.pbtxt", "configs/trt_fp16.pbtxt"):
        cfg = model_config.read(exported_repo / "pnasnet_large" / rel)
        assert cfg.platform == "tensorflow_savedmodel"
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        assert cfg.parameters["TF_SIGNATURE_DEF"].string_value == "serving_default"
    trt = model_config.read(exported_repo / "pnasnet_large" / "configs/trt_fp16.pbtxt")
    (accel,) = trt.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    # engines are built during warmup for every batch size the batcher forms
    sizes = {w.batch_size for w in trt.model_warmup}
    assert set(trt.dynamic_batching.preferred_batch_size) | {trt.max_batch_size} <= sizes


def test_cpu_variants(exported_repo: Path) -> None:
    local = model_config.read(exported_repo / "pnasnet_large" / "configs/local_tf.pbtxt")
    assert local.backend == model_config.LOCAL_BACKEND and not local.platform
    assert local.default_model_filename == "model.savedmodel"
    assert [g.kind for g in local.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    tf_cpu = model_config.read(exported_repo / "pnasnet_large" / "configs/tf_cpu.pbtxt")
    assert tf_cpu.platform == "tensorflow_savedmodel"
    assert [g.kind for g in tf_cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]


@pytest.mark.parametrize("rel", VARIANTS)
def test_committed_configs_are_what_export_generates(exported_repo: Path, rel: str) -> None:
    committed = (ROOT / "model_repository" / "pnasnet_large" / rel).read_text()
    generated = (exported_repo / "pnasnet_large" / rel).read_text()
    assert committed == generated, f"regenerate model_repository/pnasnet_large/{rel} with export"


def test_configs_follow_a_different_signature() -> None:
    other = Interface("images", (224, 224, 3), "embedding", (1280,))
    cfg = model_config.parse(model_config.to_text(model_config.gpu_config("m", other)))
    assert model_config.interface_of(cfg) == other
    assert list(cfg.model_warmup[0].inputs["images"].dims) == [224, 224, 3]
