"""The OpenVINO IR in each exported version: contract, parity with TensorFlow at f32 and bf16 on the
shipped sample photos, checked before the version appears, and the configs that serve it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import ensemble, model_config, repository
from export import openvino as ov_path
from export.errors import FidelityError
from export.signature import Interface

MODEL = "pnasnet_large"
IFACE = Interface("images", (331, 331, 3), "embedding", (4320,))
ROOT = Path(__file__).resolve().parents[1]
OPENVINO_VARIANTS = ["configs/openvino_cpu.pbtxt", "configs/local_openvino.pbtxt",
                     "configs/local_tf.pbtxt", "configs/cpu.pbtxt"]


def _version(repo: Path, number: int = 1) -> Path:
    return repo / MODEL / str(number)


def test_export_writes_the_ir_beside_the_savedmodel_with_its_parity(exported_repo: Path) -> None:
    version = _version(exported_repo)
    assert {"model.savedmodel", "model.xml", "model.bin", "openvino.json"} <= {
        p.name for p in version.iterdir()}
    ov_path.check_contract(version / "model.xml", IFACE)
    record = json.loads((version / "openvino.json").read_text())
    f32, bf16 = record["parity"]["f32"], record["parity"]["bf16"]
    assert f32["max_abs_diff"] <= record["f32_rtol"] * f32["max_abs_reference"]
    assert bf16["min_cosine"] >= record["bf16_min_cosine"]
    assert f32["images"] == len(ov_path.parity_images(IFACE)) >= 6


def test_parity_f32_and_bf16_against_tensorflow_on_the_sample_photos(exported_repo: Path) -> None:
    """Recomputed here: the IR at each precision against the SavedModel's signature."""
    version = _version(exported_repo)
    found = ov_path.parity(version / "model.savedmodel", version / "model.xml", IFACE)
    f32, bf16 = found["f32"], found["bf16"]
    assert f32.relative <= ov_path.F32_RTOL
    assert bf16.min_cosine >= ov_path.BF16_MIN_COSINE
    assert bf16.max_abs_diff > f32.max_abs_diff  # bf16 really ran at lower precision
    ov_path.check(found)


def test_parity_catches_an_ir_of_another_network(exported_repo: Path, tmp_path: Path) -> None:
    """The same twin with other weights: the check must fail, at f32 and bf16 alike."""
    from export.pipeline import export_model

    other = export_model("twin:tiny", tmp_path, MODEL, seed=7, openvino=False)
    ov_path.convert(other.path / "model.savedmodel", tmp_path)
    found = ov_path.parity(_version(exported_repo) / "model.savedmodel", tmp_path / "model.xml", IFACE)
    assert found["f32"].relative > ov_path.F32_RTOL
    with pytest.raises(FidelityError, match="f32 differs"):
        ov_path.check(found)
    with pytest.raises(FidelityError, match="bf16"):
        ov_path.check(found, rtol=1e9)


