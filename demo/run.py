"""Export, serve, embed the sample images, show batching, load-test, stop: one command.

Where the hub can't be reached (no network), the export falls back to an offline twin with the same
interface and random weights, and says so: embeddings are then structurally real but not semantic.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from client import EmbeddingClient
from client.stats import model_stats
from samples import sample_paths
from serve.lifecycle import Interrupted, ShutdownSignals, die_with_parent
from serve.server import LocalTritonServer, Ports
from serve.tflog import TF_STARTUP_LINE

FALLBACK_TWIN = "auto"
# The faithful twin's export peaks at ~2.2 GB and the server holds ~1.5 GB; on 2 cores the whole
# demo takes about two minutes with it. Smaller machines get the reduced twin (same interface).
FAITHFUL_MIN_CORES = 2
FAITHFUL_MIN_MEMORY_GB = 6.0


def banner(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--model", default="pnasnet_large")
    p.add_argument("--source", default="https://tfhub.dev/google/imagenet/pnasnet_large/feature_vector/5")
    p.add_argument("--fallback-twin", default=FALLBACK_TWIN,
                   help="twin to export when the hub can't be reached; 'auto' picks the faithful "
                        "pnasnet_large where the machine runs it within the demo's budget")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--duration", default="20s")
    p.add_argument("--work-dir", type=Path, default=Path("build/demo"))
    p.add_argument("--verbose", action="store_true", help="keep TensorFlow's own log lines")
    p.add_argument("--config-name", default="cpu",
                   help="local server config: cpu (OpenVINO, the default) or local_tf (TensorFlow)")
    return p


def serving_line(server: LocalTritonServer, model: str) -> str:
    """Which engine and precision the server runs `model` with, read from its live config."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        cfg = triton.get_model_config(model, as_json=True)["config"]
    backend = cfg.get("backend") or cfg.get("platform", "?")
    params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
    where = f"backend {backend}, configs/{server.config_name}.pbtxt"
    if backend == "openvino_cpu":
        import openvino as ov

        from export.openvino import default_precision

        asked = params.get("INFERENCE_PRECISION", "auto").lower()
        native = default_precision()
        precision = native if asked == "auto" else asked
        why = (f"OpenVINO's choice on this CPU ({'native bf16' if native == 'bf16' else 'no native bf16'})"
               if asked == "auto" else "set in the config")
        return (f"engine: OpenVINO {ov.__version__.split('-')[0]} on the IR ({where}); "
                f"precision {precision}, {why}")
    if backend == "savedmodel_cpu":
        import importlib.metadata

        return (f"engine: TensorFlow {importlib.metadata.version('tensorflow')} on the SavedModel "
                f"({where}); precision f32")
    return f"engine: {where}"


def available_memory_gb() -> float:
    """MemAvailable from /proc/meminfo (Linux); infinity where it can't be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("inf")


def choose_twin(requested: str) -> tuple[str, str]:
    """The offline twin to fall back to, and why: the faithful one where it fits the time budget."""
    if requested != "auto":
        return requested, "chosen with --fallback-twin"
    cores, memory = os.cpu_count() or 1, available_memory_gb()
    if cores >= FAITHFUL_MIN_CORES and memory >= FAITHFUL_MIN_MEMORY_GB:
        return "pnasnet_large", (f"the faithful PNASNet-5 Large twin: {cores} cores and "
                                 f"{memory:.0f} GB available fit the 5-minute demo budget")
    return "pnasnet_reduced", (f"the reduced twin: {cores} core(s), {memory:.1f} GB available are "
                               f"below {FAITHFUL_MIN_CORES} cores / {FAITHFUL_MIN_MEMORY_GB:.0f} GB "
                               "needed to run the faithful one within the 5-minute budget")


def export(args: argparse.Namespace) -> None:
    banner("1. export")
    twin, why = choose_twin(args.fallback_twin)
    if not args.source.startswith("twin:"):
        print(f"offline fallback, if the hub can't be reached: twin:{twin}, {why}", flush=True)
    cmd = [sys.executable, "-m", "export", "--source", args.source, "--repository",
           str(args.repository), "--model", args.model, "--keep", "2", "--fallback-twin", twin]
    run_quietly(cmd + ["--verbose"] if args.verbose else cmd, verbose=args.verbose)


# TensorFlow's start-up chatter on a machine without a GPU; everything else is shown.
TF_NOISE = TF_STARTUP_LINE


def run_quietly(cmd: list[str], verbose: bool = False) -> None:
    """Run `cmd`, streaming its output without TensorFlow's start-up noise; fail like check=True.

    The child dies with the demo (however the demo ends) and is stopped if the demo is interrupted.
    """
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, preexec_fn=die_with_parent()) as proc:  # noqa: PLW1509
        try:
            for line in proc.stdout:
                if verbose or not TF_NOISE.match(line):
                    print(line, end="", flush=True)
        except BaseException:
            stop_child(proc, signal.SIGTERM)
            raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def stop_child(proc: subprocess.Popen, sig: int, grace: float = 30.0) -> None:
    """Ask a child to stop with `sig`; SIGKILL it if it has not after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_load_test(cmd: list[str]) -> None:
    """The load test as a child that stops with the demo: SIGINT lets it stop its Locust first."""
    proc = subprocess.Popen(cmd, preexec_fn=die_with_parent(signal.SIGINT))  # noqa: PLW1509
    try:
        code = proc.wait()
    except BaseException:
        stop_child(proc, signal.SIGINT)
        raise
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def embed_samples(client: EmbeddingClient) -> None:
    banner("3. embed the sample images")
    paths = sample_paths()
    start = time.perf_counter()
    vectors = client.embed_batch(paths)
    elapsed = time.perf_counter() - start
    info = client.info
    print(f"model {info.name} v{info.version}: {info.input_name} [{info.height},{info.width},3] "
          f"-> {info.output_name} [{info.output_dim}]; {len(paths)} images in {elapsed:.2f} s")
    print(f"{'image':<22}{'shape':>10}{'L2 norm':>10}{'mean':>9}{'nonzero':>9}")
    for path, vec in zip(paths, vectors, strict=True):
        print(f"{path.name:<22}{str(vec.shape):>10}{np.linalg.norm(vec):>10.3f}{vec.mean():>9.4f}"
              f"{np.count_nonzero(vec):>9}")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    names = [p.stem[:10] for p in paths]
    print("\ncosine similarity")
    print(" " * 12 + "".join(f"{n:>11}" for n in names))
    for name, row in zip(names, cos, strict=True):
        print(f"{name:<12}" + "".join(f"{v:>11.3f}" for v in row))
    compare_transports(client, vectors)


