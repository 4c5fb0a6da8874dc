"""Security and policy scan: checkov over every rendered kustomization and the Dockerfile.

Checkov runs once (module fixture), offline (no API key, no policy download, no version check) and
with no skips at all. Each failed check must then be accepted, with its reason, in
k8s/checkov-skips.yaml, and each accepted entry must still match a failure.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from k8s_tools import KUSTOMIZATIONS, load_yaml, render, tool

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
SKIPS = K8S / "checkov-skips.yaml"
# Environment for an offline scan: no platform key, no mapping/guideline download, no PyPI check.
OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
PLATFORM_VARIABLES = ("BC_API_KEY", "PRISMA_API_URL", "BC_API_URL", "CKV_API_KEY")


def insecure_variant(rendered_gpu: str) -> str:
    """The GPU Deployment with its hardening undone, as a YAML stream."""
    (deployment,) = [d for d in load_yaml(rendered_gpu) if d["kind"] == "Deployment"]
    deployment = copy.deepcopy(deployment)
    deployment["metadata"]["name"] = "triton-insecure"
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    del pod["securityContext"]
    container = pod["containers"][0]
    container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True,
                                    "readOnlyRootFilesystem": False}
    del container["resources"]["limits"]["memory"]
    return f"---\n{json.dumps(deployment)}\n"


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over all renders, the Dockerfile and a deliberately insecure variant."""
    root = tmp_path_factory.mktemp("checkov")
    (root / "rendered").mkdir()
    (root / "negative").mkdir()
    for name, directory in KUSTOMIZATIONS.items():
        (root / "rendered" / f"{name}.yaml").write_text(render(directory))
    (root / "negative" / "insecure.yaml").write_text(
        insecure_variant((root / "rendered" / "gpu.yaml").read_text()))
    (root / "image").mkdir()
    shutil.copyfile(REPO / "Dockerfile", root / "image" / "Dockerfile")

    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARIABLES} | OFFLINE
    command = [tool("checkov"), "--compact", "--skip-download", "--output", "json",
               "--framework", "kubernetes", "dockerfile",
               "--directory", str(root)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root, env=env)
    assert done.returncode in (0, 1), f"checkov did not run:\n{done.stderr[-4000:]}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]

    failures: list[dict[str, str]] = []
    passed: dict[str, int] = {}
    for report in reports:
        results = report["results"]
        for check in results["failed_checks"]:
            file = Path(check["file_abs_path"])
            origin = "Dockerfile" if file.name == "Dockerfile" else file.parent.name
            failures.append({"check": check["check_id"], "origin": origin, "file": file.stem,
                             "resource": "Dockerfile" if origin == "Dockerfile" else check["resource"]})
        for check in results["passed_checks"]:
            file = Path(check["file_abs_path"])
            passed[file.stem] = passed.get(file.stem, 0) + 1
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return {"failures": failures, "passed": passed, "types": {r["check_type"] for r in reports}}


@pytest.fixture(scope="module")
def skips() -> list[dict[str, Any]]:
    """Accepted findings from k8s/checkov-skips.yaml."""
    (document,) = load_yaml(SKIPS.read_text())
    return document["skips"]


def test_checkov_scanned_every_render_and_the_dockerfile(scan: dict[str, Any]) -> None:
    assert scan["types"] == {"kubernetes", "dockerfile"}
    for name in [*KUSTOMIZATIONS, "Dockerfile"]:
        assert scan["passed"].get(name, 0) >= 10, f"checkov checked too little of {name}: {scan['passed']}"


def test_every_failed_check_is_an_accepted_skip(scan: dict[str, Any], skips: list[dict[str, Any]]) -> None:
    accepted = {(s["check"], r) for s in skips for r in s["resources"]}
    unexplained = sorted({(f["check"], f["resource"], f["file"]) for f in scan["failures"]
                          if f["origin"] != "negative" and (f["check"], f["resource"]) not in accepted})
    assert unexplained == [], "checkov failures not accepted in k8s/checkov-skips.yaml"


def test_every_skip_has_a_reason_and_is_still_needed(scan: dict[str, Any],
                                                     skips: list[dict[str, Any]]) -> None:
    found = {(f["check"], f["resource"]) for f in scan["failures"] if f["origin"] != "negative"}
    for skip in skips:
        assert len(skip["reason"].split()) >= 15, f"{skip['check']}: the reason must say why"
        for resource in skip["resources"]:
            assert (skip["check"], resource) in found, f"stale skip {skip['check']} for {resource}"


def test_checkov_fails_an_insecure_variant(scan: dict[str, Any]) -> None:
    failed = {f["check"] for f in scan["failures"] if f["origin"] == "negative"}
    expected = {
        "CKV_K8S_16",  # privileged container
        "CKV_K8S_19",  # host network
        "CKV_K8S_20",  # privilege escalation
        "CKV_K8S_22",  # writable root filesystem
        "CKV_K8S_13",  # no memory limit
    }
    assert expected <= failed, sorted(failed)
