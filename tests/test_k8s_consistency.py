"""The manifests agree with the model repository, the client, the export CLI, Locust and the image.

Model configs are read as real `ModelConfig` protobufs; Locust's and the export CLI's own argument
parsers read the rendered command lines; the rollback script runs for real on a scratch repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.protobuf import text_format
from k8s_tools import load_yaml, tool
from tritonclient.grpc import model_config_pb2 as mc

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
TOOLS = REPO / ".venv-k8s" / "bin"
MODEL_DIR = REPO / "model_repository" / "pnasnet_large"
TRITON_OVERLAYS = ["gpu", "gpu-trt", "cpu", "s3", "gcs"]
PVC_OVERLAYS = ["gpu", "gpu-trt", "cpu"]
# Which alternative config each overlay selects (None: the default config.pbtxt).
CONFIG_NAME = {"gpu": None, "gpu-trt": "trt_fp16", "cpu": "tf_cpu", "s3": None, "gcs": None}
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
PROJECT_IMAGE = "pnasnet-embeddings"
# Restricted API categories Triton 25.02 accepts (RESTRICTED_CATEGORY_NAMES in the server source).
TRITON_RESTRICTED_CATEGORIES = {"health", "metadata", "inference", "shared-memory", "model-config",
                                "model-repository", "statistics", "trace", "logging"}


class Rendered:
    """The objects of one rendered kustomization, with lookups used across the checks."""

    def __init__(self, directory: Path) -> None:
        done = subprocess.run([tool("kubectl"), "kustomize", str(directory)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"kustomize failed for {directory}:\n{done.stderr}"
        self.docs: list[dict[str, Any]] = load_yaml(done.stdout)

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        """The single object of `kind` (and `name`)."""
        hits = [d for d in self.docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
        assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
        return hits[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind`."""
        return [d for d in self.docs if d["kind"] == kind]

    def container(self, kind: str, name: str) -> dict[str, Any]:
        """The first container of a workload's pod template."""
        return self.get(kind, name)["spec"]["template"]["spec"]["containers"][0]

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        """A container's environment as the kubelet builds it (envFrom ConfigMaps, then env values)."""
        values: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                values.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
        for item in container.get("env", []):
            if "value" in item:
                values[item["name"]] = item["value"]
            elif "configMapKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["configMapKeyRef"]
                values[item["name"]] = self.get("ConfigMap", ref["name"])["data"][ref["key"]]
        return values

    def expanded_args(self, container: dict[str, Any]) -> list[str]:
        """command + args with $(VAR) references expanded from the environment, like the kubelet."""
        env = self.env(container)
        words = container.get("command", []) + container.get("args", [])
        return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), w) for w in words]


@pytest.fixture(scope="module")
def render() -> dict[str, Rendered]:
    """Every kustomization, rendered once."""
    dirs = {**{n: K8S / "overlays" / n for n in TRITON_OVERLAYS},
            "export": K8S / "export", "rollback": K8S / "rollback", "loadtest": K8S / "loadtest"}
    return {name: Rendered(path) for name, path in dirs.items()}


def triton_flags(rendered: Rendered) -> dict[str, list[str]]:
    """Triton's command-line flags: name -> values (a flag may repeat, e.g. --load-model)."""
    container = rendered.container("Deployment", "triton")
    assert "command" not in container  # the image's entrypoint runs the args
    program, *args = container["args"]
    assert program == "tritonserver"
    flags: dict[str, list[str]] = {}
    for arg in args:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        flags.setdefault(name, []).append(value)
    return flags


