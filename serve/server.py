"""Start, wait for, and cleanly stop a local tritonserver process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from serve import runtime
from serve.lifecycle import die_with_parent, terminate


class ServerError(RuntimeError):
    """The server failed to start, become ready, or stop; the message carries the log's tail."""


class StartCancelled(ServerError):
    """`start()` was asked to give up (a stop signal arrived) before the server was ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def from_env(cls) -> Ports:
        return cls(int(os.environ.get("HTTP_PORT", 8000)), int(os.environ.get("GRPC_PORT", 8001)),
                   int(os.environ.get("METRICS_PORT", 8002)))

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def models_with_config(repository: Path, config_name: str) -> list[str]:
    """Models that have `configs/<config_name>.pbtxt`: the ones this server can run."""
    return sorted(p.parent.parent.name for p in Path(repository).glob(f"*/configs/{config_name}.pbtxt"))


class LocalTritonServer:
    """tritonserver on 127.0.0.1 serving `repository` with `--model-config-name`.

    Models are loaded explicitly (those that have the chosen config), readiness waits for their
    warmup, and `stop()` ends the process group and removes the Python backend's shared memory.
    tritonserver runs in a session of its own (a Ctrl-C in the terminal reaches only this process,
    which then drains it) and gets SIGTERM from the kernel when the thread that started it exits,
    however it exits (SIGKILL included): it never outlives its owner. Start it from a thread that
    lives as long as the server should (the main thread).
    """

    def __init__(self, repository: str | Path, *, ports: Ports | None = None,
                 config_name: str = "cpu", models: list[str] | None = None,
                 work_dir: str | Path | None = None, log_verbose: int = 0,
                 extra_args: list[str] | None = None) -> None:
        self.repository = Path(repository).resolve()
        self.ports = ports or Ports.from_env()
        self.config_name = config_name
        self.models = models
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="triton-local-")
        self.work_dir = Path(work_dir or self._tmp.name).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / "tritonserver.log"
        self.log_verbose = log_verbose
        self.extra_args = extra_args or []
        self.shm_prefix = f"pnasnet_{os.getpid()}_{uuid.uuid4().hex[:6]}_"
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        models = self.models if self.models is not None else models_with_config(
            self.repository, self.config_name)
        if not models:
            names = sorted({c.stem for c in Path(self.repository).glob("*/configs/*.pbtxt")})
            if names:
                raise ServerError(f"no model in {self.repository} has configs/{self.config_name}"
                                  f".pbtxt; the config names there: {', '.join(names)} "
                                  f"(--config-name)")
            raise ServerError(f"no model in {self.repository} has configs/{self.config_name}.pbtxt; "
                              f"export one first: python -m export --repository {self.repository}")
        backends = runtime.prepare_backend_directory(self.work_dir / "backends")
        cmd = [
            str(runtime.tritonserver_binary()),
            f"--model-repository={self.repository}",
            f"--model-config-name={self.config_name}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in models],
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            "--http-address=127.0.0.1", f"--http-port={self.ports.http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}", "--allow-metrics=true",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]
        return cmd

    def start(self, timeout: float = 300.0, cancel: threading.Event | None = None) -> LocalTritonServer:
        """Start and block until `/v2/health/ready`, the process exits, `timeout` passes or
        `cancel` is set; on any failure the server is stopped before the error propagates."""
        cmd = self.command()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=runtime.server_environment(), start_new_session=True, cwd=self.work_dir,
            preexec_fn=die_with_parent())  # noqa: PLW1509 - prctl only, before exec
        try:
            self.wait_ready(timeout, cancel)
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float, cancel: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout
        cancel = cancel or threading.Event()
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} "
                                  f"before it was ready; log {self.log_path}:\n{self.log_tail()}")
            if self.is_ready():
                return
            if cancel.wait(0.25):
                raise StartCancelled("start cancelled before tritonserver was ready")
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s; log {self.log_path}:\n"
                          f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM the server (it drains in-flight requests and stops its stubs), then clean up."""
        code = None
        if self.process is not None:
            code = terminate(self.process, timeout)
            self._reap_group()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._remove_shared_memory()
        return code

    def _reap_group(self) -> None:
        """Backend stubs live in the server's session; none may outlive it."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _remove_shared_memory(self) -> None:
        for path in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalTritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
