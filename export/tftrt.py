"""Offline TF-TRT: the exported SavedModel converted with TensorRT, engines prebuilt, as its own model.

Why offline: online TF-TRT (`configs/trt_fp16.pbtxt`) builds engines in every new pod during load
and warmup; converting once, on the GPU type that serves, moves that work out of pod start-up.

Where it can run: TensorFlow's pip wheels have no TensorRT after 2.17, and Triton's TensorFlow backend
ends at 25.02. So conversion runs in NVIDIA's TensorFlow 25.02 container (TensorFlow 2.17 with the
same TensorRT as Triton 25.02's TensorFlow backend, so the serialized engines load there), on a node
with the GPU type that will serve: engines are specific to the GPU they were built on. On a machine
without TensorRT or a GPU every entry point stops before doing any work and prints the exact command.

Two halves, because the container's TensorFlow 2.17 needs protobuf < 5 while this project's config
protobufs (tritonclient 2.73) need protobuf 6:

    python -m export.tftrt config  --repository R --model M --precision FP16    # project environment
    python -m export.tftrt convert --repository R --model M --precision FP16    # NGC TF 25.02 + GPU

`config` writes `<model>_tftrt_<precision>/config.pbtxt` (no version yet: with explicit model control
Triton loads nothing until asked). `convert` needs only TensorFlow and numpy: it converts the
`serving_default` signature of the newest (or `--version`) SavedModel, builds one engine per batch
size, checks the result against the source on a fixed batch, and renames the staged version into
place (`<model>_tftrt_<precision>/<N>/model.savedmodel`). k8s/tftrt runs both as one Job.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export import DEFAULT_MODEL, SAVEDMODEL_DIRNAME, repository
from export.errors import ExportError, FidelityError, SourceError
from export.progress import Steps

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

    from export.fidelity import Parity
    from export.signature import Interface

PRECISIONS = ("FP32", "FP16", "INT8")
NGC_TENSORFLOW_IMAGE = "nvcr.io/nvidia/tensorflow:25.02-tf2-py3"
# One engine per batch size the dynamic batcher forms (model_config.GPU: 1 and 8, 16, 32).
DEFAULT_BATCH_SIZES = (1, 8, 16, 32)
MAX_WORKSPACE_BYTES = 1 << 30
MINIMUM_SEGMENT_SIZE = 3
CALIBRATION_BATCH = 8
CALIBRATION_LIMIT = 512
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
PROVENANCE_FILENAME = "conversion.json"
# Agreement with the source SavedModel on a fixed batch, by precision: minimum cosine similarity
# per embedding and maximum error relative to the largest output. FP32 differs by kernel choice
# only; FP16 keeps ~3 significant digits through ~100 layers; INT8 is judged on direction alone.
MIN_COSINE = {"FP32": 0.99999, "FP16": 0.999, "INT8": 0.98}
MAX_RELATIVE = {"FP32": 1e-3, "FP16": 5e-2, "INT8": None}


class TensorRTMissingError(ExportError):
    """This machine cannot run TF-TRT; the message says what is missing and where to run it."""


@dataclass(frozen=True)
class TensorRTStatus:
    """What TF-TRT needs here: TensorFlow built with TensorRT, TensorRT loadable, and a GPU."""

    tensorflow_version: str
    tensorrt_build: bool
    tensorrt_version: str | None
    gpus: tuple[str, ...]
    errors: tuple[str, ...] = field(default=())

    def missing(self) -> list[str]:
        out = []
        if not self.tensorrt_build:
            out.append(f"this TensorFlow ({self.tensorflow_version}) is built without TensorRT "
                       f"(TensorFlow's pip wheels have none after 2.17)")
        elif self.tensorrt_version is None:
            out.append("TensorFlow was built with TensorRT but the TensorRT libraries do not load "
                       f"({'; '.join(self.errors) or 'libnvinfer not found'})")
        if not self.gpus:
            out.append("no GPU is visible to TensorFlow (TensorRT builds engines on, and for, "
                       "the GPU that will serve them)")
        return out


def tftrt_model_name(model: str, precision: str) -> str:
    """`pnasnet_large_tftrt_fp16`: one model per precision, beside the SavedModel model."""
    return f"{model}_tftrt_{precision.lower()}"


def tensorrt_status() -> TensorRTStatus:
    """Inspect this TensorFlow: TensorRT in the build, TensorRT libraries loadable, GPUs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    build = bool(info.get("is_tensorrt_build", False))
    version = None
    errors = []
    if build:
        try:
            from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils as trt_utils

            if trt_utils.is_tensorrt_enabled():
                version = ".".join(str(v) for v in trt_utils.get_loaded_tensorrt_version())
        except Exception as exc:  # noqa: BLE001 - any failure here means "not usable"
            errors.append(str(exc))
    gpus = tuple(d.name for d in tf.config.list_physical_devices("GPU"))
    return TensorRTStatus(tf.__version__, build, version, gpus, tuple(errors))


