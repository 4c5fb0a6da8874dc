"""k8s/overlays/cpu-openvino renders and serves the OpenVINO IR on CPU nodes on a current Triton
release, with the committed openvino_cpu configs of the model, its uint8 ensemble and its step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from k8s_tools import rendered
from tritonclient.grpc import model_config_pb2 as mc

from export import model_config

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "k8s" / "overlays" / "cpu-openvino"
REPOSITORY = ROOT / "model_repository"
CONFIG_NAME = "openvino_cpu"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return rendered(OVERLAY)


@pytest.fixture(scope="module")
def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def _flags(container: dict[str, Any], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]


def test_overlay_selects_the_openvino_config_on_a_current_triton(container: dict[str, Any]) -> None:
    assert _flags(container, "model-config-name") == [CONFIG_NAME]
    repo, tag = container["image"].split("@")[0].rsplit(":", 1)
    assert repo == "nvcr.io/nvidia/tritonserver" and tag.endswith("-py3")
    year, month = (int(x) for x in tag.split("-")[0].split("."))
    assert (year, month) > (25, 2)  # past the last release with the TensorFlow backend


def test_overlay_runs_on_cpu_nodes_only(docs: list[dict[str, Any]], container: dict[str, Any]) -> None:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    for section in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"][section]
    assert int(container["resources"]["requests"]["cpu"]) >= 2


def test_every_loaded_model_has_an_openvino_cpu_config_on_cpu(container: dict[str, Any]) -> None:
    """--exit-on-error with explicit loading: each model, ensemble step included, needs the variant."""
    loaded = set(_flags(container, "load-model"))
    assert {"pnasnet_large", "pnasnet_large_uint8", "pnasnet_large_uint8_to_float"} <= loaded
    for model in loaded:
        path = REPOSITORY / model / "configs" / f"{CONFIG_NAME}.pbtxt"
        assert path.is_file(), f"{model} has no committed {path.name}"
        cfg = model_config.read(path)
        steps = {s.model_name for s in cfg.ensemble_scheduling.step}
        assert steps <= loaded
        assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in cfg.instance_group)


def test_the_served_config_avoids_the_backends_batching_trap() -> None:
    cfg = model_config.read(REPOSITORY / "pnasnet_large" / "configs" / f"{CONFIG_NAME}.pbtxt")
    assert cfg.backend == "openvino" and not cfg.platform
    assert cfg.default_model_filename == "model.xml"
    # max_batch_size > 0 would fix the batch at max_batch_size: partial batches fail or get padded.
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims)[0] == -1 and list(cfg.output[0].dims)[0] == -1
    assert "ENABLE_BATCH_PADDING" not in cfg.parameters
    assert sum(g.count for g in cfg.instance_group) >= 2  # concurrency from instances instead
    assert cfg.version_policy.latest.num_versions == 1 and cfg.model_warmup


def test_parameters_are_ones_the_backend_reads_with_values_it_accepts() -> None:
    cfg = model_config.read(REPOSITORY / "pnasnet_large" / "configs" / f"{CONFIG_NAME}.pbtxt")
    for key, value in cfg.parameters.items():
        assert key in model_config.OPENVINO_BACKEND_PARAMETERS, key
        allowed = model_config.OPENVINO_BACKEND_PARAMETERS[key]
        text = value.string_value
        assert text and (allowed is None or text.upper() in allowed), (key, text)
    # Precision policy: OpenVINO's default (bf16 with native bf16, else f32), never forced bf16.
    assert "HINT_BF16" not in cfg.parameters
    # The backend shares one compiled model between instances: one stream per instance.
    assert cfg.parameters["NUM_STREAMS"].string_value == str(sum(g.count for g in cfg.instance_group))


def test_autoscaler_watches_the_served_model(docs: list[dict[str, Any]], container: dict[str, Any]) -> None:
    served = set(_flags(container, "load-model"))
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    watched = {m["pods"]["metric"]["selector"]["matchLabels"]["model"] for m in hpa["spec"]["metrics"]
               if m["type"] == "Pods"}
    assert watched and watched <= served
