"""k8s/overlays/gpu-onnx renders and serves the ONNX model on a current Triton release, with a
writable volume where its config caches TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from k8s_tools import rendered

from export import onnx as onnx_path
from export.signature import Interface

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "k8s" / "overlays" / "gpu-onnx"
IFACE = Interface("images", (331, 331, 3), "embedding", (4320,))
@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return rendered(OVERLAY)


@pytest.fixture(scope="module")
def triton(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def test_overlay_loads_only_the_onnx_model(triton: dict[str, Any]) -> None:
    (container,) = triton["spec"]["template"]["spec"]["containers"]
    loads = [a for a in container["args"] if a.startswith("--load-model=")]
    assert loads == [f"--load-model={onnx_path.onnx_model_name('pnasnet_large')}"]
    # The default config.pbtxt is the TensorRT one: no alternative config is selected.
    assert not [a for a in container["args"] if a.startswith("--model-config-name")]


def test_overlay_runs_a_triton_release_after_the_tensorflow_backend(triton: dict[str, Any]) -> None:
    (container,) = triton["spec"]["template"]["spec"]["containers"]
    repo, tag = container["image"].split("@")[0].rsplit(":", 1)
    assert repo == "nvcr.io/nvidia/tritonserver"
    year, month = (int(x) for x in tag.split("-")[0].split("."))
    assert (year, month) > (25, 2) and tag.endswith("-py3")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_engine_cache_path_is_a_writable_volume(triton: dict[str, Any]) -> None:
    spec = triton["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    cfg = onnx_path.gpu_trt_config(onnx_path.onnx_model_name("pnasnet_large"), IFACE)
    (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    cache = accel.parameters["trt_engine_cache_path"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    (mount,) = [m for path, m in mounts.items() if cache.startswith(path.rstrip("/") + "/")]
    assert not mount.get("readOnly", False)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # hence the volume


def test_startup_probe_allows_for_engine_building(triton: dict[str, Any]) -> None:
    (container,) = triton["spec"]["template"]["spec"]["containers"]
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 1800


def test_autoscaler_watches_the_served_model(docs: list[dict[str, Any]], triton: dict[str, Any]) -> None:
    (container,) = triton["spec"]["template"]["spec"]["containers"]
    served = {a.split("=", 1)[1] for a in container["args"] if a.startswith("--load-model=")}
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    watched = {m["pods"]["metric"]["selector"]["matchLabels"]["model"] for m in hpa["spec"]["metrics"]
               if m["type"] == "Pods"}
    assert watched and watched <= served