def _commands(repo: Path, model: str, precision: str, batch_sizes: Sequence[int],
              calibration: Path | None, version: int | None) -> tuple[list[str], list[str]]:
    """The `config` command (here) and the `docker run ... convert` command (GPU node)."""
    cwd = Path.cwd().resolve()
    repo_abs = Path(repo).resolve()
    mounts = ["-v", f"{cwd}:/src"]
    try:
        repo_in = str(repo_abs.relative_to(cwd))
    except ValueError:
        mounts += ["-v", f"{repo_abs}:/models"]
        repo_in = "/models"
    common = ["--repository", str(repo), "--model", model, "--precision", precision,
              "--batch-sizes", ",".join(map(str, batch_sizes))]
    config_cmd = ["python", "-m", "export.tftrt", "config", *common]
    convert_args = ["--repository", repo_in, "--model", model, "--precision", precision,
                    "--batch-sizes", ",".join(map(str, batch_sizes))]
    if version is not None:
        convert_args += ["--version", str(version)]
    if calibration is not None:
        cal_abs = Path(calibration).resolve()
        try:
            cal_in = str(cal_abs.relative_to(cwd))
        except ValueError:
            mounts += ["-v", f"{cal_abs}:/calibration:ro"]
            cal_in = "/calibration"
        convert_args += ["--calibration-images", cal_in]
    docker = ["docker", "run", "--rm", "--gpus", "all", "--user", "$(id -u):$(id -g)", *mounts,
              "-w", "/src", "-e", "PYTHONPATH=/src", "-e", "HOME=/tmp", NGC_TENSORFLOW_IMAGE,
              "python", "-m", "export.tftrt", "convert", *convert_args]
    return config_cmd, docker


def _shell(cmd: list[str]) -> str:
    return " ".join(a if a == "$(id -u):$(id -g)" else shlex.quote(a) for a in cmd)


def missing_message(status: TensorRTStatus, repo: Path, model: str, precision: str,
                    batch_sizes: Sequence[int], calibration: Path | None = None,
                    version: int | None = None) -> str:
    """What is missing here, and the exact commands that run the conversion where TensorRT lives."""
    config_cmd, docker = _commands(repo, model, precision, batch_sizes, calibration, version)
    lines = ["offline TF-TRT cannot run on this machine:"]
    lines += [f"  - {m}" for m in status.missing()]
    lines += [
        f"Run it in NVIDIA's TensorFlow 25.02 container ({NGC_TENSORFLOW_IMAGE}: TensorFlow 2.17 "
        "with TensorRT, matching Triton 25.02's TensorFlow backend) on a node with the GPU type "
        "that will serve the model:",
        "  1. in this project's environment, write the model's config:",
        f"     {_shell(config_cmd)}",
        "  2. on the GPU node, from this checkout (engines are built for that GPU):",
        f"     {_shell(docker)}",
        "  or on Kubernetes, both steps as one Job on a GPU node: kubectl apply -k k8s/tftrt",
    ]
    return "\n".join(lines)


def require_tensorrt(repo: Path, model: str, precision: str, batch_sizes: Sequence[int],
                     calibration: Path | None = None, version: int | None = None,
                     status: TensorRTStatus | None = None) -> TensorRTStatus:
    """Raise TensorRTMissingError (with the commands to run instead) unless TF-TRT can run here."""
    status = status or tensorrt_status()
    if status.missing():
        raise TensorRTMissingError(missing_message(status, repo, model, precision, batch_sizes,
                                                   calibration, version))
    return status


