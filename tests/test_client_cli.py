"""`python -m client`: a folder or glob into a .npy with an index of rows and failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client import EmbeddingClient
from client.cli import find_images, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def folder(tmp_path: Path, sample_images: list[Path]) -> Path:
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for path in sample_images:
        shutil.copy(path, root / path.name)
    shutil.copy(sample_images[0], root / "nested" / f"copy{sample_images[0].suffix}")
    (root / "nested" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("not an image, and not picked up: wrong suffix")
    return root


def test_embed_a_folder(folder: Path, tmp_path: Path, grpc_url: str,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "photos.npy"
    code = main(["embed", str(folder), "-o", str(out), "--url", grpc_url, "--payload", "uint8",
                 "--batch-size", "3"])
    captured = capsys.readouterr()
    assert code == 1  # one image failed; the rest were written
    paths = find_images([str(folder)])
    index = json.loads(out.with_suffix(".index.json").read_text())
    vectors = np.load(out)
    assert vectors.shape == (len(paths) - 1, 4320) and vectors.dtype == np.float32
    assert index["payload"] == "uint8" and index["served_by"] == "pnasnet_large_uint8"
    assert [f["path"] for f in index["failures"]] == [str(folder / "nested" / "broken.jpg")]
    assert index["failures"][0]["type"] == "InvalidImageError"
    assert "not an image" in index["failures"][0]["error"]
    assert len(index["rows"]) == len(vectors) and str(folder / "notes.txt") not in index["rows"]
    with EmbeddingClient(grpc_url) as c:
        np.testing.assert_allclose(vectors, c.embed_batch(index["rows"]), rtol=1e-4, atol=1e-4)
    assert f"embedded {len(vectors)} of {len(paths)} images" in captured.out
    assert "broken.jpg" in captured.err and "100%" in captured.err  # failure listed, progress bar


def test_embed_a_glob_normalized(folder: Path, tmp_path: Path, grpc_url: str) -> None:
    out = tmp_path / "jpgs.npy"
    code = main(["embed", str(folder / "*.png"), "-o", str(out), "--url", grpc_url,
                 "--normalize", "--no-progress", "--index", str(tmp_path / "idx.json")])
    assert code == 0
    rows = json.loads((tmp_path / "idx.json").read_text())["rows"]
    assert rows and all(r.endswith(".png") for r in rows)
    np.testing.assert_allclose(np.linalg.norm(np.load(out), axis=1), 1.0, rtol=1e-5)


def test_nothing_to_embed_or_no_server(tmp_path: Path, folder: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(tmp_path / "missing*.jpg"), "-o", str(tmp_path / "x.npy")]) == 2
    from serve.server import free_port

    code = main(["embed", str(folder), "-o", str(tmp_path / "y.npy"), "--no-progress",
                 "--url", f"127.0.0.1:{free_port()}", "--retries", "1"])
    assert code == 2 and "ServerUnavailableError" in capsys.readouterr().err
    assert not (tmp_path / "y.npy").exists()


def test_health_command(grpc_url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "client", "health", "--url", grpc_url,
                           "--payload", "uint8", "--wait", "30"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model_ready"] and report["models"]["pnasnet_large_uint8"]