def test_no_version_appears_when_the_ir_fails_its_check(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from export.pipeline import export_model

    strict = ov_path.check
    monkeypatch.setattr(ov_path, "check", lambda found: strict(found, min_cosine=1.5))  # unreachable
    with pytest.raises(FidelityError, match="bf16"):
        export_model("twin:tiny", tmp_path, MODEL)
    assert repository.versions(tmp_path, MODEL) == []
    assert not list((tmp_path / MODEL).glob(f"{repository.STAGING_PREFIX}*"))


def test_export_without_openvino_serves_tensorflow_locally(tmp_path: Path) -> None:
    from export import cli

    assert cli.main(["--source", "twin:tiny", "--repository", str(tmp_path), "--model", MODEL,
                     "--no-openvino", "--quiet"]) == 0
    assert not (_version(tmp_path) / "model.xml").exists()
    local = model_config.read(tmp_path / MODEL / "configs/cpu.pbtxt")
    assert local.backend == model_config.LOCAL_BACKEND
    assert not (tmp_path / MODEL / "configs/openvino_cpu.pbtxt").exists()


@pytest.mark.parametrize("rel", OPENVINO_VARIANTS)
def test_committed_openvino_configs_are_what_export_generates(exported_repo: Path, rel: str) -> None:
    for model in (MODEL, ensemble.ensemble_name(MODEL), ensemble.step_name(MODEL)):
        committed = (ROOT / "model_repository" / model / rel).read_text()
        assert committed == (exported_repo / model / rel).read_text(), f"regenerate {model}/{rel}"


def test_local_configs_serve_the_ir_by_default_and_tensorflow_one_option_away(
        exported_repo: Path) -> None:
    root = exported_repo / MODEL
    local = model_config.read(root / "configs/cpu.pbtxt")
    assert local.backend == model_config.LOCAL_OPENVINO_BACKEND
    assert local.default_model_filename == "model.xml" and local.max_batch_size > 0
    assert local.parameters["INFERENCE_PRECISION"].string_value == "auto"
    tf_local = model_config.read(root / "configs/local_tf.pbtxt")
    assert tf_local.backend == model_config.LOCAL_BACKEND
    assert tf_local.default_model_filename == "model.savedmodel"
    # local_openvino is the Triton OpenVINO config with only the backend swapped
    twin = model_config.read(root / "configs/local_openvino.pbtxt")
    served = model_config.read(root / "configs/openvino_cpu.pbtxt")
    assert twin.backend == model_config.LOCAL_OPENVINO_BACKEND and served.backend == "openvino"
    twin.backend = served.backend
    assert twin == served
    for cfg in (local, tf_local, twin):
        assert model_config.interface_of(cfg) == IFACE


def test_uint8_ensemble_follows_the_unbatched_variant(exported_repo: Path) -> None:
    rel = "configs/openvino_cpu.pbtxt"
    ens = model_config.read(exported_repo / ensemble.ensemble_name(MODEL) / rel)
    step = model_config.read(exported_repo / ensemble.step_name(MODEL) / rel)
    for cfg in (ens, step):
        assert cfg.max_batch_size == 0
    assert list(ens.input[0].dims) == [-1, 331, 331, 3] and ens.input[0].data_type == mc.TYPE_UINT8
    assert list(ens.output[0].dims) == [-1, 4320]
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [ensemble.step_name(MODEL), MODEL]


def test_f32_precision_reproduces_tensorflow_in_the_compiled_model(exported_repo: Path) -> None:
    """compile_ir's precision switch is real: f32 on request, OpenVINO's default otherwise."""
    ir = _version(exported_repo) / "model.xml"
    assert ov_path.compile_ir(ir, "f32").get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    default = ov_path.compile_ir(ir).get_property("INFERENCE_PRECISION_HINT").to_string()
    assert default == ov_path.default_precision() in ("bf16", "f32", "f16")
    x = np.random.RandomState(0).rand(3, 331, 331, 3).astype(np.float32)
    assert ov_path.compile_ir(ir, "f32")(x)[0].shape == (3, 4320)


def test_reduced_pnasnet_twin_ir_keeps_parity(tmp_path: Path) -> None:
    """Real PNASNet-5 cells (separable 3x3/5x5/7x7, stride-2 reductions, factorized reductions, batch
    norm) through the OpenVINO converter: f32 and bf16 parity on the sample photos at export."""
    from export.pipeline import export_model

    result = export_model("twin:pnasnet_reduced", tmp_path, MODEL)
    f32, bf16 = result.openvino["parity"]["f32"], result.openvino["parity"]["bf16"]
    assert f32["max_abs_diff"] <= ov_path.F32_RTOL * f32["max_abs_reference"]
    assert bf16["min_cosine"] >= ov_path.BF16_MIN_COSINE
    assert bf16["max_abs_diff"] > f32["max_abs_diff"]
    ov_path.check_contract(result.path / "model.xml", IFACE)