def check_options(precision: str, batch_sizes: Sequence[int], calibration: Path | None,
                  converting: bool = True) -> None:
    """Argument errors that need no TensorFlow: reported before anything else."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ExportError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if not converting:
        return
    if precision == "INT8":
        if calibration is None:
            raise ExportError("INT8 needs calibration images: --calibration-images DIR "
                              "(a few hundred images like the ones served)")
        calibration_files(calibration)
    elif calibration is not None:
        raise ExportError(f"--calibration-images is for INT8 only (precision is {precision})")


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,8,16,32' -> (1, 8, 16, 32), ascending, without duplicates."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes: comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return tuple(sizes)


# ----------------------------------------------------------------------------- config (project env)

def tftrt_config(name: str, iface: Interface, batch_sizes: Sequence[int]) -> mc.ModelConfig:
    """Triton 25.02 TensorFlow backend serving the converted SavedModel on GPU.

    No online accelerator block: the engines are in the SavedModel already. The batcher's largest
    batch is the largest prebuilt engine and its preferred sizes are the others, and warmup runs
    each size so every engine is deserialized before the model reports ready.
    """
    from export import model_config

    sizes = sorted(set(batch_sizes))
    opts = model_config.BatchingOptions(max_batch_size=sizes[-1],
                                        max_queue_delay_us=model_config.GPU.max_queue_delay_us,
                                        preferred_batch_sizes=tuple(s for s in sizes if s > 1))
    cfg = model_config.gpu_config(name, iface, opts)
    for size in sizes:
        if size == 1:
            continue
        warm = cfg.model_warmup.add(name=f"random_batch_{size}", batch_size=size)
        warm.inputs[iface.input_name].CopyFrom(cfg.model_warmup[0].inputs[iface.input_name])
    return cfg


def write_config(repo: Path, model: str, precision: str,
                 batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> Path:
    """Write `<model>_tftrt_<precision>/config.pbtxt` from the source model's contract."""
    from export import model_config

    source_cfg = repository.model_dir(repo, model) / "config.pbtxt"
    if not source_cfg.is_file():
        raise SourceError(f"{source_cfg} is missing; export the model first: "
                          f"python -m export --repository {repo} --model {model}")
    iface = model_config.interface_of(model_config.read(source_cfg))
    name = tftrt_model_name(model, precision)
    path = repository.model_dir(repo, name) / "config.pbtxt"
    repository.write_text_atomic(path, model_config.to_text(tftrt_config(name, iface, batch_sizes)))
    return path


# ----------------------------------------------------------------------------- convert (TensorRT env)

