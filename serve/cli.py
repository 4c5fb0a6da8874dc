"""`python -m serve`: run the local CPU Triton server until Ctrl-C or SIGTERM.

`python -m serve reload` makes a running server load the newest exported version (no restart).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serve.lifecycle import ShutdownSignals, exit_with_parent
from serve.server import LocalTritonServer, Ports, ServerError, StartCancelled
from serve.tflog import without_tf_noise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="the model repository export writes (default: %(default)s)")
    p.add_argument("--config-name", default="cpu",
                   help="configs/<name>.pbtxt to use: cpu (default; OpenVINO in the local Python "
                        "backend), local_tf (TensorFlow), local_onnx (onnxruntime, after "
                        "`export --onnx`), local_openvino (the CPU-node OpenVINO config's shape, "
                        "on the local backend)")
    p.add_argument("--model", action="append", dest="models",
                   help="model to load (repeatable; default: every model with that config)")
    p.add_argument("--work-dir", type=Path, default=Path("build/serve"),
                   help="logs and backend files (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for readiness")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the parent process exits (for make and supervisors that do not "
                        "pass signals on; `make serve` uses it)")
    p.add_argument("--verbose", action="store_true",
                   help="verbose tritonserver log, TensorFlow's own log lines kept")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reload"]:
        from serve import reload

        return reload.main(argv[1:])
    args = build_parser().parse_args(argv)
    # Signals only set an event, whatever line runs when they arrive, so any number of them ends in
    # the one `server.stop()` below, and nothing can interrupt that stop.
    signals = ShutdownSignals().install()
    if args.exit_with_parent:
        exit_with_parent()
    server = LocalTritonServer(args.repository, ports=Ports.from_env(), config_name=args.config_name,
                               models=args.models, work_dir=args.work_dir,
                               log_verbose=1 if args.verbose else 0)
    tail = server.log_tail if args.verbose else lambda: without_tf_noise(server.log_tail())
    print(f"starting tritonserver on 127.0.0.1 (http {server.ports.http}, grpc {server.ports.grpc}, "
          f"metrics {server.ports.metrics}); log: {server.log_path}; "
          f"shared memory: /dev/shm/{server.shm_prefix}*", flush=True)
    code = 0
    try:
        if not signals.requested.is_set():
            server.start(args.timeout, cancel=signals.requested)
            print(f"ready: grpc {server.grpc_url}, http {server.http_url}, metrics {server.metrics_url}"
                  " (Ctrl-C to stop)", flush=True)
        while not signals.requested.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                print(f"tritonserver exited with code {server.process.returncode}; log "
                      f"{server.log_path}:\n{tail()}", file=sys.stderr)
                code = 1
                break
    except StartCancelled:
        pass
    except ServerError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        if signals.requested.is_set():
            print(f"{signals.first}: stopping tritonserver", flush=True)
        server.stop()
        if len(signals.received) > 1:
            print(f"(signals during shutdown: {', '.join(signals.received[1:])}; stopped once)",
                  flush=True)
        print("stopped", flush=True)
    return code
