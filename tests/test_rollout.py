"""A new version goes live on the running local server, under load, without a restart.

Version 1 serves while clients send requests over both payloads (float32 to the model, uint8 to
its ensemble, with and without `exact_versions`); version 2 is exported into the same repository
meanwhile, `python -m serve reload` makes the server load it, and the clients go on. Every answer
names the embedding model's version (`EmbeddingClient.infer_batch`); the vectors are checked
against each version's own output too, so a wrong label can't pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import EmbeddingClient
from client.embedding_client import STEP_VERSION_TTL
from client.retry import RetryPolicy
from serve.server import LocalTritonServer, Ports

ROOT = Path(__file__).resolve().parents[1]
MODEL = "pnasnet_large"


@dataclass
class Reply:
    transport: str
    phase: str
    version: str | None
    vector: np.ndarray | None
    error: str | None = None


class Phases:
    """before -> reloading -> after, as seen by the load threads."""

    def __init__(self) -> None:
        self.name = "before"


def _load(url: str, transport: str, image: Path, phases: Phases, stop: threading.Event,
          replies: list[Reply]) -> None:
    # No retries: a request that fails during the swap must show up as a failure.
    payload, exact = transport.removesuffix("-exact"), transport.endswith("-exact")
    with EmbeddingClient(url, MODEL, payload=payload, exact_versions=exact, timeout=60,
                         retry=RetryPolicy(attempts=1)) as client:
        while not stop.is_set():
            phase = phases.name
            try:
                answer = client.infer_batch([image])
                replies.append(Reply(transport, phase, answer.version, answer.vectors[0]))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                replies.append(Reply(transport, phase, None, None, f"{type(exc).__name__}: {exc}"))


def _export(repo: Path, seed: int) -> None:
    subprocess.run([sys.executable, "-m", "export", "--source", "twin:tiny", "--seed", str(seed),
                    "--repository", str(repo), "--model", MODEL, "--quiet"],
                   cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=300,
                   capture_output=True)


def _wait_for(predicate, timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_new_version_goes_live_under_load_without_failures(tmp_path: Path,
                                                           sample_images: list[Path]) -> None:
    repo = tmp_path / "repo"
    _export(repo, seed=1)
    ports = Ports.free()
    server = LocalTritonServer(repo, ports=ports, work_dir=tmp_path / "work")
    server.start(timeout=300)
    image = sample_images[0]
    phases, stop, replies = Phases(), threading.Event(), []
    threads = [threading.Thread(target=_load, args=(server.grpc_url, transport, image, phases, stop,
                                                    replies), daemon=True)
               for transport in ("float32", "float32", "uint8", "uint8-exact")]
    try:
        for t in threads:
            t.start()
        _wait_for(lambda: len(replies) >= 20)
        _export(repo, seed=2)  # version 2 lands beside version 1 while the load runs
        phases.name = "reloading"
        reload = subprocess.run(
            [sys.executable, "-m", "serve", "reload", "--url", server.grpc_url, "--model", MODEL],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
            timeout=600)
        phases.name = "after"
        start_after, reloaded_at = len(replies), time.monotonic()
        # Long enough for the client's cached ensemble-step version to expire and be asked again.
        _wait_for(lambda: sum(r.phase == "after" and r.transport == "uint8" for r in replies) >= 20
                  and len(replies) - start_after >= 60
                  and time.monotonic() - reloaded_at > STEP_VERSION_TTL + 1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop()
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert f"{MODEL}: now serves version 2 (was 1)" in reload.stdout

    counts = Counter((r.phase, r.transport, r.version) for r in replies)
    failures = [r.error for r in replies if r.error]
    print(f"\nrollout: {len(replies)} requests, {len(failures)} failed; by (phase, transport, "
          f"version): {dict(sorted(counts.items(), key=str))}")
    assert failures == []

    def vectors(transport: str, phase: str, version: str | None = None) -> list[np.ndarray]:
        return [r.vector for r in replies if r.transport == transport and r.phase == phase
                and (version is None or r.version == version)]

    # float32: each response names its version exactly; before the reload only 1, after only 2.
    assert {r.version for r in replies if r.transport == "float32" and r.phase == "before"} == {"1"}
    assert {r.version for r in replies if r.transport == "float32" and r.phase == "after"} == {"2"}
    v1, v2 = vectors("float32", "before")[0], vectors("float32", "after")[0]
    assert np.max(np.abs(v1 - v2)) > 1e-3, "the two versions should compute different embeddings"
    for version, reference in (("1", v1), ("2", v2)):
        for vec in (r.vector for r in replies if r.transport == "float32" and r.version == version):
            np.testing.assert_allclose(vec, reference, atol=1e-5)

    # uint8 through the ensemble: version 1's vectors before the reload, version 2's after it. The
    # label the client reports is learned from the server and cached for a few seconds
    # (`EmbeddingClient.embedding_step`), so it agrees once that cache has expired.
    before_u8, after_u8 = vectors("uint8", "before"), vectors("uint8", "after")
    assert before_u8 and after_u8
    for vec in before_u8:
        np.testing.assert_allclose(vec, v1, atol=1e-4)
    for vec in after_u8:
        np.testing.assert_allclose(vec, v2, atol=1e-4)
    assert {r.version for r in replies if r.transport == "uint8" and r.phase == "before"} == {"1"}
    assert [r.version for r in replies if r.transport == "uint8"][-1] == "2"

    # uint8 with exact_versions: no cache window. Every answer's label is the version whose
    # vectors it carries, before, during and right after the swap.
    exact = [r for r in replies if r.transport == "uint8-exact"]
    assert {r.version for r in exact} == {"1", "2"}
    assert {r.version for r in exact if r.phase == "after"} == {"2"}
    for r in exact:
        np.testing.assert_allclose(r.vector, {"1": v1, "2": v2}[r.version], atol=1e-4)


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(tmp_path: Path,
                                                                 sample_images: list[Path]) -> None:
    repo = tmp_path / "repo"
    _export(repo, seed=1)
    staged = repo / MODEL / ".staging-broken"  # Triton ignores folders that are not numbers
    (staged / "model.savedmodel").mkdir(parents=True)
    (staged / "model.savedmodel" / "saved_model.pb").write_bytes(b"not a SavedModel")
    server = LocalTritonServer(repo, ports=Ports.free(), work_dir=tmp_path / "work")
    try:
        server.start(timeout=300)
        staged.rename(repo / MODEL / "2")  # a version 2 that can't load appears
        reload = subprocess.run(
            [sys.executable, "-m", "serve", "reload", "--url", server.grpc_url, "--model", MODEL],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
            timeout=600)
        with EmbeddingClient(server.grpc_url, MODEL, retry=RetryPolicy(attempts=1)) as client:
            answer = client.infer_batch([sample_images[0]])
    finally:
        server.stop()
    assert reload.returncode == 1, reload.stdout + reload.stderr
    assert reload.stderr.startswith(f"serve reload: error: loading {MODEL} failed")
    assert "the server keeps serving version 1" in reload.stderr
    print(f"\nreload of a broken version: {reload.stderr.strip()}")
    assert answer.version == "1"
