"""Export: sources, naming, versioning, fidelity, atomicity and clear errors."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from export import fidelity, repository
from export.errors import FidelityError, HubUnreachableError, SourceError
from export.pipeline import export_model
from export.signature import Interface
from export.sources import safe_extract

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def twin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.twin import save_twin

    return save_twin("tiny", tmp_path_factory.mktemp("twin") / "module", seed=3)


def test_export_writes_named_signature_and_numbered_versions(tmp_path: Path, twin_dir: Path) -> None:
    import tensorflow as tf

    first = export_model(str(twin_dir), tmp_path, "emb")
    second = export_model(str(twin_dir), tmp_path, "emb")
    assert (first.version, second.version) == (1, 2)
    assert repository.versions(tmp_path, "emb") == [1, 2]
    saved = tf.saved_model.load(str(tmp_path / "emb" / "2" / "model.savedmodel"))
    sig = saved.signatures["serving_default"]
    (arg,) = sig.structured_input_signature[1].values()
    assert arg.name == "images" and arg.shape.as_list() == [None, 331, 331, 3]
    assert list(sig.structured_outputs) == ["embedding"]
    out = sig(images=tf.zeros([2, 331, 331, 3]))["embedding"]
    assert out.shape == (2, 4320)
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "emb").iterdir())


def test_keep_prunes_old_versions(tmp_path: Path, twin_dir: Path) -> None:
    for _ in range(3):
        result = export_model(str(twin_dir), tmp_path, "emb", keep=2)
    assert result.version == 3
    assert result.pruned == [1]
    assert repository.versions(tmp_path, "emb") == [2, 3]


def test_fidelity_is_measured_and_enforced(tmp_path: Path, twin_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    result = export_model(str(twin_dir), tmp_path, "emb")
    assert 0.0 <= result.max_abs_diff <= fidelity.TOLERANCE
    # A model whose reload drifts is never committed: no version folder, no staging left behind.
    monkeypatch.setattr(fidelity, "max_abs_difference", lambda *a, **k: 0.5)
    with pytest.raises(FidelityError, match="differs from the source by 0.5"):
        export_model(str(twin_dir), tmp_path, "emb")
    assert repository.versions(tmp_path, "emb") == [1]
    assert [p.name for p in (tmp_path / "emb").iterdir() if p.name.startswith(".")] == []


def test_fidelity_check_rejects_nan_and_large_differences() -> None:
    fidelity.check(0.0)
    for bad in (2e-5, float("nan"), float("inf")):
        with pytest.raises(FidelityError):
            fidelity.check(bad)


def test_same_seed_same_embeddings_different_seed_differs(tmp_path: Path) -> None:
    import tensorflow as tf

    outs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        export_model("twin:tiny", tmp_path, name, seed=seed)
        model = tf.saved_model.load(str(tmp_path / name / "1" / "model.savedmodel"))
        result_iface = Interface("images", (331, 331, 3), "embedding", (4320,))
        batch = fidelity.probe_batch(result_iface)
        outs.append(model.signatures["serving_default"](images=tf.constant(batch))["embedding"])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.max(np.abs(outs[0].numpy() - outs[2].numpy())) > 1e-3


def test_killed_export_leaves_no_loadable_version(tmp_path: Path, twin_dir: Path) -> None:
    """SIGKILL mid-export: only a hidden staging folder remains, and the next export removes it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "export", "--source", str(twin_dir), "--repository", str(tmp_path),
         "--model", "emb"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model_dir = tmp_path / "emb"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if model_dir.is_dir() and any(p.name.startswith(".staging") for p in model_dir.iterdir()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "export finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert repository.versions(tmp_path, "emb") == []
    assert any(p.name.startswith(".staging") for p in model_dir.iterdir())
    result = export_model(str(twin_dir), tmp_path, "emb")
    assert result.version == 1
    assert not any(p.name.startswith(".staging") for p in model_dir.iterdir())


def _tar_dir(src: Path, dest: Path, arcroot: str) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcroot)
    return dest


def test_tarball_source(tmp_path: Path, twin_dir: Path) -> None:
    archive = _tar_dir(twin_dir, tmp_path / "hub_module.tar.gz", "pnasnet")
    result = export_model(str(archive), tmp_path / "repo", "emb")
    assert result.version == 1 and result.interface.output_dims == (4320,)


def test_tarball_with_path_traversal_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(SourceError, match="escapes the archive root"):
        safe_extract(archive, dest)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_tarball_with_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("saved_model.pb")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(SourceError, match="link or special file"):
        export_model(str(archive), tmp_path / "repo", "emb")


