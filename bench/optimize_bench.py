"""CPU benchmark of the serving paths: TensorFlow (SavedModel) vs onnxruntime (ONNX) on the same network.

Why: the local CPU server can run either; this measures which is faster for PNASNet-5 Large, at batch
1 and 8, plus what the ONNX conversion costs. Each engine runs in its own child process, one after
the other (their thread pools fight on a small machine), on the same input; rounds alternate TF and
onnxruntime so that a neighbour's load on a shared machine shows up as round-to-round spread instead
of biasing one side. Nothing here is a pass/fail check: it prints numbers and ratios.

    python bench/optimize_bench.py                       # faithful twin, exported if missing
    python bench/optimize_bench.py --source twin:pnasnet_reduced --runs 5 --rounds 1

GPU (TF vs TF-TRT FP16 vs ONNX+TensorRT) cannot be measured here; `--gpu-commands` prints the
commands that measure it on a GPU node with the project's load test and perf_analyzer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


# ----------------------------------------------------------------------------- workers (child side)

def _inputs(batch: int, dims: tuple[int, ...]):  # noqa: ANN202 - numpy imported lazily
    import numpy as np

    return np.random.RandomState(batch).rand(batch, *dims).astype(np.float32)


def _time_runs(fn, batches: list[int], dims: tuple[int, ...], runs: int,  # noqa: ANN001
               warmup: int) -> dict:
    """Median/min/max per batch size, and the machine's load average around the runs (the machine
    may be shared: a high load average marks a measurement as disturbed)."""
    results = {"loadavg_before": os.getloadavg()[0]}
    for batch in batches:
        x = _inputs(batch, dims)
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
        results[str(batch)] = {"median_ms": 1e3 * statistics.median(times),
                               "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
                               "runs": runs}
    results["loadavg_after"] = os.getloadavg()[0]
    return results


def worker_tf(path: str, batches: list[int], runs: int, warmup: int) -> dict:
    """Latency of the SavedModel's serving signature in TensorFlow (what savedmodel_cpu runs)."""
    import tensorflow as tf

    start = time.perf_counter()
    fn = tf.saved_model.load(path).signatures["serving_default"]
    load_s = time.perf_counter() - start
    dims = tuple(fn.structured_input_signature[1]["images"].shape[1:])
    out = _time_runs(lambda x: fn(images=tf.constant(x))["embedding"].numpy(), batches, dims, runs,
                     warmup)
    return {"engine": "tensorflow", "version": tf.__version__, "load_s": load_s, "latency": out}


def worker_ort(path: str, batches: list[int], runs: int, warmup: int) -> dict:
    """Latency of the ONNX model in onnxruntime on CPU (what onnxruntime_cpu runs)."""
    import onnxruntime as ort

    from export.onnx import ort_session

    start = time.perf_counter()
    sess = ort_session(Path(path))
    load_s = time.perf_counter() - start
    dims = tuple(int(d) for d in sess.get_inputs()[0].shape[1:])
    out = _time_runs(lambda x: sess.run(["embedding"], {"images": x}), batches, dims, runs, warmup)
    return {"engine": "onnxruntime", "version": ort.__version__, "load_s": load_s, "latency": out}


# ----------------------------------------------------------------------------- driver

def _child(args: list[str], timeout: float) -> str:
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _measure(engine: str, path: Path, batches: list[int], runs: int, warmup: int,
             timeout: float) -> dict:
    out = _child([__file__, "--worker", engine, "--path", str(path), "--batches",
                  *map(str, batches), "--runs", str(runs), "--warmup", str(warmup)], timeout)
    return json.loads(out.strip().splitlines()[-1])


def ensure_savedmodel(repo: Path, model: str, source: str, timeout: float) -> tuple[int, float | None]:
    """The newest SavedModel version, exported from `source` first if there is none."""
    from export import repository

    found = repository.versions(repo, model)
    if found:
        return found[-1], None
    start = time.monotonic()
    _child(["-m", "export", "--source", source, "--repository", str(repo), "--model", model,
            "--quiet"], timeout)
    return repository.versions(repo, model)[-1], time.monotonic() - start


