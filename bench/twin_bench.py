"""Benchmark the offline twins: build + save cost, and serving latency in-process vs local Triton.

    .venv/bin/python -m bench.twin_bench                      # everything (or bench/twin_bench.py)
    .venv/bin/python -m bench.twin_bench --no-triton          # build/save and in-process only
    .venv/bin/python -m bench.twin_bench --twins pnasnet_reduced --latency-twin pnasnet_reduced

Every measurement runs in its own subprocess: peak memory is then that step's own (ru_maxrss of
one process), and TensorFlow's thread pools never compete with another TensorFlow in the same
process. The Triton part exports with `python -m export` and serves with `serve.LocalTritonServer`,
then times the same batches the in-process part ran against the same exported SavedModel, so the
ratio between the two is the serving overhead (gRPC, serialization, batcher, Python backend).
Numbers depend on the machine and on whatever else it runs; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runnable as `python bench/twin_bench.py`
    sys.path.insert(0, str(ROOT))
RESULT_PREFIX = "BENCH-RESULT "
MODEL = "pnasnet_large"
DEFAULT_TWINS = ("tiny", "pnasnet_reduced", "pnasnet_large")


# ---------------------------------------------------------------- helpers shared by both sides

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = sorted(s * 1000.0 for s in seconds)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
            "min_ms": ms[0], "n": len(ms)}


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------- child processes

def child_build(twin: str, out: Path) -> None:
    """Import TensorFlow, build the twin, save it in hub format; time each step."""
    start = time.perf_counter()
    import tensorflow as tf  # noqa: F401  (timed on its own: every export pays it once)

    from export.twin import get_twin
    from export.twin.hub_format import save_hub_module

    imported = time.perf_counter()
    spec = get_twin(twin)
    net = spec.build(0)
    built = time.perf_counter()
    save_hub_module(net, out, image_size=spec.image_size)
    saved = time.perf_counter()
    _emit({"twin": twin, "import_s": imported - start, "build_s": built - imported,
           "save_s": saved - built, "build_save_s": saved - imported, "peak_rss_mb": _peak_rss_mb(),
           "size_mb": _dir_size_mb(out)})


def child_latency(paths: dict[str, Path], url: str | None, model: str, batches: list[int],
                  reps: int) -> None:
    """Time every way of running the model in one loop, round-robin, request by request.

    The machine is shared: load from elsewhere changes latency by 2x within a minute. Interleaving
    (in-process hub call, in-process signature, Triton, in-process hub, ...) exposes every path to
    the same conditions, so their ratio holds even when the absolute numbers drift.
    `paths`: "hub" -> the twin's hub module (`__call__`), "signature" -> the exported SavedModel's
    serving signature, called the way the Triton backend calls it.
    """
    import numpy as np
    import tensorflow as tf

    runners: dict[str, Callable[[np.ndarray], Any]] = {}
    load_s: dict[str, float] = {}
    size = 0
    for mode, path in paths.items():
        start = time.perf_counter()
        obj = tf.saved_model.load(str(path))
        load_s[mode] = time.perf_counter() - start
        sig = obj.signatures["serving_default"]
        ((name, spec),) = sig.structured_input_signature[1].items()
        size = int(spec.shape[1])
        if mode == "signature":
            runners[mode] = lambda x, sig=sig, name=name: sig(**{name: tf.constant(x)})
        else:
            runners[mode] = lambda x, obj=obj: obj(tf.constant(x), training=False)
    client = None
    if url:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url)
        meta = client.get_model_metadata(model)
        max_batch = client.get_model_config(model).config.max_batch_size
        inp, out = meta.inputs[0], meta.outputs[0]

        def triton(x: np.ndarray) -> Any:
            infer_input = grpcclient.InferInput(inp.name, list(x.shape), inp.datatype)
            infer_input.set_data_from_numpy(x)
            return client.infer(model, [infer_input],
                                outputs=[grpcclient.InferRequestedOutput(out.name)])

    results: dict[str, Any] = {}
    for batch in batches:
        x = np.random.RandomState(batch).rand(batch, size, size, 3).astype(np.float32)
        batch_runners = dict(runners)
        if client is not None and batch <= max_batch:
            batch_runners["triton"] = triton
        for run in batch_runners.values():  # warm up every path
            run(x)
            run(x)
        before = client.get_inference_statistics(model).model_stats[0] if client else None
        times: dict[str, list[float]] = {mode: [] for mode in batch_runners}
        for _ in range(max(3, reps // batch)):
            for mode, run in batch_runners.items():
                start = time.perf_counter()
                run(x)
                times[mode].append(time.perf_counter() - start)
        entry: dict[str, Any] = {mode: _summary(t) for mode, t in times.items()}
        if "triton" in times:
            after = client.get_inference_statistics(model).model_stats[0]
            executions = after.execution_count - before.execution_count
            compute = after.inference_stats.compute_infer.ns - before.inference_stats.compute_infer.ns
            entry["triton"]["server_compute_ms"] = compute / max(1, executions) / 1e6
            base = "signature" if "signature" in times else "hub"
            pairs = [t / b for t, b in zip(times["triton"], times[base], strict=True)]
            entry["ratio"] = {"vs": base, "median": statistics.median(pairs)}
        elif client is not None:
            entry["triton"] = {"skipped": f"max_batch_size {max_batch}"}
        results[str(batch)] = entry
    if client is not None:
        client.close()
    _emit({"load_s": load_s, "latency": results, "peak_rss_mb": _peak_rss_mb()})


# ---------------------------------------------------------------- parent side

def run_child(args: list[str], timeout: float = 1800.0) -> dict[str, Any]:
    """Run `python -m bench.twin_bench <args>` and return its result line."""
    cmd = [sys.executable, "-m", "bench.twin_bench", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def run_measured(cmd: list[str], timeout: float = 1800.0) -> dict[str, Any]:
    """Run a command; return its exit code, wall time, peak RSS (its own process) and output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    return {"returncode": proc.returncode, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "output": text}


