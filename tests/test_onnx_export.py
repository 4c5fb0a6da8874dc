"""The ONNX path on the tiny twin: `python -m export --onnx`, the graph's contract, parity with the
SavedModel in onnxruntime on CPU, atomic versions, every config variant, and the local server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import model_config, repository
from export import onnx as onnx_path
from export.errors import FidelityError, SourceError
from export.signature import Interface

MODEL = "pnasnet_large"
ONNX_MODEL = "pnasnet_large_onnx"
IFACE = Interface("images", (331, 331, 3), "embedding", (4320,))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository written by the command line: the tiny twin exported, then converted (--onnx)."""
    from export import cli

    repo = tmp_path_factory.mktemp("onnx-repository")
    code = cli.main(["--source", "twin:tiny", "--repository", str(repo), "--model", MODEL,
                     "--onnx", "--quiet"])
    assert code == 0
    return repo


def _onnx_file(repo: Path, version: int = 1) -> Path:
    return repo / ONNX_MODEL / str(version) / onnx_path.ONNX_FILENAME


def test_export_writes_one_onnx_version_with_its_configs_and_provenance(onnx_repo: Path) -> None:
    assert repository.versions(onnx_repo, ONNX_MODEL) == [1]
    root = onnx_repo / ONNX_MODEL
    assert not list(root.glob(f"{repository.STAGING_PREFIX}*"))
    assert sorted(p.name for p in (root / "1").iterdir()) == ["conversion.json", "model.onnx"]
    assert (root / "config.pbtxt").is_file()
    record = json.loads((root / "1" / "conversion.json").read_text())
    assert record["source_model"] == MODEL and record["source_version"] == 1
    assert record["converter"] == "tf2onnx" and record["opset"] == onnx_path.OPSET
    assert record["parity"]["max_abs_diff"] <= record["rtol"] * record["parity"]["max_abs_reference"]


def test_graph_keeps_names_dims_and_a_dynamic_batch(onnx_repo: Path) -> None:
    import onnx

    model = onnx.load(str(_onnx_file(onnx_repo)))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("images", "embedding")
    in_dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [331, 331, 3]
    assert isinstance(out_dims[0], str) and out_dims[1:] == [4320]
    onnx_path.check_contract(_onnx_file(onnx_repo), IFACE)


def test_onnxruntime_matches_tensorflow_within_tolerance(onnx_repo: Path) -> None:
    """Fresh inputs (not the batch checked at export): random, black, white, and a sample photo."""
    import tensorflow as tf

    from samples import sample_paths

    rng = np.random.RandomState(7)
    photo = tf.image.resize(tf.io.decode_image(tf.io.read_file(str(sample_paths()[0])), channels=3,
                                               expand_animations=False), (331, 331)).numpy() / 255.0
    batch = np.stack([rng.rand(331, 331, 3), np.zeros((331, 331, 3)), np.ones((331, 331, 3)),
                      photo]).astype(np.float32)
    saved = onnx_repo / MODEL / "1" / "model.savedmodel"
    fn = tf.saved_model.load(str(saved)).signatures["serving_default"]
    want = fn(images=tf.constant(batch))["embedding"].numpy()
    session = onnx_path.ort_session(_onnx_file(onnx_repo))
    for size in (1, len(batch)):  # the dynamic batch dimension, at 1 and at 4
        (got,) = session.run(["embedding"], {"images": batch[:size]})
        parity = onnx_path.compare(want[:size], got)
        assert parity.within(onnx_path.RTOL, onnx_path.ATOL), parity
        assert parity.min_cosine > 0.99999


def test_parity_check_rejects_a_different_output() -> None:
    ref = np.random.RandomState(0).rand(2, 4320).astype(np.float32)
    assert onnx_path.compare(ref, ref.copy()).within(onnx_path.RTOL, onnx_path.ATOL)
    assert not onnx_path.compare(ref, ref * 1.01).within(onnx_path.RTOL, onnx_path.ATOL)
    assert not onnx_path.compare(ref, np.full_like(ref, np.nan)).within(onnx_path.RTOL, onnx_path.ATOL)
    zeroed = ref.copy()
    zeroed[1] = 0.0
    assert onnx_path.compare(ref, zeroed).min_cosine == 0.0  # an all-zero embedding is no match
    assert onnx_path.compare(zeroed, zeroed.copy()).min_cosine == pytest.approx(1.0)
    with pytest.raises(FidelityError, match=r"ONNX model \(f32\) returns shape"):
        onnx_path.compare(ref, ref[:1])


