"""CPU benchmark of the serving paths: TensorFlow (SavedModel), OpenVINO (IR, f32 and bf16) and
onnxruntime (ONNX) on the same network, in process and end to end through the local Triton.

Why: the local CPU server can run any of them; this measures which is faster for PNASNet-5 Large, at
batch 1 and 8, plus what the conversions cost. Each engine runs in its own child process, one after
the other (their thread pools fight on a small machine), on the same input; rounds alternate the
engines so that a neighbour's load on a shared machine shows up as round-to-round spread instead
of biasing one side. Then the local Triton server is started on the TensorFlow config
(`local_tf`) and on the OpenVINO one (`cpu`, the default), alternately, and the project's load test
sweeps the same user counts against each: requests/s, p50/p95, the knee. Nothing here is a
pass/fail check: it prints numbers and ratios.

    python bench/optimize_bench.py                       # faithful twin, exported if missing
    python bench/optimize_bench.py --source twin:pnasnet_reduced --runs 5 --rounds 1
    make bench-cpu                                       # the faithful twin, all of the above

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
    return {"engine": "tensorflow", "version": tf.__version__, "load_s": load_s,
            "peak_rss_mb": _peak_rss_mb(), "latency": out}


def worker_ort(path: str, batches: list[int], runs: int, warmup: int) -> dict:
    """Latency of the ONNX model in onnxruntime on CPU (what onnxruntime_cpu runs)."""
    import onnxruntime as ort

    from export.onnx import ort_session

    start = time.perf_counter()
    sess = ort_session(Path(path))
    load_s = time.perf_counter() - start
    dims = tuple(int(d) for d in sess.get_inputs()[0].shape[1:])
    out = _time_runs(lambda x: sess.run(["embedding"], {"images": x}), batches, dims, runs, warmup)
    return {"engine": "onnxruntime", "version": ort.__version__, "load_s": load_s,
            "peak_rss_mb": _peak_rss_mb(), "latency": out}


def worker_ov(path: str, batches: list[int], runs: int, warmup: int, precision: str) -> dict:
    """Latency of the IR in OpenVINO at one inference precision (what openvino_cpu runs)."""
    import openvino as ov

    from export.openvino import compile_ir

    start = time.perf_counter()
    compiled = compile_ir(Path(path), precision)
    request = compiled.create_infer_request()
    load_s = time.perf_counter() - start
    dims = tuple(int(d.get_length()) for d in list(compiled.inputs[0].get_partial_shape())[1:])
    out = _time_runs(lambda x: request.infer({0: x}), batches, dims, runs, warmup)
    got = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return {"engine": f"openvino-{precision}", "version": ov.__version__, "load_s": load_s,
            "precision": got, "peak_rss_mb": _peak_rss_mb(), "latency": out}


def worker_ov_savedmodel(path: str) -> dict:
    """What loading the SavedModel directly in OpenVINO would cost per server start (no IR)."""
    import openvino as ov

    start = time.perf_counter()
    model = ov.convert_model(path)
    ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    return {"engine": "openvino-savedmodel", "version": ov.__version__,
            "load_s": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- driver

def _child(args: list[str], timeout: float, ok: tuple[int, ...] = (0,)) -> str:
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    if done.returncode not in ok:
        raise SystemExit(f"child failed: {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _measure(engine: str, path: Path, batches: list[int], runs: int, warmup: int,
             timeout: float) -> dict:
    out = _child([__file__, "--worker", engine, "--path", str(path), "--batches",
                  *map(str, batches), "--runs", str(runs), "--warmup", str(warmup)], timeout)
    return json.loads(out.strip().splitlines()[-1])


# The local server's configs compared end to end: TensorFlow vs OpenVINO (the default).
E2E_CONFIGS = {"tensorflow": "local_tf", "openvino": "cpu"}


def end_to_end(repo: Path, model: str, users: str, step_duration: str, rounds: int,
               out_dir: Path, timeout: float) -> dict[str, list[dict]]:
    """Sweep the same users against the local Triton on each config, alternating configs per round;
    one server at a time, started and stopped here."""
    from loadtest.sweep import label as sweep_label
    from serve.server import LocalTritonServer, Ports

    found: dict[str, list[dict]] = {name: [] for name in E2E_CONFIGS}
    for r in range(rounds):
        for name, config in E2E_CONFIGS.items():
            work = out_dir / f"{name}-r{r + 1}"
            with LocalTritonServer(repo, ports=Ports.free(), config_name=config, models=[model],
                                   work_dir=work) as srv:
                start = time.monotonic()  # from ready: the sweep's own wall time
                out = work / "sweep"
                # exit 1: a level had failures; 4: the generator saturated (both visible in the rows)
                _child(["-m", "loadtest", "sweep", "--host", srv.grpc_url, "--model", model,
                        "--users", users, "--step-duration", step_duration, "--out", str(out)],
                       timeout, ok=(0, 1, 4))
                result = json.loads(Path(f"{out}_sweep.json").read_text())
                for row in result["rows"]:
                    row["load"] = sweep_label(row)
                knee = result.get("knee")
                result["knee_row"] = result["rows"][knee] if knee is not None else None
                result["wall_s"] = time.monotonic() - start
            found[name].append(result)
            knee = result.get("knee_row") or {}
            print(f"round {r + 1} end to end {name:<10} ({config}): "
                  + ", ".join(f"{row['load']} {row['rps'] or 0:.2f} req/s p50 {row['p50_ms'] or 0:.0f}"
                              for row in result["rows"])
                  + f"; knee {knee.get('load')}", flush=True)
    return found


def e2e_table(found: dict[str, list[dict]]) -> tuple[str, str]:
    """Medians over rounds per user level; the ratio at OpenVINO's knee and at every level."""
    levels = [row["load"] for row in found["tensorflow"][0]["rows"]]

    def med(name: str, i: int, key: str) -> float:
        vals = [x["rows"][i][key] for x in found[name] if x["rows"][i][key] is not None]
        return statistics.median(vals) if vals else float("nan")

    lines = ["| load | TF req/s | TF p50 / p95 ms | OpenVINO req/s | OpenVINO p50 / p95 ms | "
             "OpenVINO / TF req/s |", "|---|---:|---:|---:|---:|---:|"]
    ratios = {}
    for i, level in enumerate(levels):
        tf_rps, ov_rps = med("tensorflow", i, "rps"), med("openvino", i, "rps")
        ratios[level] = ov_rps / tf_rps if tf_rps else float("nan")
        lines.append(f"| {level} | {tf_rps:.2f} | {med('tensorflow', i, 'p50_ms'):.0f} / "
                     f"{med('tensorflow', i, 'p95_ms'):.0f} | {ov_rps:.2f} | "
                     f"{med('openvino', i, 'p50_ms'):.0f} / {med('openvino', i, 'p95_ms'):.0f} | "
                     f"{ratios[level]:.2f}x |")
    knees = {name: [x["knee_row"]["load"] for x in runs if x.get("knee_row")]
             for name, runs in found.items()}
    ov_knee = statistics.mode(knees["openvino"]) if knees["openvino"] else None
    summary = (f"knee: TensorFlow {knees['tensorflow']}, OpenVINO {knees['openvino']}; "
               f"requests/s OpenVINO / TF at OpenVINO's knee ({ov_knee}): "
               f"{ratios.get(ov_knee, float('nan')):.2f}x")
    return "\n".join(lines), summary


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
    p.add_argument("--e2e-users", default="1,2,4",
                   help="users of the end-to-end sweep on each local config (default: %(default)s)")
    p.add_argument("--e2e-step-duration", default="30s", help="per user level (default: %(default)s)")
    p.add_argument("--e2e-rounds", type=int, default=1, help="TF/OpenVINO server alternations")
    p.add_argument("--no-e2e", dest="e2e", action="store_false", help="in-process numbers only")
    p.add_argument("--worker", choices=["tf", "ort", "ov-f32", "ov-bf16", "ov-savedmodel"],
                   help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        if args.worker == "ov-savedmodel":
            print(json.dumps(worker_ov_savedmodel(args.path)))
        elif args.worker.startswith("ov-"):
            print(json.dumps(worker_ov(args.path, args.batches, args.runs, args.warmup,
                                       args.worker[3:])))
        else:
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


ENGINES = ("tensorflow", "openvino-f32", "openvino-bf16", "onnxruntime")


def _run(args: argparse.Namespace) -> int:
    from export import SAVEDMODEL_DIRNAME, repository
    from export.onnx import ONNX_FILENAME, onnx_model_name
    from export.openvino import IR_FILENAME, PROVENANCE_FILENAME

    repo, model = args.repository, args.model
    print(f"repository {repo}; source {args.source}; {os.cpu_count()} cores", flush=True)
    version, export_s = ensure_savedmodel(repo, model, args.source, args.timeout)
    if export_s is not None:
        print(f"exported {model} version {version} in {export_s:.1f} s", flush=True)
    version_dir = repository.model_dir(repo, model) / str(version)
    saved, ir = version_dir / SAVEDMODEL_DIRNAME, version_dir / IR_FILENAME
    if not ir.is_file():
        raise SystemExit(f"{ir} is missing: export the version with OpenVINO (without --no-openvino)")
    ov_record = json.loads((version_dir / PROVENANCE_FILENAME).read_text())
    onnx_version, record, convert_wall = convert(repo, model, version, args.timeout)
    print(f"converted to ONNX: tf2onnx {record['convert_seconds']:.1f} s; with contract check, "
          f"parity and configs {convert_wall:.1f} s", flush=True)
    onnx_path = repository.model_dir(repo, onnx_model_name(model)) / str(onnx_version) / ONNX_FILENAME

    workers = (("tf", saved), ("ov-f32", ir), ("ov-bf16", ir), ("ort", onnx_path))
    rounds: dict[str, list[dict]] = {name: [] for name in ENGINES}
    for r in range(args.rounds):
        for engine, path in workers:
            res = _measure(engine, path, args.batches, args.runs, args.warmup, args.timeout)
            rounds[res["engine"]].append(res)
            lat = res["latency"]
            text = ", ".join(f"b{b} {lat[str(b)]['median_ms']:.0f} ms" for b in args.batches)
            print(f"round {r + 1} {res['engine']:<13} load {res['load_s']:.1f} s; {text} (1-min load "
                  f"average {lat['loadavg_before']:.1f} -> {lat['loadavg_after']:.1f})", flush=True)
    direct = json.loads(_child([__file__, "--worker", "ov-savedmodel", "--path", str(saved)],
                               args.timeout).strip().splitlines()[-1])

    def med(engine: str, batch: int) -> float:
        return statistics.median(x["latency"][str(batch)]["median_ms"] for x in rounds[engine])

    def ratio(engine: str, batch: int) -> float:
        """Median over rounds of the per-round TF / engine ratio (a neighbour's load cancels)."""
        return statistics.median(t["latency"][str(batch)]["median_ms"] / e["latency"][str(batch)]
                                 ["median_ms"] for t, e in zip(rounds["tensorflow"], rounds[engine],
                                                                strict=True))

    version_of = {e: rounds[e][0]["version"] for e in ENGINES}
    lines = [
        f"| batch | TensorFlow {version_of['tensorflow']} | OpenVINO f32 | OpenVINO bf16 | "
        f"onnxruntime {version_of['onnxruntime']} | speed-up vs TF: OV f32 / OV bf16 / ORT |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for b in args.batches:
        cells = " | ".join(f"{med(e, b):.0f} ms" for e in ENGINES)
        lines.append(f"| {b} | {cells} | {ratio('openvino-f32', b):.2f}x / "
                     f"{ratio('openvino-bf16', b):.2f}x / {ratio('onnxruntime', b):.2f}x |")
    table = "\n".join(lines)
    print()
    print(f"{model} from {args.source}, CPU ({os.cpu_count()} cores), median of {args.runs} runs x "
          f"{args.rounds} rounds, each engine in its own process (OpenVINO {version_of['openvino-f32']};"
          f" bf16 ran as {rounds['openvino-bf16'][0]['precision']}):")
    print(table)
    ov_par = ov_record["parity"]
    print(f"\nOpenVINO IR (export): converted in {ov_record['convert_seconds']:.1f} s; parity on "
          f"{ov_par['f32']['images']} images (sample photos + a random batch): f32 max diff "
          f"{ov_par['f32']['max_abs_diff'] / ov_par['f32']['max_abs_reference']:.2g} of max |output|,"
          f" bf16 min cosine {ov_par['bf16']['min_cosine']:.6f}")
    print(f"conversion (tf2onnx, opset {record['opset']}): {record['convert_seconds']:.1f} s; "
          f"with contract check + parity + configs: {convert_wall:.1f} s")
    parity = record["parity"]
    print(f"ONNX parity on {parity['images']} images: max |onnx - tf| = {parity['max_abs_diff']:.3g} "
          f"(relative {parity['max_abs_diff'] / parity['max_abs_reference']:.2g}); min cosine "
          f"{parity['min_cosine']:.9f}")
    print("load (and peak RSS of the measuring process): " + ", ".join(
        f"{e} {statistics.median(x['load_s'] for x in rounds[e]):.1f} s "
        f"({statistics.median(x['peak_rss_mb'] for x in rounds[e]):.0f} MB)" for e in ENGINES)
        + f"; OpenVINO from the SavedModel directly (convert + compile, every start) "
          f"{direct['load_s']:.1f} s ({direct['peak_rss_mb']:.0f} MB)")
    e2e = None
    if args.e2e:
        print(f"\nend to end: local Triton, `python -m loadtest sweep --users {args.e2e_users}` "
              f"({args.e2e_step_duration} per level), TF config vs OpenVINO config", flush=True)
        out_dir = Path(tempfile.mkdtemp(prefix="optimize-bench-e2e-"))  # server logs, reports
        print(f"server logs and load-test reports: {out_dir}", flush=True)
        e2e = end_to_end(repo, model, args.e2e_users, args.e2e_step_duration, args.e2e_rounds,
                         out_dir, args.timeout)
        e2e_text, summary = e2e_table(e2e)
        print()
        print(e2e_text)
        print(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"source": args.source, "rounds": rounds, "conversion": record,
                                         "openvino": ov_record, "openvino_savedmodel_load": direct,
                                         "convert_wall_s": convert_wall, "table": table,
                                         "end_to_end": e2e}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
