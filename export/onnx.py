"""The ONNX serving path: the exported SavedModel converted with tf2onnx, as its own Triton model.

Why it exists: Triton's TensorFlow backend ends at release 25.02. On current releases the same network
is served by the onnxruntime backend, with TensorRT as its GPU execution provider (FP16, engines
cached on disk), so users who must stay current keep one repository and one contract.

Why tf2onnx: it reads the SavedModel's `serving_default` signature directly, keeps the tensor names
(`images` -> `embedding`) and the dynamic batch dimension, and converts the separable convolutions,
average pools and concatenations of PNASNet cells to plain ONNX ops (opset 17: supported by every
TensorRT 8.6+/10.x parser and onnxruntime release in current Triton images). The alternatives either
need a Keras model (tf2onnx's Keras path, keras2onnx: the hub model is not one) or go through TFLite,
which would add a second lossy conversion.

Layout written (versions atomic, as for the SavedModel):

    <model>_onnx/<N>/model.onnx           the converted network
    <model>_onnx/<N>/conversion.json      which SavedModel version it came from, and the parity found
    <model>_onnx/config.pbtxt             GPU, onnxruntime backend + TensorRT EP (FP16, engine cache)
    <model>_onnx/configs/ort_cpu.pbtxt    CPU nodes, onnxruntime backend (current Triton, no GPU)
    <model>_onnx/configs/local_onnx.pbtxt the local server: this project's Python-based onnxruntime
                                          backend (serve/backends/onnxruntime_cpu)

The local server keeps TensorFlow by default (`configs/cpu.pbtxt` of the SavedModel model): on CPU,
onnxruntime runs this network slower than TensorFlow (bench/optimize_bench.py: its depthwise 5x5 and
7x7 convolutions on channel counts like 54/108/216 miss onnxruntime's blocked kernels and dominate
its time, where oneDNN handles them). So the ONNX model is not in the `cpu` config set; choosing
it locally is one flag, which serves only the ONNX model:

    python -m serve --config-name local_onnx

Run it alone on an existing version: `python -m export.onnx --repository R --model M [--version N]`,
or together with an export: `python -m export --onnx`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export import SAVEDMODEL_DIRNAME, fidelity, repository
from export.errors import ExportError, FidelityError, SourceError
from export.fidelity import Parity
from export.progress import Steps

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

    from export.model_config import BatchingOptions
    from export.signature import Interface

ONNX_FILENAME = "model.onnx"
MODEL_SUFFIX = "_onnx"
OPSET = 17
LOCAL_BACKEND = "onnxruntime_cpu"
LOCAL_CONFIG_NAME = "local_onnx"
PROVENANCE_FILENAME = "conversion.json"
# Where the TensorRT execution provider keeps its engines and timing cache inside the Triton pod
# (k8s/overlays/gpu-onnx mounts a volume there). Engines are specific to a GPU model and TensorRT
# version; onnxruntime names them by compute capability and rebuilds when they do not match.
TRT_CACHE_ROOT = "/cache/tensorrt"
# Parity: max |onnx - tf| <= RTOL * max |tf| + ATOL on a fixed batch. Both run float32 on CPU; the
# difference is summation order (oneDNN vs MLAS kernels), measured at ~1e-6 relative on the PNASNet
# twins, so 1e-4 leaves room for other CPUs without hiding a wrong graph (those differ by O(1)).
RTOL = 1e-4
ATOL = 1e-6
CONVERT_TIMEOUT_S = 3600.0


class ConversionError(ExportError):
    """tf2onnx failed, or its output does not have the serving contract."""


@dataclass
class OnnxResult:
    model: str
    version: int
    path: Path
    source_model: str
    source_version: int
    parity: Parity
    convert_seconds: float
    configs: list[Path]


def onnx_model_name(model: str) -> str:
    """The ONNX model sits beside the SavedModel model under its own name."""
    return f"{model}{MODEL_SUFFIX}"


def source_savedmodel(repo: Path, model: str, version: int | None = None) -> tuple[int, Path]:
    """The SavedModel folder to convert: `version`, else the newest one."""
    found = repository.versions(repo, model)
    if not found:
        raise SourceError(f"{repository.model_dir(repo, model)} has no version to convert; "
                          f"export one first: python -m export --repository {repo} --model {model}")
    number = found[-1] if version is None else version
    if number not in found:
        raise SourceError(f"{model} has no version {number} (versions: {found})")
    saved = repository.model_dir(repo, model) / str(number) / SAVEDMODEL_DIRNAME
    if not (saved / "saved_model.pb").is_file():
        raise SourceError(f"{saved} is not a SavedModel")
    return number, saved


def source_interface(repo: Path, model: str) -> Interface:
    """The contract, read from the source model's config.pbtxt (written from its signature)."""
    from export import model_config

    path = repository.model_dir(repo, model) / "config.pbtxt"
    if not path.is_file():
        raise SourceError(f"{path} is missing; export the model first")
    return model_config.interface_of(model_config.read(path))


