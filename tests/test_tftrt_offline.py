"""Offline TF-TRT: where TensorRT is missing (here) every entry point stops before any work with a
message naming what is missing and the exact commands; options, config and calibration input are
checked without TensorRT."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import model_config, repository, tftrt
from export.errors import ExportError, FidelityError, SourceError
from export.fidelity import Parity

MODEL = "pnasnet_large"
NO_TRT = tftrt.TensorRTStatus("2.21.0", tensorrt_build=False, tensorrt_version=None, gpus=())


@pytest.fixture(scope="module")
def status() -> tftrt.TensorRTStatus:
    found = tftrt.tensorrt_status()
    if not found.missing():  # pragma: no cover - a TensorRT machine with a GPU
        pytest.skip("TensorRT and a GPU are present: the missing-TensorRT path does not apply")
    return found


@pytest.fixture()
def repo(exported_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the exported tiny twin (the session repository stays untouched)."""
    shutil.copytree(exported_repo / MODEL, tmp_path / "repo" / MODEL)
    return tmp_path / "repo"


def _commands(message: str) -> tuple[list[str], list[str]]:
    """The `python -m export.tftrt config` line and the `docker run` line of the message."""
    lines = [line.strip() for line in message.splitlines()]
    (config,) = [line for line in lines if line.startswith("python -m export.tftrt config")]
    (docker,) = [line for line in lines if line.startswith("docker run")]
    return shlex.split(config), shlex.split(docker)


def test_this_machine_reports_what_tftrt_is_missing(status: tftrt.TensorRTStatus) -> None:
    missing = " ".join(status.missing())
    assert "TensorRT" in missing or "GPU" in missing


