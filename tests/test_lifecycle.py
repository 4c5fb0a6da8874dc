"""The local server never outlives what started it, and any number of signals stops it once.

Each test starts its own `python -m serve` or `make serve` on free ports, in a session of its own,
and checks only what that server left behind: processes with its port or shared-memory prefix on
their command line, its three ports, its `/dev/shm` segments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lifecycle_tools import ROOT, Load, Served, leftovers, wait_for_nothing_left

from serve import lifecycle
from serve.server import Ports

ROUNDS = 10


def _serve_cmd(repo: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "serve", "--repository", str(repo), "--work-dir", str(work)]


def _make_serve_cmd(repo: Path, work: Path) -> list[str]:
    """The Makefile's own recipe, on this test's repository and work directory."""
    return ["make", "--no-print-directory", "-C", str(ROOT), "serve", f"REPO={repo}",
            f"SERVE_ARGS=--work-dir {work}"]


def test_sigkill_of_serve_leaves_no_server_and_frees_the_ports(exported_repo: Path,
                                                               tmp_path: Path) -> None:
    ports = Ports.free()
    served = Served(_serve_cmd(exported_repo, tmp_path), ports)
    try:
        served.wait_for("ready:")
        tritonservers = leftovers(ports, served.shm_prefix)["processes"]
        assert tritonservers, "the server should be running"
        load = Load(f"127.0.0.1:{ports.grpc}").start()
        load.wait_for_answers(3)
        served.proc.kill()  # SIGKILL: no handler, no finally
        served.proc.wait()
        left = wait_for_nothing_left(ports, served.shm_prefix, within=10)
        load.close()
        assert left == {"processes": [], "ports": [], "shm": []}, served.output()
    finally:
        served.kill_group()


def test_repeated_signals_during_shutdown_still_stop_once(exported_repo: Path,
                                                          tmp_path: Path) -> None:
    ports = Ports.free()
    served = Served(_serve_cmd(exported_repo, tmp_path), ports)
    try:
        served.wait_for("ready:")
        load = Load(f"127.0.0.1:{ports.grpc}").start()
        load.wait_for_answers(3)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTERM):
            served.proc.send_signal(sig)
            time.sleep(0.05)
        out = served.finish()
        load.close()
        assert served.proc.returncode == 0, out
        assert "Traceback" not in out
        assert out.count("stopping tritonserver") == 1 and out.rstrip().endswith("stopped")
        assert "stopped once" in out
        assert leftovers(ports, served.shm_prefix) == {"processes": [], "ports": [], "shm": []}
    finally:
        served.kill_group()


def test_signal_before_ready_stops_the_starting_server(exported_repo: Path, tmp_path: Path) -> None:
    ports = Ports.free()
    served = Served(_serve_cmd(exported_repo, tmp_path), ports)
    try:
        served.wait_for("starting tritonserver")
        deadline = time.monotonic() + 60
        while not leftovers(ports, served.shm_prefix)["processes"] and time.monotonic() < deadline:
            time.sleep(0.05)
        served.proc.send_signal(signal.SIGTERM)
        served.proc.send_signal(signal.SIGTERM)
        out = served.finish()
        assert served.proc.returncode == 0, out
        assert "ready:" not in out and out.rstrip().endswith("stopped")
        assert leftovers(ports, served.shm_prefix) == {"processes": [], "ports": [], "shm": []}
    finally:
        served.kill_group()


def test_make_serve_dies_when_only_make_is_signalled(exported_repo: Path, tmp_path: Path) -> None:
    """make does not pass SIGTERM on to its recipe: `python -m serve` notices make's exit itself."""
    ports = Ports.free()
    served = Served(_make_serve_cmd(exported_repo, tmp_path), ports)
    try:
        served.wait_for("ready:")
        os.kill(served.proc.pid, signal.SIGTERM)  # make alone, not its process group
        served.proc.wait(60)
        left = wait_for_nothing_left(ports, served.shm_prefix, within=60)
        assert left == {"processes": [], "ports": [], "shm": []}, served.output()
    finally:
        served.kill_group()


def test_group_sigterm_of_make_serve_under_load_leaves_nothing_ten_times(exported_repo: Path,
                                                                         tmp_path: Path) -> None:
    results = []
    for round_ in range(ROUNDS):
        ports = Ports.free()
        served = Served(_make_serve_cmd(exported_repo, tmp_path / f"round{round_}"), ports)
        try:
            served.wait_for("ready:")
            load = Load(f"127.0.0.1:{ports.grpc}").start()
            load.wait_for_answers(2)
            os.killpg(served.proc.pid, signal.SIGTERM)  # make, its shell and python -m serve
            out = served.finish()
            load.close()
            left = leftovers(ports, served.shm_prefix)
            results.append((round_, load.ok, left))
            assert served.shm_prefix, out
            assert left == {"processes": [], "ports": [], "shm": []}, f"round {round_}:\n{out}"
            assert "Traceback" not in out, f"round {round_}:\n{out}"
            assert out.rstrip().endswith("stopped"), f"round {round_}:\n{out}"
        finally:
            served.kill_group()
    assert len(results) == ROUNDS


def test_child_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    """`die_with_parent()` on its own: a parent killed with SIGKILL takes its child along."""
    script = (
        "import subprocess, time\n"
        "from serve.lifecycle import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '300'], start_new_session=True, "
        "preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    child = int(parent.stdout.readline())
    try:
        os.kill(child, 0)  # alive, in a session of its own
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{child}").exists():
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists(), "the child outlived its SIGKILLed parent"
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


SIGNALS_CHILD = """
import os, signal, time
from serve import lifecycle

signals = lifecycle.ShutdownSignals(raise_first=True).install()
try:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        raise SystemExit("the first signal did not interrupt")
    except lifecycle.Interrupted as exc:
        assert "SIGTERM" in str(exc), exc
    with signals.shielded():  # the cleanup: later signals are only counted
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)  # not the first any more: recorded, not raised
    time.sleep(0.1)
finally:
    signals.restore()
assert signals.received == ["SIGTERM", "SIGINT", "SIGTERM", "SIGTERM"], signals.received
assert signals.requested.is_set()
print("ok")
"""


@pytest.mark.skipif(not lifecycle.parent_death_signal_supported(), reason="Linux prctl only")
def test_shutdown_signals_record_instead_of_interrupting() -> None:
    # In a process of its own: signalling the test runner, whose libraries run threads of their
    # own, is not what this checks.
    proc = subprocess.run([sys.executable, "-c", SIGNALS_CHILD], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
