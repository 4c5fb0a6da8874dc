"""Shared fixtures: one exported twin repository and one real local Triton server per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL = "pnasnet_large"


@pytest.fixture(scope="session")
def exported_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding version 1 of the tiny twin (same interface as the hub model)."""
    from export.pipeline import export_model

    repo = tmp_path_factory.mktemp("repository")
    export_model("twin:tiny", repo, MODEL)
    return repo


@pytest.fixture(scope="session")
def server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The real bundled tritonserver on free loopback ports, serving `exported_repo` on CPU."""
    from serve.server import LocalTritonServer, Ports

    srv = LocalTritonServer(exported_repo, ports=Ports.free(),
                            work_dir=tmp_path_factory.mktemp("triton"))
    srv.start(timeout=300)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def grpc_url(server) -> str:  # noqa: ANN001
    return server.grpc_url


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    from samples import sample_paths

    return sample_paths()
