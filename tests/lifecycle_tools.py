"""Helpers for tests that start `python -m serve` or `make serve` and check what they leave behind.

Every check is scoped to what the test itself started (its ports, its shared-memory prefix, its
process group): other tritonservers may run on the same machine at the same time.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from serve.server import Ports

ROOT = Path(__file__).resolve().parents[1]


def processes_with(text: str) -> list[int]:
    """PIDs whose command line contains `text` (a port flag or a shared-memory prefix)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if text.encode() in (proc_dir / "cmdline").read_bytes():
                found.append(int(proc_dir.name))
        except OSError:
            continue
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def shm_segments(prefix: str) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"{prefix}*")]


def leftovers(ports: Ports, shm_prefix: str) -> dict[str, list]:
    """What is still there of one server: processes (tritonserver, stubs), open ports, segments."""
    procs = sorted(set(processes_with(f"--grpc-port={ports.grpc}")) | set(processes_with(shm_prefix)))
    return {"processes": procs,
            "ports": [p for p in (ports.http, ports.grpc, ports.metrics) if listening(p)],
            "shm": shm_segments(shm_prefix)}


def wait_for_nothing_left(ports: Ports, shm_prefix: str, within: float) -> dict[str, list]:
    """Poll until nothing of the server is left or `within` seconds pass; the last observation."""
    deadline = time.monotonic() + within
    while True:
        left = leftovers(ports, shm_prefix)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def serve_env(ports: Ports) -> dict[str, str]:
    return dict(os.environ, HTTP_PORT=str(ports.http), GRPC_PORT=str(ports.grpc),
                METRICS_PORT=str(ports.metrics), PYTHONPATH=str(ROOT))


class Served:
    """`python -m serve` (or `make serve`) in a session of its own; its output read in a thread."""

    def __init__(self, cmd: list[str], ports: Ports) -> None:
        self.ports = ports
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=serve_env(ports), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.shm_prefix = ""

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            found = re.search(r"shared memory: /dev/shm/(\S+)\*", line)
            if found:
                self.shm_prefix = found.group(1)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r}; output:\n{self.output()}")

    def finish(self, timeout: float = 120) -> str:
        """Wait for the process to end; all of its output."""
        self.proc.wait(timeout)
        while True:
            try:
                line = self._queue.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return self.output()

    def output(self) -> str:
        return "".join(self.lines)

    def kill_group(self) -> None:
        """Last resort for a failed test: nothing of this session may stay behind."""
        for pid in processes_with(f"--grpc-port={self.ports.grpc}"):
            try:
                os.killpg(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


class Load:
    """Closed-loop requests from a few threads until stopped; counts answers and errors."""

    def __init__(self, grpc_url: str, threads: int = 3) -> None:
        from client import EmbeddingClient
        from client.retry import RetryPolicy

        self.stop = threading.Event()
        self.ok = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._clients = [EmbeddingClient(grpc_url, timeout=10, retry=RetryPolicy(attempts=1))
                         for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in self._clients]

    def _run(self, client) -> None:  # noqa: ANN001
        pixels = np.random.default_rng(0).random((1, 331, 331, 3), dtype=np.float32)
        while not self.stop.is_set():
            try:
                client.embed_arrays(pixels)
                with self._lock:
                    self.ok += 1
            except Exception:  # noqa: BLE001 - the server is going away on purpose
                with self._lock:
                    self.errors += 1
                time.sleep(0.05)

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait_for_answers(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.ok >= count, f"only {self.ok} answers ({self.errors} errors)"

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        for c in self._clients:
            c.close()