def _fmt_latency(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    return f"{entry['median_ms']:.0f} ms (min {entry['min_ms']:.0f}, n={entry['n']})"


def report(results: dict[str, Any]) -> str:
    """Markdown tables of everything measured."""
    lines = [f"machine: {os.cpu_count()} cores; load average (1/5/15 min) at start "
             f"{results['load_start']}, at end {results['load_end']}", "",
             "| twin | import TF | build | trace + save | build + save | peak RSS | SavedModel |",
             "|---|---|---|---|---|---|---|"]
    for twin, r in results["build"].items():
        lines.append(f"| {twin} | {r['import_s']:.1f} s | {r['build_s']:.1f} s | {r['save_s']:.1f} s | "
                     f"{r['build_save_s']:.1f} s | {r['peak_rss_mb']:.0f} MB | {r['size_mb']:.0f} MB |")
    export = results.get("export")
    if export:
        lines += ["", f"`python -m export --source twin:{results['latency_twin']}` (build, save, load, "
                      f"re-sign, save, verify; one process): {export['wall_s']:.1f} s, peak RSS "
                      f"{export['peak_rss_mb']:.0f} MB, exit {export['returncode']}"]
    if results.get("triton_ready_s"):
        lines.append(f"local Triton start until ready (model load + warmup): "
                     f"{results['triton_ready_s']:.1f} s")
    latency = results.get("latency", {}).get("latency", {})
    lines += ["", f"latency of twin:{results['latency_twin']}, one request at a time, the paths "
                  f"interleaved request by request:", "",
              "| batch | in-process, hub `__call__` | in-process, exported signature | "
              "local Triton (gRPC) | Triton compute (mean) | Triton / in-process |",
              "|---|---|---|---|---|---|"]
    for batch in results["batches"]:
        entry = latency.get(str(batch), {})
        tri = entry.get("triton") or {}
        compute = f"{tri['server_compute_ms']:.0f} ms" if "server_compute_ms" in tri else "n/a"
        ratio = entry.get("ratio")
        ratio_text = f"{ratio['median']:.2f}x (vs {ratio['vs']})" if ratio else "n/a"
        lines.append(f"| {batch} | {_fmt_latency(entry.get('hub'))} | "
                     f"{_fmt_latency(entry.get('signature'))} | {_fmt_latency(entry.get('triton'))} | "
                     f"{compute} | {ratio_text} |")
    lines += ["", "Triton / in-process is the median of per-pair ratios (each Triton request against "
                  "the in-process request just before it); Triton compute is the server's own "
                  "compute_infer per execution."]
    if results.get("triton_error"):
        lines += ["", f"Triton part not run: {results['triton_error']}"]
    return "\n".join(lines)


def _loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.twin_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--twins", default=",".join(DEFAULT_TWINS),
                   help="twins to build and save (default: %(default)s)")
    p.add_argument("--latency-twin", default="pnasnet_large",
                   help="twin whose latency is measured (default: %(default)s)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default: %(default)s)")
    p.add_argument("--reps", type=int, default=24,
                   help="images per measurement; batch b runs max(3, reps/b) times (default: 24)")
    p.add_argument("--no-triton", action="store_true", help="skip export + local Triton")
    p.add_argument("--work", type=Path, help="keep artifacts here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    # internal: the measured children
    p.add_argument("--child", choices=["build", "latency"], help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--paths", default="", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--twin", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.child == "build":
        child_build(args.twin, args.path)
        return 0
    if args.child == "latency":
        paths = {k: Path(v) for k, v in (item.split("=", 1) for item in args.paths.split(",") if item)}
        child_latency(paths, args.url, MODEL, batches, args.reps)
        return 0

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="twin-bench-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"load_start": _loadavg(), "batches": batches,
                               "latency_twin": args.latency_twin, "build": {}}
    try:
        for twin in [t for t in args.twins.split(",") if t]:
            print(f"building and saving twin {twin} ...", flush=True)
            results["build"][twin] = run_child(["--child", "build", "--twin", twin,
                                                "--path", str(work / f"module_{twin}")])
        module = work / f"module_{args.latency_twin}"
        if not module.exists():
            run_child(["--child", "build", "--twin", args.latency_twin, "--path", str(module)])
        paths = {"hub": module}
        latency_args = ["--child", "latency", "--batches", args.batches, "--reps", str(args.reps)]
        server = None
        if not args.no_triton:
            repo = work / "repository"
            print("exporting with python -m export ...", flush=True)
            export = run_measured([sys.executable, "-m", "export", "--source",
                                   f"twin:{args.latency_twin}", "--repository", str(repo),
                                   "--model", MODEL])
            results["export"] = {k: v for k, v in export.items() if k != "output"}
            versions = sorted((repo / MODEL).glob("[0-9]*/model.savedmodel"),
                              key=lambda q: int(q.parent.name))
            if export["returncode"] != 0 or not versions:
                results["triton_error"] = f"export failed:\n{export['output'][-2000:]}"
            else:
                paths["signature"] = versions[-1]
                try:
                    from serve import LocalTritonServer, Ports

                    print("starting the local Triton server ...", flush=True)
                    start = time.perf_counter()
                    server = LocalTritonServer(repo, ports=Ports.free(), models=[MODEL]).start()
                    results["triton_ready_s"] = time.perf_counter() - start
                    latency_args += ["--url", server.grpc_url]
                except Exception as exc:  # report it; the in-process numbers still stand
                    results["triton_error"] = f"{type(exc).__name__}: {exc}"
        try:
            print("timing " + ", ".join([*paths, *(["triton"] if server else [])]) + " ...", flush=True)
            results["latency"] = run_child(
                [*latency_args, "--paths", ",".join(f"{k}={v}" for k, v in paths.items())])
        finally:
            if server is not None:
                server.cleanup()
    finally:
        results["load_end"] = _loadavg()
        if tmp is not None:
            tmp.cleanup()
    print()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
