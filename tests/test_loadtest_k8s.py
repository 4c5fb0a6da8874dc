"""The Locust Jobs' environment comes from the options table, parses, and every variable is used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_k8s_consistency import Rendered, run_python

from loadtest.options import K8S_ENV_FILES, OPTIONS, SLO, k8s_env_file, parse_seconds

ROOT = Path(__file__).resolve().parents[1]
LOADTEST_K8S = ROOT / "k8s" / "loadtest"

# In the Job's environment, with its command line: which variable did what reader take, and as what?
READ = """
import json, sys
from locust.argument_parser import get_parser
from loadtest.options import Settings, add_locust_options
from loadtest.slo import Thresholds
from client.transport import default_url
parser = get_parser(default_config_files=[])
add_locust_options(parser)
options = parser.parse_args(sys.argv[1:])
by_env = {a.env_var: a.dest for a in parser._actions if getattr(a, "env_var", None)}
settings = Settings.from_options(options)
thresholds = Thresholds.from_options(options)
values = {}
for env, dest in by_env.items():
    value = getattr(options, dest, None)
    values[env] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
print(json.dumps({"by_env": by_env, "values": values, "grpc_url": default_url("grpc"),
                  "payload": settings.payload, "user": settings.user,
                  "extras_file": settings.extras_file, "thresholds": thresholds.as_dict()}))
"""


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return Rendered(LOADTEST_K8S)


def test_env_files_are_what_the_options_table_gives() -> None:
    """`python -m loadtest k8s-env` wrote them; a hand edit or a renamed option shows here."""
    for role, name in K8S_ENV_FILES.items():
        assert (LOADTEST_K8S / name).read_text() == k8s_env_file(role), name
    kustomization = (LOADTEST_K8S / "kustomization.yaml").read_text()
    assert all(name in kustomization for name in K8S_ENV_FILES.values())
    assert "LOADTEST_" not in kustomization  # every LOADTEST_* value lives in the table


@pytest.mark.parametrize("job", ["locust-master", "locust-worker"])
def test_every_variable_a_job_sets_is_read(rendered: Rendered, job: str, tmp_path: Path) -> None:
    container = rendered.container("Job", job)
    env_set = rendered.env(container)
    words = rendered.expanded_args(container)
    assert words[0] == "locust"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOCUST_", "LOADTEST_", "TRITON_"))} | env_set
    env["PYTHONPATH"] = str(ROOT)
    read = run_python(READ, *words[1:], env=env, cwd=tmp_path)

    declared = {opt.env: opt for opt in OPTIONS}
    for name, value in env_set.items():
        if name == "HOME":
            continue  # for the container's user, not the load test
        if name == "TRITON_GRPC_URL":
            assert read["grpc_url"] == value  # the client's default address
            continue
        # Every other variable is an option of Locust or of the locustfile, and its value arrived.
        assert name in read["by_env"], f"{job} sets {name}, which nothing reads"
        parsed = read["values"][name]
        if name in declared:
            assert declared[name].value(parsed) == declared[name].value(value), name
        else:
            same = str(parsed).lower() == value.lower() or (
                isinstance(parsed, (int, float)) and float(parsed) == parse_seconds(value))
            assert same, (name, value, parsed)  # run time: "10m" arrives as 600 s
    assert read["payload"] in ("float32", "uint8") and read["user"] in ("grpc", "http", "raw")
    assert read["extras_file"].startswith("/tmp/")  # the only writable place in the pod
    if job == "locust-master":
        gate = {o.name: float(o.k8s) for o in OPTIONS if o.scope == SLO and o.k8s is not None}
        assert gate and read["thresholds"] == gate
    else:
        assert read["thresholds"] == {}  # the gate is the master's