def test_export_with_tftrt_stops_before_exporting(status: tftrt.TensorRTStatus, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    import export.pipeline
    from export import cli

    def must_not_run(*_a: object, **_k: object) -> None:
        raise AssertionError("the export ran although TF-TRT cannot")

    monkeypatch.setattr(export.pipeline, "export_model", must_not_run)
    target = tmp_path / "repo"
    code = cli.main(["--source", "twin:tiny", "--repository", str(target), "--tftrt", "fp16"])
    err = capsys.readouterr().err
    assert code == 2
    for need in status.missing():
        assert need in err
    assert tftrt.NGC_TENSORFLOW_IMAGE in err
    assert "kubectl apply -k k8s/tftrt" in err
    assert not target.exists()


def test_the_commands_in_the_message_are_exact(repo: Path) -> None:
    message = tftrt.missing_message(NO_TRT, repo, MODEL, "FP16", (1, 8, 16, 32))
    config, docker = _commands(message)
    parsed = tftrt.build_parser().parse_args(config[3:])
    assert (parsed.command, parsed.repository, parsed.model) == ("config", repo, MODEL)
    assert (parsed.precision, parsed.batch_sizes) == ("FP16", (1, 8, 16, 32))
    # The container command: GPUs, the checkout on PYTHONPATH, the repository mounted, NGC TF 25.02.
    assert docker[:5] == ["docker", "run", "--rm", "--gpus", "all"]
    image = docker.index(tftrt.NGC_TENSORFLOW_IMAGE)
    assert "PYTHONPATH=/src" in docker[:image]
    mounts = [docker[i + 1] for i, a in enumerate(docker[:image]) if a == "-v"]
    assert f"{Path.cwd().resolve()}:/src" in mounts
    inner = tftrt.build_parser().parse_args(docker[image + 4:])
    assert docker[image + 1:image + 4] == ["python", "-m", "export.tftrt"]
    assert inner.command == "convert" and inner.precision == "FP16"
    assert f"{repo.resolve()}:{inner.repository}" in mounts  # outside the checkout: mounted


def test_config_then_convert_here_stops_at_once_with_the_same_advice(
        status: tftrt.TensorRTStatus, repo: Path, capsys: pytest.CaptureFixture) -> None:
    assert tftrt.main(["config", "--repository", str(repo), "--precision", "fp16"]) == 0
    assert tftrt.main(["convert", "--repository", str(repo), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "offline TF-TRT cannot run on this machine" in err and "docker run" in err
    target = tftrt.tftrt_model_name(MODEL, "FP16")
    assert repository.versions(repo, target) == []
    assert not list((repo / target).glob(f"{repository.STAGING_PREFIX}*"))


def test_tftrt_config_parses_and_serves_the_prebuilt_engines(repo: Path) -> None:
    path = tftrt.write_config(repo, MODEL, "FP16", (1, 8, 16, 32))
    assert path == repo / "pnasnet_large_tftrt_fp16" / "config.pbtxt"
    cfg = model_config.read(path)
    assert cfg.name == "pnasnet_large_tftrt_fp16"
    assert model_config.interface_of(cfg) == model_config.interface_of(
        model_config.read(repo / MODEL / "config.pbtxt"))
    assert cfg.platform == "tensorflow_savedmodel"
    assert cfg.parameters["TF_SIGNATURE_DEF"].string_value == "serving_default"
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    # Engines are in the SavedModel: no online TF-TRT on top of them.
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert cfg.max_batch_size == 32
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert sorted(w.batch_size for w in cfg.model_warmup) == [1, 8, 16, 32]
    assert repository.versions(repo, "pnasnet_large_tftrt_fp16") == []


def test_missing_names_each_need() -> None:
    assert "built without TensorRT" in " ".join(NO_TRT.missing())
    no_libs = tftrt.TensorRTStatus("2.17.0", True, None, ("/physical_device:GPU:0",), ("libnvinfer",))
    assert ["libraries do not load" in m for m in no_libs.missing()] == [True]
    no_gpu = tftrt.TensorRTStatus("2.17.0", True, "10.8.0", ())
    assert ["no GPU" in m for m in no_gpu.missing()] == [True]
    ready = tftrt.TensorRTStatus("2.17.0", True, "10.8.0", ("/physical_device:GPU:0",))
    assert ready.missing() == []
    assert tftrt.require_tensorrt(Path("r"), MODEL, "FP16", (1,), status=ready) is ready
    with pytest.raises(tftrt.TensorRTMissingError, match="no GPU"):
        tftrt.require_tensorrt(Path("r"), MODEL, "FP16", (1,), status=no_gpu)


def test_options_are_checked_before_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="INT8 needs calibration images"):
        tftrt.check_options("INT8", (1, 8), None)
    with pytest.raises(SourceError, match="no images"):
        tftrt.check_options("INT8", (1, 8), tmp_path)
    with pytest.raises(ExportError, match="INT8 only"):
        tftrt.check_options("FP16", (1, 8), tmp_path)
    with pytest.raises(ExportError, match="precision"):
        tftrt.check_options("FP8", (1,), None)
    assert tftrt.parse_batch_sizes("8, 1,32,8") == (1, 8, 32)
    with pytest.raises(SystemExit):
        tftrt.build_parser().parse_args(["convert", "--batch-sizes", "0,8"])


def test_calibration_batches_look_like_served_inputs(tmp_path: Path) -> None:
    from samples import sample_paths

    for path in sample_paths():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "notes.txt").write_text("not an image")
    files = tftrt.calibration_files(tmp_path)
    assert len(files) == len(sample_paths())
    batches = list(tftrt.calibration_batches(tmp_path, (331, 331), batch=4))
    assert [len(b) for b in batches] == [4, len(files) - 4]
    for b in batches:
        assert b.shape[1:] == (331, 331, 3) and b.dtype == np.float32
        assert 0.0 <= b.min() and b.max() <= 1.0


def test_agreement_thresholds_follow_the_precision() -> None:
    close = Parity(images=2, max_abs_diff=0.01, max_abs_reference=1.0, min_cosine=0.9999)
    tftrt.check_agreement(close, "FP16")
    with pytest.raises(FidelityError):
        tftrt.check_agreement(close, "FP32")
    drifted = Parity(images=2, max_abs_diff=0.3, max_abs_reference=1.0, min_cosine=0.985)
    tftrt.check_agreement(drifted, "INT8")
    with pytest.raises(FidelityError, match="cosine"):
        tftrt.check_agreement(drifted, "FP16")
