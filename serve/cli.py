"""`python -m serve`: run the local CPU Triton server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from serve.server import LocalTritonServer, Ports, ServerError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--config-name", default="cpu", help="configs/<name>.pbtxt to use (default: cpu)")
    p.add_argument("--model", action="append", dest="models",
                   help="model to load (repeatable; default: every model with that config)")
    p.add_argument("--work-dir", type=Path, default=Path("build/serve"),
                   help="logs and backend files (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for readiness")
    return p


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = LocalTritonServer(args.repository, ports=Ports.from_env(), config_name=args.config_name,
                               models=args.models, work_dir=args.work_dir)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    print(f"starting tritonserver on 127.0.0.1 (http {server.ports.http}, grpc {server.ports.grpc}, "
          f"metrics {server.ports.metrics}); log: {server.log_path}", flush=True)
    try:
        server.start(args.timeout)
        print(f"ready: grpc {server.grpc_url}, http {server.http_url}, metrics {server.metrics_url}"
              " (Ctrl-C to stop)", flush=True)
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        print(f"tritonserver exited with code {server.process.returncode}; log {server.log_path}:\n"
              f"{server.log_tail()}", file=sys.stderr)
        return 1
    except _Stop as stop:
        print(f"{stop}: stopping tritonserver", flush=True)
        return 0
    except ServerError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.stop()
        print("stopped", flush=True)