def convert(repo: Path, model: str, version: int, timeout: float) -> tuple[int, dict, float]:
    """Run `python -m export.onnx` (conversion + contract + parity + configs) in a child process."""
    from export import repository
    from export.onnx import PROVENANCE_FILENAME, onnx_model_name

    start = time.monotonic()
    _child(["-m", "export.onnx", "--repository", str(repo), "--model", model,
            "--version", str(version)], timeout)
    wall = time.monotonic() - start
    target = onnx_model_name(model)
    number = repository.versions(repo, target)[-1]
    record = json.loads((repository.model_dir(repo, target) / str(number) / PROVENANCE_FILENAME)
                        .read_text())
    return number, record, wall


def gpu_commands(model: str) -> str:
    """How to measure TF vs TF-TRT FP16 vs ONNX+TensorRT on a GPU node (not measurable here)."""
    return f"""\
# GPU: TensorFlow vs TF-TRT FP16 (offline and online) vs ONNX + TensorRT FP16, one GPU node of the
# type that serves, the same repository and the same load for each.
# 1) Build the models. Offline TF-TRT runs in NVIDIA's TensorFlow 25.02 container on that GPU type.
python -m export --source twin:pnasnet_large --onnx   # or the hub model: {model} + {model}_onnx
python -m export.tftrt config --repository model_repository --model {model} --precision FP16
docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD":/src -w /src \\
  -e PYTHONPATH=/src -e HOME=/tmp nvcr.io/nvidia/tensorflow:25.02-tf2-py3 \\
  python -m export.tftrt convert --repository model_repository --model {model} --precision FP16
# 2) Helpers: start Triton (image, then tritonserver flags), measure one model, stop.
serve() {{ image=$1; shift
  docker run -d --name triton --gpus all --shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
    -v "$PWD/model_repository":/models -v trt-cache:/cache/tensorrt "$image" \\
    tritonserver --model-repository=/models --model-control-mode=explicit "$@"
  until curl -sf 127.0.0.1:8000/v2/health/ready; do sleep 5; done; }}
measure() {{ m=$1; label=$2; mkdir -p reports/gpu
  python -m loadtest --host 127.0.0.1:8001 --model "$m" --users 16 --duration 60s --out "reports/gpu/$label"
  for b in 1 8; do
    docker run --rm --net host -v "$PWD/reports":/reports nvcr.io/nvidia/tritonserver:25.02-py3-sdk \\
      perf_analyzer -m "$m" -u 127.0.0.1:8001 -i grpc -b $b --concurrency-range 1:8 \\
      --measurement-interval 10000 --percentile 95 -f "/reports/gpu/$label-b$b.csv"
  done
  curl -s "127.0.0.1:8000/v2/models/$m/stats" > "reports/gpu/$label-stats.json"; }}
stop() {{ docker stop -t 60 triton && docker rm triton; }}
# 3) TensorFlow and offline TF-TRT: Triton 25.02, the last release with the TensorFlow backend.
serve nvcr.io/nvidia/tritonserver:25.02-py3 --load-model={model} --load-model={model}_tftrt_fp16
measure {model} tf; measure {model}_tftrt_fp16 tftrt-offline; stop
# 4) Online TF-TRT (configs/trt_fp16.pbtxt: engines built during warmup).
serve nvcr.io/nvidia/tritonserver:25.02-py3 --load-model={model} --model-config-name=trt_fp16
measure {model} tftrt-online; stop
# 5) ONNX + TensorRT EP FP16 on a current release (engines cached in the trt-cache volume).
serve nvcr.io/nvidia/tritonserver:25.08-py3 --load-model={model}_onnx
measure {model}_onnx onnx-tensorrt; stop
# Compare p95 latency and throughput per label (reports/gpu/*); the stats files split queue and
# compute time. On Kubernetes the same: kubectl apply -k k8s/overlays/gpu | gpu-trt | gpu-onnx,
# then `kubectl -n pnasnet port-forward svc/triton 8000 8001` and run measure.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="twin:pnasnet_large")
    p.add_argument("--repository", type=Path, default=None,
                   help="repository to use (default: a fresh temporary one)")
    p.add_argument("--model", default="pnasnet_large")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=5, help="timed runs per batch size and round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="TF/onnxruntime alternations")
    p.add_argument("--timeout", type=float, default=3600.0, help="per child process")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--gpu-commands", action="store_true", help="print the GPU commands and exit")
    p.add_argument("--worker", choices=["tf", "ort"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        fn = worker_tf if args.worker == "tf" else worker_ort
        print(json.dumps(fn(args.path, args.batches, args.runs, args.warmup)))
        return 0
    if args.gpu_commands:
        print(gpu_commands(args.model))
        return 0

    tmp = None
    if args.repository is None:
        tmp = tempfile.TemporaryDirectory(prefix="optimize-bench-")
        args.repository = Path(tmp.name)
    try:
        return _run(args)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run(args: argparse.Namespace) -> int:
    from export import SAVEDMODEL_DIRNAME, repository
    from export.onnx import ONNX_FILENAME, onnx_model_name

    repo, model = args.repository, args.model
    print(f"repository {repo}; source {args.source}; {os.cpu_count()} cores", flush=True)
    version, export_s = ensure_savedmodel(repo, model, args.source, args.timeout)
    if export_s is not None:
        print(f"exported {model} version {version} in {export_s:.1f} s", flush=True)
    onnx_version, record, convert_wall = convert(repo, model, version, args.timeout)
    print(f"converted to ONNX: tf2onnx {record['convert_seconds']:.1f} s; with contract check, "
          f"parity and configs {convert_wall:.1f} s", flush=True)
    saved = repository.model_dir(repo, model) / str(version) / SAVEDMODEL_DIRNAME
    onnx_path = repository.model_dir(repo, onnx_model_name(model)) / str(onnx_version) / ONNX_FILENAME

    rounds: dict[str, list[dict]] = {"tensorflow": [], "onnxruntime": []}
    for r in range(args.rounds):
        for engine, path in (("tf", saved), ("ort", onnx_path)):
            res = _measure(engine, path, args.batches, args.runs, args.warmup, args.timeout)
            rounds[res["engine"]].append(res)
            lat = res["latency"]
            text = ", ".join(f"b{b} {lat[str(b)]['median_ms']:.0f} ms" for b in args.batches)
            print(f"round {r + 1} {res['engine']:<11} load {res['load_s']:.1f} s; {text} (1-min load "
                  f"average {lat['loadavg_before']:.1f} -> {lat['loadavg_after']:.1f})", flush=True)

    def med(engine: str, batch: int) -> float:
        return statistics.median(x["latency"][str(batch)]["median_ms"] for x in rounds[engine])

    parity = record["parity"]
    lines = [
        f"| batch | TensorFlow {rounds['tensorflow'][0]['version']} (ms) | "
        f"onnxruntime {rounds['onnxruntime'][0]['version']} (ms) | onnxruntime / TF | "
        "per image TF / ORT (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b in args.batches:
        tf_ms, ort_ms = med("tensorflow", b), med("onnxruntime", b)
        lines.append(f"| {b} | {tf_ms:.0f} | {ort_ms:.0f} | {ort_ms / tf_ms:.2f}x | "
                     f"{tf_ms / b:.0f} / {ort_ms / b:.0f} |")
    table = "\n".join(lines)
    print()
    print(f"{model} from {args.source}, CPU ({os.cpu_count()} cores), median of {args.runs} runs x "
          f"{args.rounds} rounds, each engine in its own process:")
    print(table)
    print(f"\nconversion (tf2onnx, opset {record['opset']}): {record['convert_seconds']:.1f} s; "
          f"with contract check + parity + configs: {convert_wall:.1f} s")
    print(f"parity on {parity['batch']} images: max |onnx - tf| = {parity['max_abs_diff']:.3g} "
          f"(max |tf| = {parity['max_abs_reference']:.3g}, relative "
          f"{parity['max_abs_diff'] / parity['max_abs_reference']:.2g}); min cosine "
          f"{parity['min_cosine']:.9f}; tolerance {record['rtol']:g} x max |tf| + {record['atol']:g}")
    print(f"load: TF {statistics.median(x['load_s'] for x in rounds['tensorflow']):.1f} s, "
          f"onnxruntime {statistics.median(x['load_s'] for x in rounds['onnxruntime']):.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"source": args.source, "rounds": rounds, "conversion": record,
                                         "convert_wall_s": convert_wall, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