def convert_savedmodel(saved: Path, output: Path, *, opset: int = OPSET,
                       timeout: float = CONVERT_TIMEOUT_S) -> float:
    """Run tf2onnx's command line on `saved`; returns seconds taken.

    A child process, so the converter's TensorFlow graph and memory (several GB for PNASNet-5 Large)
    are gone when it ends, and its thread pools never compete with the caller's.
    """
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
           "--tag", "serve", "--signature_def", "serving_default",
           "--opset", str(opset), "--output", str(output)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"tf2onnx did not finish within {timeout:.0f} s") from exc
    seconds = time.monotonic() - start
    if done.returncode != 0 or not output.is_file():
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        hint = ""
        if "No module named tf2onnx" in tail:
            hint = "\ninstall the onnx extra: pip install -e '.[onnx]'"
        raise ConversionError(f"tf2onnx failed (exit {done.returncode}):\n{tail}{hint}")
    return seconds


def check_contract(onnx_path: Path, iface: Interface) -> None:
    """The ONNX graph must be valid and keep the names, dims and dynamic batch of the signature."""
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path))
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"{onnx_path} is not a valid ONNX model: {exc}") from exc
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                for d in value.type.tensor_type.shape.dim]

    expected = [(iface.input_name, iface.input_dims, inputs), (iface.output_name, iface.output_dims,
                                                               list(graph.output))]
    for name, want, values in expected:
        if [v.name for v in values] != [name]:
            raise ConversionError(f"ONNX graph has {[v.name for v in values]}; expected [{name!r}]")
        got = dims(values[0])
        if got[1:] != list(want) or isinstance(got[0], int):
            raise ConversionError(f"{name}: ONNX dims {got}; expected [batch, {list(want)}] with a "
                                  f"dynamic batch")
        if values[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ConversionError(f"{name}: ONNX element type is not float32")


def ort_session(onnx_path: Path, threads: int = 0):  # noqa: ANN201 - onnxruntime is optional
    """An onnxruntime CPU session (threads 0 = onnxruntime's default, one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def compare(reference: np.ndarray, got: np.ndarray) -> Parity:
    """Parity figures of the ONNX model's `got` against the SavedModel's `reference`."""
    return fidelity.compare(reference, got, "ONNX model")


def parity(saved: Path, onnx_path: Path, iface: Interface, batch: np.ndarray | None = None) -> Parity:
    """SavedModel (TensorFlow) and ONNX model (onnxruntime, CPU) on the same fixed batch."""
    import tensorflow as tf

    batch = fidelity.probe_batch(iface) if batch is None else batch
    loaded = tf.saved_model.load(str(saved))
    fn = loaded.signatures["serving_default"]
    reference = fn(**{iface.input_name: tf.constant(batch)})[iface.output_name].numpy()
    got = ort_session(onnx_path).run([iface.output_name], {iface.input_name: batch})[0]
    return compare(reference, got)


def _profile(iface: Interface, batch: int) -> str:
    return f"{iface.input_name}:{'x'.join(str(d) for d in (batch, *iface.input_dims))}"


def gpu_trt_config(name: str, iface: Interface, opts: BatchingOptions | None = None,
                   cache_root: str = TRT_CACHE_ROOT) -> mc.ModelConfig:
    """onnxruntime backend on GPU with the TensorRT execution provider at FP16 (current Triton).

    One optimization profile covers batch 1..max_batch_size, so the dynamic batcher never triggers
    an engine rebuild; engines and the timing cache persist under `cache_root/<name>` and warmup at
    batch 1 and at the largest batch builds or loads them before the model reports ready.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    from export import model_config

    opts = opts or model_config.GPU
    cfg = model_config._base(name, iface, opts, mc.ModelInstanceGroup.KIND_GPU)
    cfg.backend = "onnxruntime"
    cfg.default_model_filename = ONNX_FILENAME
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    cache = f"{cache_root}/{name}"
    accel.parameters.update({
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": _profile(iface, 1),
        "trt_profile_opt_shapes": _profile(iface, max(opts.preferred_batch_sizes or (1,))),
        "trt_profile_max_shapes": _profile(iface, opts.max_batch_size),
    })
    if opts.max_batch_size > 1:
        warm = cfg.model_warmup.add(name=f"random_batch_{opts.max_batch_size}",
                                    batch_size=opts.max_batch_size)
        warm.inputs[iface.input_name].CopyFrom(cfg.model_warmup[0].inputs[iface.input_name])
    return cfg


def ort_cpu_config(name: str, iface: Interface, opts: BatchingOptions | None = None) -> mc.ModelConfig:
    """onnxruntime backend on CPU nodes (a current Triton release without a GPU)."""
    from tritonclient.grpc import model_config_pb2 as mc

    from export import model_config

    cfg = model_config._base(name, iface, opts or model_config.CPU, mc.ModelInstanceGroup.KIND_CPU)
    cfg.backend = "onnxruntime"
    cfg.default_model_filename = ONNX_FILENAME
    return cfg


def local_cpu_config(name: str, iface: Interface, opts: BatchingOptions | None = None) -> mc.ModelConfig:
    """The local server (no onnxruntime backend in the bundled tritonserver): a Python-based one.

    Written as `configs/local_onnx.pbtxt`, not `cpu.pbtxt`, so `python -m serve` (config `cpu`) keeps
    serving the faster TensorFlow path and never loads both copies of the network on a small machine.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    from export import model_config

    cfg = model_config._base(name, iface, opts or model_config.CPU, mc.ModelInstanceGroup.KIND_CPU)
    cfg.backend = LOCAL_BACKEND
    cfg.default_model_filename = ONNX_FILENAME
    cfg.parameters["ORT_INTRA_OP_THREADS"].string_value = "0"
    return cfg


def all_configs(name: str, iface: Interface) -> dict[str, mc.ModelConfig]:
    """Relative path inside the ONNX model's folder -> config."""
    return {
        "config.pbtxt": gpu_trt_config(name, iface),
        "configs/ort_cpu.pbtxt": ort_cpu_config(name, iface),
        f"configs/{LOCAL_CONFIG_NAME}.pbtxt": local_cpu_config(name, iface),
    }


def write_configs(repo: Path, name: str, iface: Interface) -> list[Path]:
    """Write every config variant of the ONNX model `name` (atomic per file)."""
    from export.model_config import to_text

    written = []
    for rel, cfg in all_configs(name, iface).items():
        path = repository.model_dir(repo, name) / rel
        repository.write_text_atomic(path, to_text(cfg))
        written.append(path)
    return written


def export_onnx(repo: Path, model: str, *, version: int | None = None, opset: int = OPSET,
                rtol: float = RTOL, atol: float = ATOL,
                progress: Callable[[str], None] | None = None) -> OnnxResult:
    """Convert version `version` (default: newest) of `model` into the next version of `<model>_onnx`.

    Staged, checked (graph contract and parity with the SavedModel), configs written, then renamed
    into place: a failed or killed conversion never leaves a numbered folder Triton would load.
    """
    say = progress or (lambda _msg: None)
    repo = Path(repo)
    target = onnx_model_name(model)
    source_version, saved = source_savedmodel(repo, model, version)
    iface = source_interface(repo, model)
    for stale in repository.clean_stale_staging(repo, target):
        say(f"removed {stale.name}, left by a conversion that did not finish")
    staging = repository.new_staging_dir(repo, target)
    try:
        onnx_path = staging / ONNX_FILENAME
        say(f"converting {model} version {source_version} to ONNX (tf2onnx, opset {opset})")
        seconds = convert_savedmodel(saved, onnx_path, opset=opset)
        say(f"converted in {seconds:.1f} s ({onnx_path.stat().st_size / 1e6:.1f} MB)")
        check_contract(onnx_path, iface)
        say("checking parity: onnxruntime (CPU) vs TensorFlow on a fixed batch")
        result = parity(saved, onnx_path, iface)
        say(f"max abs difference {result.max_abs_diff:.3g} ({result.relative:.2g} of max |output|, "
            f"tolerance {rtol:g} relative + {atol:g}); min cosine {result.min_cosine:.8f}")
        if not result.within(rtol, atol):
            raise FidelityError(f"ONNX model differs from the SavedModel by {result.max_abs_diff:.3g} "
                                f"(> {rtol:g} x {result.max_abs_reference:.3g} + {atol:g})")
        record = {"source_model": model, "source_version": source_version, "converter": "tf2onnx",
                  "converter_version": _version("tf2onnx"), "opset": opset,
                  "convert_seconds": round(seconds, 2),
                  "parity": asdict(result), "rtol": rtol, "atol": atol}
        (staging / PROVENANCE_FILENAME).write_text(json.dumps(record, indent=2) + "\n")
        # Configs first: a version never appears without the config that serves it.
        configs = write_configs(repo, target, iface)
        number = repository.commit_version(staging, repo, target)
        staging = None
        say(f"committed {target} version {number}")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return OnnxResult(target, number, repository.model_dir(repo, target) / str(number), model,
                      source_version, result, seconds, configs)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`python -m export` option: convert the version just exported."""
    p.add_argument("--onnx", action="store_true",
                   help="also convert the new version to <model>_onnx/<N>/model.onnx (tf2onnx; "
                        "parity with the SavedModel checked in onnxruntime)")


def preflight(args: argparse.Namespace) -> None:
    """Before the export: `--onnx` needs the onnx extra; say so before any work, not after it."""
    if not getattr(args, "onnx", False):
        return
    import importlib.util

    absent = [m for m in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if absent:
        raise ExportError(f"--onnx needs {', '.join(absent)}: pip install -e '.[onnx]'")


def run_after_export(args: argparse.Namespace, version: int,
                     progress: Callable[[str], None] | None = None) -> str | None:
    """The `--onnx` step of `python -m export`; returns its result line (None when not asked)."""
    if not getattr(args, "onnx", False):
        return None
    result = export_onnx(args.repository, args.model, version=version, progress=progress)
    return (f"converted {result.source_model}/{result.source_version} -> {result.path} (max abs diff "
            f"{result.parity.max_abs_diff:.3g}, {result.parity.relative:.2g} relative; "
            f"{result.convert_seconds:.1f} s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.onnx",
                                description="Convert an exported SavedModel version to <model>_onnx.")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--model", default="pnasnet_large")
    p.add_argument("--version", type=int, default=None, help="SavedModel version (default: newest)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line for converting a version that is already in the repository."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with Steps(label="onnx") as say:
        try:
            result = export_onnx(args.repository, args.model, version=args.version, opset=args.opset,
                                 progress=say)
        except ExportError as exc:
            print(f"export.onnx: error: {exc}", file=sys.stderr)
            return 2
        print(f"converted {result.source_model}/{result.source_version} -> {result.path} "
              f"(max abs diff {result.parity.max_abs_diff:.3g}; {result.convert_seconds:.1f} s)")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