def calibration_files(folder: Path, limit: int = CALIBRATION_LIMIT) -> list[Path]:
    """Image files for INT8 calibration, sorted, at most `limit`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files[:limit]


def calibration_batches(folder: Path, image_size: tuple[int, int],
                        batch: int = CALIBRATION_BATCH,
                        limit: int = CALIBRATION_LIMIT) -> Iterator[np.ndarray]:
    """Decoded images as the model sees them: RGB, resized (bilinear) to `image_size`, in [0,1].

    TensorFlow decodes them (the NGC container has no need for the client's Pillow or OpenCV), with
    an antialiased bilinear resize: within a grey level or two of the client's resize pyramid, so
    calibration ranges match served inputs.
    """
    import tensorflow as tf

    pending = []
    for path in calibration_files(folder, limit):
        data = tf.io.read_file(str(path))
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32) / 255.0, image_size, method="bilinear",
                              antialias=True)
        pending.append(tf.clip_by_value(img, 0.0, 1.0).numpy())
        if len(pending) == batch:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


def signature_interface(saved: Path) -> Interface:
    """The contract from the SavedModel's serving signature (no tritonclient in the container)."""
    import tensorflow as tf

    from export.signature import Interface

    fn = tf.saved_model.load(str(saved)).signatures["serving_default"]
    ((in_name, in_spec),) = fn.structured_input_signature[1].items()
    ((out_name, out_spec),) = fn.structured_outputs.items()
    return Interface(in_name, tuple(int(d) for d in in_spec.shape[1:]), out_name,
                     tuple(int(d) for d in out_spec.shape[1:]))


def check_agreement(result: Parity, precision: str) -> None:
    """Raise FidelityError if the converted model strays further than its precision allows."""
    min_cos, max_rel = MIN_COSINE[precision], MAX_RELATIVE[precision]
    if not np.isfinite(result.max_abs_diff) or result.min_cosine < min_cos:
        raise FidelityError(f"TF-TRT {precision} output has cosine similarity {result.min_cosine:.6f} "
                            f"with the SavedModel's (< {min_cos})")
    if max_rel is not None and result.relative > max_rel:
        raise FidelityError(f"TF-TRT {precision} output differs by {result.relative:.3g} of the "
                            f"largest output (> {max_rel})")


@dataclass
class TftrtResult:
    model: str
    version: int
    path: Path
    source_version: int
    precision: str
    batch_sizes: tuple[int, ...]
    parity: Parity
    seconds: float


def convert(repo: Path, model: str, precision: str, *, version: int | None = None,
            batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, calibration: Path | None = None,
            max_workspace_bytes: int = MAX_WORKSPACE_BYTES,
            progress: Callable[[str], None] | None = None,
            status: TensorRTStatus | None = None) -> TftrtResult:
    """Convert a SavedModel version with TF-TRT into the next version of `<model>_tftrt_<precision>`.

    Checks come first (options, TensorRT and GPU, the source version, the config), so a machine that
    cannot convert stops before any work; the version is staged and renamed into place only after
    the engines are built and the output agrees with the source.
    """
    from export.fidelity import compare
    from export.onnx import source_savedmodel

    say = progress or (lambda _msg: None)
    repo = Path(repo)
    sizes = tuple(sorted(set(batch_sizes)))
    check_options(precision, sizes, calibration)
    status = require_tensorrt(repo, model, precision, sizes, calibration, version, status)
    source_version, saved = source_savedmodel(repo, model, version)
    target = tftrt_model_name(model, precision)
    config_path = repository.model_dir(repo, target) / "config.pbtxt"
    if not config_path.is_file():
        try:
            write_config(repo, model, precision, sizes)
            say(f"wrote {config_path}")
        except ImportError:
            config_cmd, _ = _commands(repo, model, precision, sizes, calibration, version)
            raise ExportError(f"{config_path} is missing and this environment cannot write it "
                              f"(no tritonclient); write it first in the project's environment:\n"
                              f"  {_shell(config_cmd)}") from None

    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert as trt

    from export.fidelity import probe_batch

    start = time.monotonic()
    iface = signature_interface(saved)
    for stale in repository.clean_stale_staging(repo, target):
        say(f"removed {stale.name}, left by a conversion that did not finish")
    staging = repository.new_staging_dir(repo, target)
    try:
        say(f"TF-TRT {precision}: converting {model} version {source_version} on {status.gpus[0]} "
            f"(TensorFlow {status.tensorflow_version}, TensorRT {status.tensorrt_version})")
        converter = trt.TrtGraphConverterV2(
            input_saved_model_dir=str(saved), input_saved_model_signature_key="serving_default",
            precision_mode=precision, max_workspace_size_bytes=max_workspace_bytes,
            minimum_segment_size=MINIMUM_SEGMENT_SIZE, maximum_cached_engines=len(sizes),
            use_calibration=precision == "INT8",
            # Live traffic never builds an engine: a shape without one runs in TensorFlow instead.
            allow_build_at_runtime=False)
        hw = iface.input_dims[:2]
        calibrated = 0
        if precision == "INT8":
            batches = list(calibration_batches(calibration, hw))
            calibrated = sum(len(b) for b in batches)
            say(f"calibrating INT8 on {calibrated} images from {calibration}")
            converter.convert(calibration_input_fn=lambda: ((tf.constant(b),) for b in batches))
        else:
            converter.convert()
        # Ascending: each size gets its own engine (implicit batch mode reuses an engine for any
        # batch up to the one it was built for, so building the largest first would stop there).
        say(f"building engines for batch sizes {list(sizes)}")
        converter.build(input_fn=lambda: ((tf.constant(probe_batch(iface, b)),) for b in sizes))
        out_dir = staging / SAVEDMODEL_DIRNAME
        converter.save(str(out_dir))
        say("checking agreement with the SavedModel on a fixed batch")
        batch = probe_batch(iface, min(2, sizes[-1]))
        want = tf.saved_model.load(str(saved)).signatures["serving_default"](
            **{iface.input_name: tf.constant(batch)})[iface.output_name].numpy()
        got = tf.saved_model.load(str(out_dir)).signatures["serving_default"](
            **{iface.input_name: tf.constant(batch)})[iface.output_name].numpy()
        result = compare(want, got, "TF-TRT", precision.lower())
        say(f"max abs difference {result.max_abs_diff:.3g} ({result.relative:.2g} relative), "
            f"min cosine {result.min_cosine:.6f}")
        check_agreement(result, precision)
        gpu_name = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]).get("device_name", status.gpus[0])
        record = {"source_model": model, "source_version": source_version, "precision": precision,
                  "batch_sizes": list(sizes), "gpu": gpu_name,
                  "tensorflow": status.tensorflow_version, "tensorrt": status.tensorrt_version,
                  "calibration_images": calibrated, "parity": asdict(result),
                  "note": "engines are valid on this GPU type and TensorRT version only"}
        (staging / PROVENANCE_FILENAME).write_text(json.dumps(record, indent=2) + "\n")
        number = repository.commit_version(staging, repo, target)
        staging = None
        say(f"committed {target} version {number}")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return TftrtResult(target, number, repository.model_dir(repo, target) / str(number),
                       source_version, precision, sizes, result, time.monotonic() - start)