def compare_transports(client: EmbeddingClient, float_vectors: np.ndarray) -> None:
    """The uint8 payload: a quarter of the bytes, the same embeddings."""
    with EmbeddingClient(client.url, client.model, payload="uint8") as compact:
        vectors = compact.embed_batch(sample_paths())
        pixels = compact.info.height * compact.info.width * compact.info.channels
    diff = float(np.max(np.abs(vectors - float_vectors)))
    print(f"\nuint8 payload ({compact.uint8_model} ensemble): {pixels:,} bytes per image instead "
          f"of {pixels * 4:,} as float32; max abs difference from the float path {diff:.2g}")


def show_batching(server: LocalTritonServer, model: str, requests: int = 32, threads: int = 8) -> None:
    banner("4. dynamic batching: concurrent single-image requests")
    before = model_stats(server.grpc_url, model)
    image = sample_paths()[0]
    with ThreadPoolExecutor(threads) as pool:
        clients = [EmbeddingClient(server.grpc_url, model) for _ in range(threads)]
        list(pool.map(lambda i: clients[i % threads].embed(image), range(requests)))
        for c in clients:
            c.close()
    delta = model_stats(server.grpc_url, model) - before
    print(f"{delta.success_count} requests of 1 image from {threads} threads ran as "
          f"{delta.execution_count} model executions: average batch {delta.avg_batch:.2f}; "
          f"per request: queue {delta.queue_ms_per_request:.1f} ms, "
          f"compute {delta.compute_ms_per_request:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The first SIGTERM/SIGINT/SIGHUP interrupts whatever step runs; any later one, and any during
    # the final stop, is only recorded: the server is always stopped, once.
    signals = ShutdownSignals(raise_first=True).install()
    try:
        return _demo(args, signals)
    except Interrupted as stop:
        print(f"\ndemo: stopped by {stop}", flush=True)
        return 130
    finally:
        signals.restore()


def _demo(args: argparse.Namespace, signals: ShutdownSignals) -> int:
    start = time.monotonic()
    export(args)
    banner("2. start the local Triton server (CPU)")
    server = LocalTritonServer(args.repository, ports=Ports.from_env(), work_dir=args.work_dir,
                               config_name=args.config_name)
    print(f"log: {server.log_path}", flush=True)
    try:
        server.start(timeout=600)
        print(f"ready in {time.monotonic() - start:.0f} s since the demo started: grpc {server.grpc_url}")
        print(serving_line(server, args.model), flush=True)
        with EmbeddingClient(server.grpc_url, args.model, payload="float32") as client:
            embed_samples(client)
        show_batching(server, args.model)
        banner(f"5. load test: {args.users} users for {args.duration}")
        run_load_test([sys.executable, "-m", "loadtest", "--host", server.grpc_url, "--users",
                       str(args.users), "--duration", args.duration, "--model", args.model,
                       "--out", str(args.work_dir / "loadtest")])
    finally:
        with signals.shielded():
            banner("6. stop the server")
            code = server.stop()
            print(f"tritonserver exited with code {code}", flush=True)
    print(f"\ndemo finished in {time.monotonic() - start:.0f} s")
    return 0