@pytest.mark.parametrize("make_source, message", [
    (lambda p: str(p / "missing"), "not found"),
    (lambda p: (p / "notes.txt").write_text("x") and str(p / "notes.txt"), "not a .tar.gz"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "no saved_model.pb"),
    (lambda p: (p / "bad.tar.gz").write_bytes(b"not gzip") and str(p / "bad.tar.gz"),
     "not a readable tar archive"),
    (lambda p: "twin:nope", "unknown twin 'nope'"),
])
def test_bad_sources_fail_clearly_and_write_nothing(tmp_path: Path, make_source, message: str) -> None:
    source = make_source(tmp_path)
    with pytest.raises(SourceError, match=message):
        export_model(source, tmp_path / "repo", "emb")
    assert repository.versions(tmp_path / "repo", "emb") == []


def test_unreachable_hub_fails_fast_and_cli_falls_back_to_twin(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/google/imagenet/pnasnet_large/feature_vector/5"  # nothing listens
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="cannot reach 127.0.0.1:9"):
        export_model(url, tmp_path, "emb", hub_timeout=5)
    assert time.monotonic() - start < 60  # bounded, not the OS's multi-minute connect timeout
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--source", url, "--repository", str(tmp_path),
         "--model", "emb", "--fallback-twin", "tiny", "--hub-timeout", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "falling back to the offline twin twin:tiny" in proc.stdout
    assert repository.versions(tmp_path, "emb") == [1]


def test_cli_reports_errors_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--source", str(tmp_path / "nope"), "--repository",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "export: error: source" in proc.stderr and "Traceback" not in proc.stderr


# --- unanswering sources and TensorFlow's log lines ---
@pytest.fixture
def silent_server() -> Iterator[str]:
    """A local socket that accepts connections (the kernel completes them) and never answers."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/google/imagenet/pnasnet_large/feature_vector/5"


def test_server_that_accepts_but_never_answers_is_unreachable(tmp_path: Path, silent_server: str) -> None:
    with pytest.raises(HubUnreachableError, match="the connection was accepted, no HTTP response"):
        export_model(silent_server, tmp_path, "emb", hub_timeout=2)
    assert repository.versions(tmp_path, "emb") == []


def test_cli_reports_an_unanswering_source_in_one_line(tmp_path: Path, silent_server: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--source", silent_server, "--repository", str(tmp_path),
         "--hub-timeout", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error: cannot reach 127.0.0.1:"), proc.stderr
    assert "within 2 s" in lines[0] and "no HTTP response came back" in lines[0]


def test_the_export_cli_and_converters_import_without_tensorflow() -> None:
    """TensorFlow writes its start-up lines when imported; the CLI imports it only once its
    stderr filter is on, so nothing it imports first may pull TensorFlow in."""
    code = ("import sys, export.cli, export.openvino, export.onnx, export.fidelity, export.tftrt; "
            "print(sorted(m for m in ('tensorflow', 'openvino', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_quiet_export_prints_only_its_result_line(tmp_path: Path) -> None:
    """No TensorFlow start-up lines (`E0000 ... failed call to cuInit` and the like)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--source", "twin:tiny", "--repository", str(tmp_path),
         "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].split(" ->")[0] == "exported twin:tiny (seed 0)"
    # The result: the version, then its OpenVINO IR's parity; nothing else.
    assert len(lines) == 2 and lines[1].startswith("OpenVINO IR "), lines


def test_verbose_export_keeps_tensorflows_lines(tmp_path: Path) -> None:
    from serve.tflog import GLOG_LINE

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--source", "twin:tiny", "--repository", str(tmp_path),
         "--quiet", "--verbose"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert any(GLOG_LINE.match(line.encode()) for line in proc.stderr.splitlines()), proc.stderr


def test_stderr_filter_drops_only_glog_lines_and_passes_partial_lines_at_once() -> None:
    from serve.tflog import GLOG_LINE, _pump

    read_fd, write_fd = os.pipe()
    out_r, out_w = os.pipe()
    os.write(write_fd, b"I0000 00:00:1796052578.282127    6390 port.cc:153] oneDNN custom ops\n"
                       b"Traceback (most recent call last):\n"
                       b"E0000 00:00:1796052583.400482    6390 cuda_platform.cc:52] failed call\n"
                       b"\rexport: saving [00:01]")
    os.close(write_fd)
    _pump(read_fd, out_w, GLOG_LINE)
    os.close(out_w)
    with os.fdopen(out_r, "rb") as out:
        assert out.read() == b"Traceback (most recent call last):\n\rexport: saving [00:01]"
