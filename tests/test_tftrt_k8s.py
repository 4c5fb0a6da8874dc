"""k8s/tftrt: one Job writes the TF-TRT model's config with the project image, then converts in
NVIDIA's TensorFlow 25.02 image on a GPU node; both command lines parse with `export.tftrt`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from k8s_tools import rendered

from export import tftrt

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return rendered(ROOT / "k8s" / "tftrt")


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) substitution in args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def test_job_writes_the_config_then_converts_on_a_gpu(docs: list[dict[str, Any]]) -> None:
    env = _one(docs, "ConfigMap")["data"]
    spec = _one(docs, "Job")["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    assert list(init) == ["source", "config"]
    config = init["config"]
    assert config["command"] == ["python", "-m", "export.tftrt"]
    parsed = tftrt.build_parser().parse_args(_expand(config["args"], env))
    assert parsed.command == "config" and str(parsed.repository) == "/models"

    (convert,) = spec["containers"]
    assert convert["image"].startswith(tftrt.NGC_TENSORFLOW_IMAGE.rsplit(":", 1)[0] + ":25.02-")
    assert convert["args"][:3] == ["python", "-m", "export.tftrt"]
    inner = tftrt.build_parser().parse_args(_expand(convert["args"][3:], env))
    assert inner.command == "convert"
    assert (inner.model, inner.precision, inner.batch_sizes) == (
        parsed.model, parsed.precision, parsed.batch_sizes)
    assert inner.precision in tftrt.PRECISIONS
    assert convert["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_convert_container_gets_the_export_code_and_the_repository(docs: list[dict[str, Any]]) -> None:
    spec = _one(docs, "Job")["spec"]["template"]["spec"]
    source = spec["initContainers"][0]
    (convert,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in convert["env"]}
    src_mount = {m["name"]: m["mountPath"] for m in source["volumeMounts"]}["src"]
    assert source["command"][-1].rstrip("/") == src_mount
    mounts = {m["name"]: m["mountPath"] for m in convert["volumeMounts"]}
    assert env["PYTHONPATH"] == mounts["src"] == src_mount
    assert mounts["model-repository"] == "/models"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-repository"]["persistentVolumeClaim"]["claimName"] == "model-repository"
    for c in [*spec["initContainers"], convert]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_job_pods_accept_no_ingress(docs: list[dict[str, Any]]) -> None:
    labels = _one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    def selects(policy: dict[str, Any]) -> bool:
        sel = policy["spec"]["podSelector"]
        if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
            return False
        return all(labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))

    (mine,) = [p for p in policies if selects(p)]
    assert mine["spec"]["policyTypes"] == ["Ingress"] and not mine["spec"].get("ingress")