def test_a_failed_conversion_leaves_no_version(onnx_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(saved: Path, output: Path, **_: object) -> float:
        output.write_bytes(b"not an onnx model")
        return 0.0

    monkeypatch.setattr(onnx_path, "convert_savedmodel", broken)
    with pytest.raises(onnx_path.ConversionError):
        onnx_path.export_onnx(onnx_repo, MODEL)
    assert repository.versions(onnx_repo, ONNX_MODEL) == [1]
    assert not list((onnx_repo / ONNX_MODEL).glob(f"{repository.STAGING_PREFIX}*"))


def test_a_parity_failure_leaves_no_version(onnx_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = onnx_path.Parity(images=2, max_abs_diff=0.5, max_abs_reference=1.0, min_cosine=0.9)
    monkeypatch.setattr(onnx_path, "parity", lambda *_a, **_k: bad)
    with pytest.raises(FidelityError, match="differs from the SavedModel"):
        onnx_path.export_onnx(onnx_repo, MODEL)
    assert repository.versions(onnx_repo, ONNX_MODEL) == [1]
    assert not list((onnx_repo / ONNX_MODEL).glob(f"{repository.STAGING_PREFIX}*"))


def test_nothing_to_convert_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="export one first"):
        onnx_path.export_onnx(tmp_path, MODEL)


VARIANTS = ["config.pbtxt", "configs/ort_cpu.pbtxt", "configs/local_onnx.pbtxt"]


@pytest.mark.parametrize("rel", VARIANTS)
def test_every_onnx_config_parses_and_keeps_the_contract(onnx_repo: Path, rel: str) -> None:
    text = (onnx_repo / ONNX_MODEL / rel).read_text()
    cfg = model_config.parse(text)
    assert cfg.name == ONNX_MODEL
    assert model_config.interface_of(cfg) == IFACE
    assert model_config.interface_of(cfg) == model_config.interface_of(
        model_config.read(onnx_repo / MODEL / "config.pbtxt"))
    assert cfg.default_model_filename == "model.onnx"
    assert not cfg.platform  # a backend, not the TensorFlow platform
    assert cfg.version_policy.latest.num_versions == 1
    assert all(0 < b <= cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size)
    assert any(w.batch_size == 1 for w in cfg.model_warmup)
    # What is on disk is what the generator builds now.
    assert text == model_config.to_text(onnx_path.all_configs(ONNX_MODEL, IFACE)[rel])


def test_gpu_config_runs_tensorrt_fp16_with_a_cached_engine_for_every_batch(onnx_repo: Path) -> None:
    cfg = model_config.read(onnx_repo / ONNX_MODEL / "config.pbtxt")
    assert cfg.backend == "onnxruntime"
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    params = dict(accel.parameters)
    assert accel.name == "tensorrt" and params["precision_mode"] == "FP16"
    assert params["trt_engine_cache_enable"] == "1"
    assert params["trt_engine_cache_path"] == f"{onnx_path.TRT_CACHE_ROOT}/{ONNX_MODEL}"

    def batch_of(profile: str) -> int:
        name, shape = profile.split(":")
        dims = [int(d) for d in shape.split("x")]
        assert name == "images" and dims[1:] == [331, 331, 3]
        return dims[0]

    # One profile spans every batch the dynamic batcher can form: no engine rebuild on live traffic.
    assert batch_of(params["trt_profile_min_shapes"]) == 1
    assert batch_of(params["trt_profile_max_shapes"]) == cfg.max_batch_size
    assert 1 <= batch_of(params["trt_profile_opt_shapes"]) <= cfg.max_batch_size
    assert {w.batch_size for w in cfg.model_warmup} == {1, cfg.max_batch_size}


def test_cpu_configs_pick_onnxruntime_backends(onnx_repo: Path) -> None:
    node = model_config.read(onnx_repo / ONNX_MODEL / "configs/ort_cpu.pbtxt")
    assert node.backend == "onnxruntime"
    assert [g.kind for g in node.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert not node.optimization.execution_accelerators.gpu_execution_accelerator
    local = model_config.read(onnx_repo / ONNX_MODEL / "configs/local_onnx.pbtxt")
    assert local.backend == onnx_path.LOCAL_BACKEND
    assert [g.kind for g in local.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert (ROOT / "serve" / "backends" / local.backend / "model.py").is_file()


def test_default_local_server_keeps_tensorflow(onnx_repo: Path) -> None:
    """`python -m serve` (config `cpu`) loads the SavedModel model only: it is faster on CPU."""
    from serve.server import models_with_config

    default = models_with_config(onnx_repo, "cpu")
    assert MODEL in default and ONNX_MODEL not in default
    assert models_with_config(onnx_repo, onnx_path.LOCAL_CONFIG_NAME) == [ONNX_MODEL]


def test_local_server_serves_the_onnx_model_when_chosen(onnx_repo: Path, tmp_path: Path) -> None:
    """`--config-name local_onnx`: the bundled tritonserver runs <model>_onnx through the
    Python-based onnxruntime backend."""
    import tritonclient.grpc as grpcclient

    from serve.server import LocalTritonServer, Ports

    batch = np.random.RandomState(3).rand(2, 331, 331, 3).astype(np.float32)
    (want,) = onnx_path.ort_session(_onnx_file(onnx_repo)).run(["embedding"], {"images": batch})
    with LocalTritonServer(onnx_repo, ports=Ports.free(), config_name=onnx_path.LOCAL_CONFIG_NAME,
                           work_dir=tmp_path) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            meta = client.get_model_metadata(ONNX_MODEL)
            assert [i.name for i in meta.inputs] == ["images"]
            inp = grpcclient.InferInput("images", list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch)
            got = client.infer(ONNX_MODEL, [inp]).as_numpy("embedding")
        finally:
            client.close()
    assert got.shape == (2, 4320)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_export_without_the_onnx_extra_stops_before_exporting(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    from export import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    code = cli.main(["--source", "twin:tiny", "--repository", str(tmp_path / "repo"), "--onnx"])
    assert code == 2
    assert "pip install -e '.[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()
