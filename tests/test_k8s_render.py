"""Every kustomization under k8s/ renders, and the output validates offline against real schemas.

Built-in kinds are checked by kubernetes-validate (strict: unknown fields fail) against the oldest
and the newest Kubernetes release the bundle supports. The prometheus-operator kinds (PodMonitor)
have no schema there; k8s/checks/validate_crds.py checks them against Pydantic models generated
from the prometheus-operator CRDs (types, required fields, no undefined fields).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from k8s_tools import KUSTOMIZATIONS, TRITON_OVERLAYS, render, tool
from k8s_tools import load_yaml as documents

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
NAMESPACE = "pnasnet"
# Oldest supported release (README prerequisites) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
CRD_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
# YAML is parsed by PyYAML in .venv-k8s (the project's own .venv does not carry a YAML library).
def dump(*docs: dict[str, Any]) -> str:
    """A YAML stream of the given objects (JSON documents are valid YAML)."""
    return "".join(f"---\n{json.dumps(d)}\n" for d in docs)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of `kind` (and `name`) in a rendered stream."""
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each kustomization rendered once into a file."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for name, directory in KUSTOMIZATIONS.items():
        files[name] = out / f"{name}.yaml"
        files[name].write_text(render(directory))
    return files


def kubernetes_validate(files: list[Path], version: str) -> tuple[int, list[str]]:
    """Run kubernetes-validate --strict; return its exit code and output lines."""
    done = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", version, *map(str, files)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, (done.stdout + done.stderr).splitlines()


