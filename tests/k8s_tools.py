"""Shared by the Kubernetes tests: the real tools (kubectl kustomize, .venv-k8s) and YAML parsing.

A missing tool fails the test that needs it, never skips it: `make test` builds .venv-k8s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
TOOLS = REPO / ".venv-k8s" / "bin"
# Every kustomization the checks render (a test fails when one in the tree is missing here).
TRITON_OVERLAYS = ["gpu", "gpu-trt", "cpu", "s3", "gcs", "gpu-onnx", "cpu-openvino"]
KUSTOMIZATIONS = {
    **{name: K8S / "overlays" / name for name in TRITON_OVERLAYS},
    "export": K8S / "export",
    "rollback": K8S / "rollback",
    "loadtest": K8S / "loadtest",
    "tftrt": K8S / "tftrt",
}
# YAML is parsed by PyYAML in .venv-k8s (the project's own .venv does not carry a YAML library).
YAML_TO_JSON = ("import json, sys, yaml; "
                "json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)")


def tool(name: str) -> str:
    """Path of a checking tool; a missing tool fails the test (never skips it)."""
    if name == "kubectl":
        found = shutil.which("kubectl")
        if not found:
            pytest.fail("kubectl (with kustomize) is not on PATH; it is needed to render k8s/")
        return found
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test` (target k8s-tools builds .venv-k8s)")
    return str(path)


def render(directory: Path) -> str:
    """`kubectl kustomize DIR`: the manifests a `kubectl apply -k DIR` would send."""
    done = subprocess.run([tool("kubectl"), "kustomize", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kustomize failed for {directory}:\n{done.stderr}"
    return done.stdout


def load_yaml(text: str) -> list[Any]:
    """The non-empty documents of a YAML stream."""
    done = subprocess.run([tool("python"), "-c", YAML_TO_JSON], input=text,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rendered(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIR` renders."""
    return load_yaml(render(directory))