def read_config(name: str | None) -> mc.ModelConfig:
    """A committed model config (default or configs/<name>.pbtxt) as a ModelConfig protobuf."""
    path = MODEL_DIR / ("config.pbtxt" if name is None else f"configs/{name}.pbtxt")
    assert path.is_file(), f"{path} is missing (the export code writes and commits it)"
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def run_python(code: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """Run `code` in the project interpreter; return the JSON it prints."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Model repository


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_triton_loads_the_model_the_repository_and_the_client_name(render: dict[str, Rendered],
                                                                    overlay: str) -> None:
    from client.embedding_client import DEFAULT_MODEL

    flags = triton_flags(render[overlay])
    config = read_config(CONFIG_NAME[overlay])
    assert config.name == MODEL_DIR.name == DEFAULT_MODEL
    assert flags["load-model"][0] == config.name
    assert flags["model-control-mode"] == ["explicit"]


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_every_loaded_model_exists_with_its_ensemble_steps(render: dict[str, Rendered],
                                                           overlay: str) -> None:
    """Explicit loading with --exit-on-error: a missing model or ensemble step stops the pod."""
    flags = triton_flags(render[overlay])
    loaded = set(flags["load-model"])
    assert {"pnasnet_large", "pnasnet_large_uint8", "pnasnet_large_uint8_to_float"} <= loaded
    config_name = CONFIG_NAME[overlay]
    for model in loaded:
        model_dir = REPO / "model_repository" / model
        path = model_dir / "configs" / f"{config_name}.pbtxt" if config_name else None
        if path is None or not path.exists():
            path = model_dir / "config.pbtxt"
        assert path.exists(), f"{overlay} loads {model}, which has no committed config"
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        steps = {step.model_name for step in config.ensemble_scheduling.step}
        assert steps <= loaded, f"{overlay}: ensemble {model} needs {steps - loaded} loaded"


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_each_overlay_selects_an_existing_config_for_its_hardware(render: dict[str, Rendered],
                                                                   overlay: str) -> None:
    flags = triton_flags(render[overlay])
    name = CONFIG_NAME[overlay]
    assert flags.get("model-config-name", [None]) == [name]
    config = read_config(name)
    # Kubernetes serves with the TensorFlow backend; configs/cpu.pbtxt (Python backend) is local-only.
    assert config.platform == "tensorflow_savedmodel"
    kinds = {group.kind for group in config.instance_group}
    resources = render[overlay].container("Deployment", "triton")["resources"]
    pod = render[overlay].get("Deployment", "triton")["spec"]["template"]["spec"]
    if overlay == "cpu":
        assert kinds == {mc.ModelInstanceGroup.KIND_CPU}
        assert "nvidia.com/gpu" not in resources["limits"]
        assert "nodeSelector" not in pod and "tolerations" not in pod
    else:
        assert kinds == {mc.ModelInstanceGroup.KIND_GPU}
        gpus = sum(group.count for group in config.instance_group)
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
        assert gpus >= 1
        assert pod["nodeSelector"] and pod["tolerations"]
    if overlay == "gpu-trt":
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert [a.name for a in accelerators] == ["tensorrt"]


@pytest.mark.parametrize("name", [None, "trt_fp16", "tf_cpu"])
def test_served_configs_keep_one_version_and_warm_up(name: str | None) -> None:
    """Rollout and rollback restart pods onto the newest version: that needs `latest 1`."""
    config = read_config(name)
    assert config.version_policy.WhichOneof("policy_choice") in (None, "latest")
    assert config.version_policy.latest.num_versions in (0, 1)  # 0: unset, Triton's default is 1
    assert len(config.model_warmup) >= 1


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_startup_probe_covers_model_load_and_warmup(render: dict[str, Rendered], overlay: str) -> None:
    container = render[overlay].container("Deployment", "triton")
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    warmups = len(read_config(CONFIG_NAME[overlay]).model_warmup)
    # Ten minutes at least, and more for TF-TRT, which builds an engine per warmed-up batch size.
    assert budget >= 600 + 300 * (warmups - 1)
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


@pytest.mark.parametrize("overlay", PVC_OVERLAYS)
def test_triton_and_the_model_jobs_share_the_repository_at_one_path(render: dict[str, Rendered],
                                                                     overlay: str) -> None:
    triton = render[overlay]
    container = triton.container("Deployment", "triton")
    repository = triton.env(container)["MODEL_REPOSITORY"]
    assert repository == "/models"
    assert f"--model-repository={repository}" in triton.expanded_args(container)
    claim = triton.get("PersistentVolumeClaim")["metadata"]["name"]

    def mount_of(rendered: Rendered, kind: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        pod = rendered.get(kind, name)["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
        return volume["persistentVolumeClaim"], mount

    source, mount = mount_of(triton, "Deployment", "triton")
    assert source == {"claimName": claim, "readOnly": True}
    assert mount["mountPath"] == repository and mount["readOnly"] is True
    for job, name in (("export", "pnasnet-export"), ("rollback", "pnasnet-rollback")):
        source, mount = mount_of(render[job], "Job", name)
        assert source["claimName"] == claim and not source.get("readOnly")
        assert mount["mountPath"] == repository and not mount.get("readOnly")
    assert "ReadWriteMany" in triton.get("PersistentVolumeClaim")["spec"]["accessModes"]


def test_export_job_command_line_parses_with_the_export_cli(render: dict[str, Rendered]) -> None:
    export = render["export"]
    words = export.expanded_args(export.container("Job", "pnasnet-export"))
    assert words[:3] == ["python", "-m", "export"]
    parsed = run_python(
        "import json, sys\n"
        "from export.cli import build_parser\n"
        "a = build_parser().parse_args(sys.argv[1:])\n"
        "print(json.dumps({'source': a.source, 'repository': str(a.repository), 'model': a.model}))",
        *words[3:], cwd=REPO)
    assert parsed == {"source": "https://tfhub.dev/google/imagenet/pnasnet_large/feature_vector/5",
                      "repository": "/models", "model": read_config(None).name}


def test_rollback_job_names_the_served_model(render: dict[str, Rendered]) -> None:
    rollback = render["rollback"]
    container = rollback.container("Job", "pnasnet-rollback")
    env = rollback.env(container)
    assert env["MODEL_NAME"] == read_config(None).name
    assert env["MODEL_REPOSITORY"] == "/models"
    assert container["command"] == ["sh", "/scripts/retire-version.sh"]
    pod = rollback.get("Job", "pnasnet-rollback")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    script = rollback.get("ConfigMap", volume["configMap"]["name"])["data"]["retire-version.sh"]
    assert script == (K8S / "rollback" / "retire-version.sh").read_text()


def run_rollback(repository: Path, version: str = "latest") -> subprocess.CompletedProcess[str]:
    """The rollback Job's script, run with sh on a scratch repository."""
    env = {"PATH": os.environ["PATH"], "MODEL_REPOSITORY": str(repository),
           "MODEL_NAME": "pnasnet_large", "ROLLBACK_VERSION": version}
    return subprocess.run(["sh", str(K8S / "rollback" / "retire-version.sh")], env=env,
                          capture_output=True, text=True, timeout=60)


def test_rollback_retires_the_newest_version_and_refuses_to_empty_the_model(tmp_path: Path) -> None:
    model = tmp_path / "pnasnet_large"
    for sub in ("1", "2", "10", "configs", ".staging-1-abc", "010"):
        (model / sub).mkdir(parents=True)
    (model / "10" / "model.savedmodel").mkdir()

    done = run_rollback(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "newest version now 2" in done.stdout
    assert sorted(p.name for p in model.iterdir()) == [".staging-1-abc", "010", "1", "2", "configs"]
    (retired,) = (tmp_path / ".retired" / "pnasnet_large").iterdir()
    assert retired.name.startswith("10-") and (retired / "model.savedmodel").is_dir()

    missing = run_rollback(tmp_path, "7")
    assert missing.returncode == 1 and "version '7' not found" in missing.stderr

    assert run_rollback(tmp_path, "1").returncode == 0  # an older version may be retired too
    last = run_rollback(tmp_path)
    assert last.returncode == 1 and "refusing" in last.stderr
    assert (model / "2").is_dir()


# ---------------------------------------------------------------------------------------------
# Triton flags, ports, services, policies


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_triton_runs_with_production_flags(render: dict[str, Rendered], overlay: str) -> None:
    flags = triton_flags(render[overlay])
    assert flags["strict-readiness"] == ["true"]
    assert flags["exit-on-error"] == ["true"]
    assert flags["disable-auto-complete-config"] == [""]
    age = int(flags["grpc-max-connection-age"][0])
    assert 60_000 <= age <= 3_600_000  # milliseconds: connections rebalance within the hour
    assert int(flags["grpc-max-connection-age-grace"][0]) > 0
    restricted = {}
    for flag in ("grpc-restricted-protocol", "http-restricted-api"):
        (value,) = flags[flag]
        categories, _, header = value.partition(":")  # Triton's form <categories>:<key>=<value>
        names = set(categories.split(","))
        assert {"model-repository", "shared-memory"} <= names <= TRITON_RESTRICTED_CATEGORIES
        assert "inference" not in names and "health" not in names
        key, _, secret = header.partition("=")
        assert key and secret == "$(TRITON_ADMIN_KEY)"
        restricted[flag] = value
    assert len(set(restricted.values())) == 1
    container = render[overlay].container("Deployment", "triton")
    (admin,) = [e for e in container["env"] if e["name"] == "TRITON_ADMIN_KEY"]
    assert admin["valueFrom"]["secretKeyRef"] == {"name": "triton-admin", "key": "key"}


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_ports_agree_across_triton_services_monitoring_and_policy(render: dict[str, Rendered],
                                                                   overlay: str) -> None:
    rendered = render[overlay]
    flags = triton_flags(rendered)
    container = rendered.container("Deployment", "triton")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == PORTS
    assert {k: int(flags[f"{k}-port"][0]) for k in PORTS} == PORTS

    pod_labels = rendered.get("Deployment", "triton")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())

    services = {s["metadata"]["name"]: s for s in rendered.all("Service")}
    assert set(services) == {"triton", "triton-headless"}
    assert services["triton-headless"]["spec"]["clusterIP"] == "None"
    for service in services.values():
        assert selects(service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] == port["name"] and port["port"] == PORTS[port["name"]]
        assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc"}

    monitor = rendered.get("PodMonitor", "triton")
    assert selects(monitor["spec"]["selector"]["matchLabels"])
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]

    policy = rendered.get("NetworkPolicy", "triton")
    assert selects(policy["spec"]["podSelector"]["matchLabels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["ingress"]]
    assert admitted == [["grpc", "http"], ["metrics"]]

    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        obj = rendered.get(kind, "triton")
        if kind == "PodDisruptionBudget":
            assert selects(obj["spec"]["selector"]["matchLabels"])
        else:
            assert obj["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                     "name": "triton"}


def test_client_default_port_is_the_grpc_port() -> None:
    from client.embedding_client import DEFAULT_URL

    assert urlsplit(f"//{DEFAULT_URL}").port == PORTS["grpc"]


@pytest.mark.parametrize("overlay", TRITON_OVERLAYS)
def test_autoscaling_uses_the_adapter_rule_shipped_beside_it(render: dict[str, Rendered],
                                                              overlay: str) -> None:
    hpa = render[overlay].get("HorizontalPodAutoscaler", "triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["selector"]["matchLabels"] == {"model": read_config(None).name}

    (values,) = load_yaml((K8S / "base" / "prometheus-adapter-values.yaml").read_text())
    rules = {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}
    rule = rules[metric["pods"]["metric"]["name"]]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                              "pod": {"resource": "pod"}}
    query = rule["metricsQuery"]
    for series in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert f"{series}{{<<.LabelMatchers>>}}" in query
    assert "by (<<.GroupBy>>)" in query
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")

    # No flapping: slow, stabilised scale-down; bounded scale-up; at least two replicas for the PDB.
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] > 0
    policies = behavior["scaleUp"]["policies"] + behavior["scaleDown"]["policies"]
    assert all(p["type"] == "Pods" for p in policies)
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in render[overlay].get("Deployment", "triton")["spec"]  # owned by the HPA


# ---------------------------------------------------------------------------------------------
# Load test


LOCUST_PARSE = """
import json, sys
from locust.argument_parser import get_parser
o = get_parser(default_config_files=[]).parse_args(sys.argv[1:])
keys = ["master", "worker", "headless", "num_users", "spawn_rate", "run_time", "host", "expect_workers",
        "master_host", "master_port", "locustfile", "only_summary"]
print(json.dumps({k: getattr(o, k) for k in keys}))
"""


def locust_options(rendered: Rendered, job: str, tmp_path: Path) -> dict[str, Any]:
    """The options Locust itself parses from a rendered Job's command line and environment."""
    container = rendered.container("Job", job)
    words = rendered.expanded_args(container)
    assert words[0] == "locust"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")} | rendered.env(container)
    return run_python(LOCUST_PARSE, *words[1:], env=env, cwd=tmp_path)


def test_locust_master_and_workers_target_the_triton_grpc_service(render: dict[str, Rendered],
                                                                   tmp_path: Path) -> None:
    loadtest, triton = render["loadtest"], render["gpu"]
    master = locust_options(loadtest, "locust-master", tmp_path)
    worker = locust_options(loadtest, "locust-worker", tmp_path)
    workers = loadtest.get("Job", "locust-worker")["spec"]

    assert master["master"] and master["headless"] and not master["worker"]
    assert master["expect_workers"] == workers["parallelism"] == workers["completions"]
    assert master["num_users"] >= master["expect_workers"] and master["run_time"]
    assert worker["worker"] and not worker["master"]
    assert (REPO / master["locustfile"]).is_file() and worker["locustfile"] == master["locustfile"]

    # Workers find the master through its Service, on the port the master's pod exposes.
    service = loadtest.get("Service", worker["master_host"])
    (port,) = service["spec"]["ports"]
    master_port = {p["name"]: p["containerPort"]
                   for p in loadtest.container("Job", "locust-master")["ports"]}[port["targetPort"]]
    assert port["port"] == worker["master_port"] == master_port == 5557

    # The target is the Triton Service's gRPC port, in the same namespace.
    for options, job in ((master, "locust-master"), (worker, "locust-worker")):
        host, _, port_text = options["host"].partition(":")
        assert options["host"] == loadtest.env(loadtest.container("Job", job))["TRITON_GRPC_URL"]
        triton_ports = {p["name"]: p["port"] for p in triton.get("Service", host)["spec"]["ports"]}
        assert int(port_text) == triton_ports["grpc"]


def test_load_generators_are_admitted_by_the_triton_network_policy(render: dict[str, Rendered]) -> None:
    (clients, _) = render["gpu"].get("NetworkPolicy", "triton")["spec"]["ingress"]
    (peer,) = clients["from"]
    assert peer["namespaceSelector"] == {}
    worker_labels = render["loadtest"].get("Job", "locust-worker")["spec"]["template"]["metadata"]["labels"]
    assert all(worker_labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())


# ---------------------------------------------------------------------------------------------
# Project image


def dockerfile() -> dict[str, list[str]]:
    """Dockerfile instructions by keyword (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


def test_project_image_matches_the_manifests_and_the_package(render: dict[str, Rendered]) -> None:
    instructions = dockerfile()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (user,) = instructions["USER"]
    uid, gid = (int(x) for x in user.split(":"))
    (workdir,) = instructions["WORKDIR"]

    (install,) = [r for r in instructions["RUN"] if "pip install" in r]
    extras = re.search(r"\.\[([a-z,]+)\]", install)[1].split(",")
    assert {"export", "loadtest"} <= set(extras) <= set(project["optional-dependencies"])

    # Everything `pip install .` packages and every pod runs is copied in (the locustfile, the
    # sample images it sends by default), plus the files pyproject.toml refers to.
    copied = set()
    for instruction in instructions["COPY"]:
        sources, destination = instruction.split()[:-1], instruction.split()[-1]
        copied |= set(sources) if destination.endswith("/") else {destination.removeprefix("./")}
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {pattern.rstrip("*") for pattern in setuptools["packages"]["find"]["include"]}
    for top in packages | {"loadtest", "samples"}:
        assert top in copied and (REPO / top).is_dir(), top
    assert {"pyproject.toml", project["readme"]} <= copied

    workloads = [("export", "Job", "pnasnet-export"), ("rollback", "Job", "pnasnet-rollback"),
                 ("loadtest", "Job", "locust-master"), ("loadtest", "Job", "locust-worker")]
    for name, kind, workload in workloads:
        pod = render[name].get(kind, workload)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        image, _, tag = container["image"].partition(":")
        assert image == PROJECT_IMAGE and tag == project["version"]
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["runAsGroup"] == gid
        assert container.get("workingDir", workdir) == workdir
    triton_pod = render["gpu"].get("Deployment", "triton")["spec"]["template"]["spec"]
    assert triton_pod["securityContext"]["fsGroup"] == gid  # the model volume's shared group


def test_load_test_variables_are_ones_the_locustfile_reads(render: dict[str, Rendered]) -> None:
    """A misspelt LOADTEST_* variable would be ignored silently; each must be a declared option."""
    from loadtest.options import OPTIONS

    known = {opt.env for opt in OPTIONS}
    maps = [d for d in render["loadtest"].docs if d["kind"] == "ConfigMap"]
    used = {key for m in maps for key in m.get("data", {}) if key.startswith("LOADTEST_")}
    assert used, "the Locust Jobs set no LOADTEST_* parameter"
    assert used <= known, f"unknown load-test variables: {sorted(used - known)}"