def validate_crds(files: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    """Run k8s/checks/validate_crds.py in .venv-k8s; return its exit code and per-resource results."""
    done = subprocess.run([tool("python"), str(K8S / "checks" / "validate_crds.py"), *map(str, files)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), f"validate_crds.py could not run:\n{done.stderr}"
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line]


def test_every_kustomization_in_the_tree_is_checked() -> None:
    """A new overlay or Job folder can't escape the checks below by being left off the list."""
    found = {p.parent for p in K8S.rglob("kustomization.yaml")}
    components = {p.parent for p in K8S.rglob("kustomization.yaml")
                  if "kind: Component" in p.read_text()}
    listed = set(KUSTOMIZATIONS.values()) | {K8S / "base", K8S / "jobs-common"}
    assert found - components - listed == set()


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomization_renders_in_one_namespace(rendered: dict[str, Path], name: str) -> None:
    docs = documents(rendered[name].read_text())
    assert docs, f"{name} rendered nothing"
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("name", TRITON_OVERLAYS)
def test_triton_overlays_ship_the_whole_serving_stack(rendered: dict[str, Path], name: str) -> None:
    kinds = sorted(d["kind"] for d in documents(rendered[name].read_text()))
    expected = ["Deployment", "HorizontalPodAutoscaler", "Namespace", "NetworkPolicy",
                "PodDisruptionBudget", "PodMonitor", "Service", "Service", "ServiceAccount",
                "PrometheusRule", "ConfigMap"]  # alerts, and the Grafana dashboard
    if name in ("s3", "gcs"):
        expected.append("ConfigMap")  # the repository URL
    else:
        expected.append("PersistentVolumeClaim")
    assert kinds == sorted(expected)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(rendered: dict[str, Path], version: str) -> None:
    files = list(rendered.values())
    code, lines = kubernetes_validate(files, version)
    assert code == 0, "\n".join(line for line in lines if not line.startswith("INFO"))
    passed = [line for line in lines if line.startswith("INFO") and " passed for resource " in line]
    warned = [line for line in lines if line.startswith("WARN")]
    expected_builtin = sum(d["kind"] not in CRD_KINDS for f in files for d in documents(f.read_text()))
    expected_crds = sum(d["kind"] in CRD_KINDS for f in files for d in documents(f.read_text()))
    # Every built-in resource was checked; the only ones without a schema are the CRD kinds.
    assert len(passed) == expected_builtin
    assert len(warned) == expected_crds
    crd = r"kind (PodMonitor|ServiceMonitor|PrometheusRule) with api version monitoring\.coreos\.com/"
    assert all(re.search(crd, w) for w in warned), warned


def test_schema_validation_rejects_a_broken_deployment(rendered: dict[str, Path], tmp_path: Path) -> None:
    docs = documents(rendered["gpu"].read_text())
    deployment = copy.deepcopy(find(docs, "Deployment", "triton"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["containerPort"] = "8000"  # a string where an integer belongs
    broken = tmp_path / "broken-type.yaml"
    broken.write_text(dump(deployment))
    code, lines = kubernetes_validate([broken], KUBERNETES_VERSIONS[-1])
    assert code != 0
    assert any(line.startswith("ERROR") and "containerPort" in line for line in lines), lines

    deployment = copy.deepcopy(find(docs, "Deployment", "triton"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # a typo
    typo = tmp_path / "broken-field.yaml"
    typo.write_text(dump(deployment))
    code, lines = kubernetes_validate([typo], KUBERNETES_VERSIONS[-1])
    assert code != 0
    assert any(line.startswith("ERROR") and "imagePullPolicyy" in line for line in lines), lines


def test_monitoring_resources_conform_to_the_prometheus_operator_crds(rendered: dict[str, Path]) -> None:
    code, results = validate_crds(list(rendered.values()))
    assert code == 0, results
    checked = {(Path(r["file"]).stem, r["kind"]) for r in results}
    assert checked == {(name, kind) for name in TRITON_OVERLAYS for kind in ("PodMonitor", "PrometheusRule")}
    assert all(r["errors"] == [] for r in results)



def crd_errors(tmp_path: Path, **docs: dict) -> dict[str, list[str]]:
    """Validate each document against its CRD; the errors by the document's keyword name."""
    files = []
    for label, doc in docs.items():
        files.append(tmp_path / f"{label}.yaml")
        files[-1].write_text(dump(doc))
    code, results = validate_crds(files)
    assert code == 1
    return {Path(r["file"]).stem: r["errors"] for r in results}

def test_crd_validation_rejects_broken_monitors(rendered: dict[str, Path], tmp_path: Path) -> None:
    monitor = find(documents(rendered["gpu"].read_text()), "PodMonitor")

    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    wrong = copy.deepcopy(monitor)
    wrong["spec"]["podMetricsEndpoints"][0]["port"] = 8002  # the CRD wants the port's name
    del wrong["spec"]["selector"]
    errors = crd_errors(tmp_path, typo=typo, wrong=wrong)
    assert errors["typo"] == ["spec.podMetricsEndpoints[0].intervall: field not defined by the CRD"]
    assert any(e.startswith("spec.podMetricsEndpoints.0.port:") for e in errors["wrong"])
    assert any(e.startswith("spec.selector:") for e in errors["wrong"])


def test_crd_validation_rejects_a_broken_prometheus_rule(rendered: dict[str, Path],
                                                          tmp_path: Path) -> None:
    rule = find(documents(rendered["gpu"].read_text()), "PrometheusRule")
    alert = next(i for i, r in enumerate(rule["spec"]["groups"][0]["rules"]) if "alert" in r)
    typo = copy.deepcopy(rule)
    typo["spec"]["groups"][0]["rules"][alert]["labelz"] = {"severity": "critical"}
    wrong = copy.deepcopy(rule)
    wrong["spec"]["groups"][0]["rules"][alert]["for"] = "five minutes"  # not a Prometheus duration
    del wrong["spec"]["groups"][0]["name"]
    errors = crd_errors(tmp_path, typo=typo, wrong=wrong)
    assert errors["typo"] == [f"spec.groups[0].rules[{alert}].labelz: field not defined by the CRD"]
    assert any(e.startswith(f"spec.groups.0.rules.{alert}.for:") for e in errors["wrong"]), errors["wrong"]
    assert any(e.startswith("spec.groups.0.name:") for e in errors["wrong"]), errors["wrong"]


def test_the_list_of_loaded_models_takes_a_one_line_patch(tmp_path: Path) -> None:
    """An overlay appends a model (e.g. another ensemble) without restating the others."""
    overlay = tmp_path / "with-ensemble"
    overlay.mkdir()
    base = os.path.relpath(K8S / "overlays" / "gpu", overlay)
    (overlay / "kustomization.yaml").write_text(f"""\
resources:
  - {base}
patches:
  - target: {{kind: Deployment, name: triton}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --load-model=another_model
""")
    deployment = find(documents(render(overlay)), "Deployment", "triton")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--load-model=")] == [
        "--load-model=pnasnet_large", "--load-model=pnasnet_large_uint8_to_float",
        "--load-model=pnasnet_large_uint8", "--load-model=another_model"]


@pytest.mark.parametrize("name", ["s3", "gcs"])
def test_object_storage_overlays_replace_the_volume(rendered: dict[str, Path], name: str) -> None:
    docs = documents(rendered[name].read_text())
    pod = find(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert all(v.get("persistentVolumeClaim") is None for v in pod["volumes"])
    assert all(m["mountPath"] != "/models" for m in container["volumeMounts"])
    (env,) = [e for e in container["env"] if e["name"] == "MODEL_REPOSITORY"]
    ref = env["valueFrom"]["configMapKeyRef"]
    url = find(docs, "ConfigMap", ref["name"])["data"][ref["key"]]  # the hashed generated name
    assert url.startswith({"s3": "s3://", "gcs": "gs://"}[name])
    if name == "s3":
        assert container["envFrom"] == [{"secretRef": {"name": "triton-s3-credentials"}}]
    else:
        (cred,) = [e["value"] for e in container["env"] if e["name"] == "GOOGLE_APPLICATION_CREDENTIALS"]
        (mount,) = [m for m in container["volumeMounts"] if cred.startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "triton-gcs-credentials"