# ----------------------------------------------------------------------------- command lines

def add_arguments(p: argparse.ArgumentParser) -> None:
    """`python -m export` options for offline TF-TRT (after the export, from the new version)."""
    g = p.add_argument_group("offline TF-TRT (needs TensorRT and a GPU: NGC TensorFlow 25.02)")
    g.add_argument("--tftrt", choices=PRECISIONS, type=str.upper, metavar="PRECISION",
                   help=f"also convert the new version with TF-TRT ({', '.join(PRECISIONS)}) into "
                        "<model>_tftrt_<precision>; stops at once where TensorRT is missing")
    g.add_argument("--calibration-images", type=Path, metavar="DIR",
                   help="image folder for INT8 calibration")
    g.add_argument("--tftrt-batch-sizes", type=parse_batch_sizes, default=DEFAULT_BATCH_SIZES,
                   metavar="N,N,...", help="batch sizes to prebuild engines for (default: "
                                           f"{','.join(map(str, DEFAULT_BATCH_SIZES))})")


def preflight(args: argparse.Namespace) -> None:
    """Before the export: fail fast on bad TF-TRT options or a machine without TensorRT."""
    if not getattr(args, "tftrt", None):
        return
    check_options(args.tftrt, args.tftrt_batch_sizes, args.calibration_images)
    require_tensorrt(args.repository, args.model, args.tftrt, args.tftrt_batch_sizes,
                     args.calibration_images)


def run_after_export(args: argparse.Namespace, version: int,
                     progress: Callable[[str], None] | None = None) -> str | None:
    """The `--tftrt` step of `python -m export`; returns its result line (None when not asked)."""
    if not getattr(args, "tftrt", None):
        return None
    result = convert(args.repository, args.model, args.tftrt, version=version,
                     batch_sizes=args.tftrt_batch_sizes, calibration=args.calibration_images,
                     progress=progress)
    return (f"converted {args.model}/{result.source_version} -> {result.path} ({result.precision}, "
            f"engines for {list(result.batch_sizes)}; {result.seconds:.0f} s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.tftrt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("config", "write <model>_tftrt_<precision>/config.pbtxt (project env)"),
                       ("convert", "convert and build engines (NGC TensorFlow 25.02, on a GPU)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--repository", type=Path, default=Path("model_repository"))
        s.add_argument("--model", default=DEFAULT_MODEL)
        s.add_argument("--precision", choices=PRECISIONS, type=str.upper, default="FP16")
        s.add_argument("--batch-sizes", type=parse_batch_sizes, default=DEFAULT_BATCH_SIZES)
        if name == "convert":
            s.add_argument("--version", type=int, default=None,
                           help="SavedModel version to convert (default: newest)")
            s.add_argument("--calibration-images", type=Path, default=None, metavar="DIR")
            s.add_argument("--max-workspace-bytes", type=int, default=MAX_WORKSPACE_BYTES)
    sub.add_parser("check", help="say whether TF-TRT can run here, and what is missing")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m export.tftrt config|convert|check`."""
    args = build_parser().parse_args(argv)
    with Steps(label="tftrt") as say:
        try:
            if args.command == "check":
                status = tensorrt_status()
                for item in status.missing() or [f"ready: TensorFlow {status.tensorflow_version}, "
                                                 f"TensorRT {status.tensorrt_version}, {list(status.gpus)}"]:
                    print(item)
                return 2 if status.missing() else 0
            if args.command == "config":
                check_options(args.precision, args.batch_sizes, None, converting=False)
                path = write_config(args.repository, args.model, args.precision, args.batch_sizes)
                print(f"wrote {path}")
                return 0
            result = convert(args.repository, args.model, args.precision, version=args.version,
                             batch_sizes=args.batch_sizes, calibration=args.calibration_images,
                             max_workspace_bytes=args.max_workspace_bytes, progress=say)
        except ExportError as exc:
            print(f"export.tftrt: error: {exc}", file=sys.stderr)
            return 2
        print(f"converted {args.model}/{result.source_version} -> {result.path} ({result.precision}, "
              f"engines for {list(result.batch_sizes)}; {result.seconds:.0f} s)")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
