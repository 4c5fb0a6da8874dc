"""`python -m demo` end to end on the tiny twin: export, serve, embed, batch, load test, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.server import Ports

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_whole_path(tmp_path: Path) -> None:
    ports = Ports.free()
    env = dict(os.environ, HTTP_PORT=str(ports.http), GRPC_PORT=str(ports.grpc),
               METRICS_PORT=str(ports.metrics))
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--source", "twin:tiny", "--repository", str(tmp_path / "repo"),
         "--work-dir", str(tmp_path / "work"), "--duration", "3s", "--users", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for section in ("1. export", "2. start", "3. embed", "4. dynamic batching", "5. load test",
                    "6. stop"):
        assert section in out
    assert "cosine similarity" in out and "(4320,)" in out
    assert "average batch" in out
    assert "failures 0" in out
    assert "tritonserver exited with code 0" in out
    assert (tmp_path / "repo" / "pnasnet_large" / "1" / "model.savedmodel").is_dir()


# --- the demo's processes never outlive it ---
@pytest.mark.parametrize("how", ["sigterm-twice", "sigkill"])
def test_demo_interrupted_during_the_load_test_leaves_nothing(tmp_path: Path, how: str) -> None:
    from lifecycle_tools import Served, leftovers, processes_with, wait_for_nothing_left

    ports = Ports.free()
    served = Served([sys.executable, "-m", "demo", "--source", "twin:tiny", "--repository",
                     str(tmp_path / "repo"), "--work-dir", str(tmp_path / "work"), "--duration", "60s",
                     "--users", "2"], ports)
    shm_prefix = f"pnasnet_{served.proc.pid}_"  # the server's segments are named after its owner
    try:
        served.wait_for("locust:")  # the load test is starting against the demo's server
        deadline = time.monotonic() + 60
        while len(processes_with(f"127.0.0.1:{ports.grpc}")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the load test and its Locust both run
        time.sleep(1)
        assert leftovers(ports, shm_prefix)["processes"]
        if how == "sigkill":
            served.proc.kill()
            served.proc.wait()
        else:
            served.proc.send_signal(signal.SIGTERM)
            served.proc.send_signal(signal.SIGTERM)
            out = served.finish()
            assert served.proc.returncode == 130, out
            assert "demo: stopped by SIGTERM" in out and "tritonserver exited with code 0" in out
        left = wait_for_nothing_left(ports, shm_prefix, within=10)
        assert left == {"processes": [], "ports": [], "shm": []}, served.output()
        deadline = time.monotonic() + 30  # Locust, stopped by the load test on its way out
        while processes_with(f"127.0.0.1:{ports.grpc}") and time.monotonic() < deadline:
            time.sleep(0.2)
        left_procs = processes_with(f"127.0.0.1:{ports.grpc}")
        assert left_procs == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:300] for p in left_procs]
    finally:
        served.kill_group()
        for pid in processes_with(f"127.0.0.1:{ports.grpc}"):
            os.kill(pid, signal.SIGKILL)
