"""The OpenVINO path: the exported SavedModel converted to OpenVINO IR inside the same version.

Why: on CPU, OpenVINO runs PNASNet-5 Large about twice as fast as TensorFlow where the CPU has
native bf16 (bench/optimize_bench.py), and Triton's OpenVINO backend ships in every current Triton
release, unlike the TensorFlow backend (last in 25.02).

Why IR at export time, not the SavedModel loaded by the backend: the backend (from r25.02) can read
a SavedModel folder named by `default_model_filename`, but then every server start converts the
graph again (~4 s and the TensorFlow frontend's memory on the faithful twin, per pod and per
restart), and what is served would be a conversion nobody checked. Converted here, the IR is
checked against TensorFlow before the version exists, loads in well under a second, and needs no
TensorFlow anywhere near the server (bench/optimize_bench.py prints both load times).

Layout (inside the version the SavedModel lives in, so one version number means one network):

    <model>/<N>/model.savedmodel/   TensorFlow (GPU, TF CPU)
    <model>/<N>/model.xml, .bin     OpenVINO IR, float32 weights (no FP16 compression)
    <model>/<N>/openvino.json       converter version and the parity measured at export

Parity, checked in the staging folder before the version is committed, on the shipped sample
photos (preprocessed exactly as the client does) plus a fixed random batch:

- f32 (`INFERENCE_PRECISION_HINT=f32`): max |ov - tf| <= 1e-4 x max |tf|;
- bf16 (what OpenVINO picks on CPUs with native bf16): per-image cosine >= 0.9999 against TF.
  On a CPU without native bf16 the bf16 check runs in emulation (slow but the same numerics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export import SAVEDMODEL_DIRNAME
from export.errors import ExportError, FidelityError
from export.fidelity import Parity, compare

if TYPE_CHECKING:
    from export.signature import Interface

IR_FILENAME = "model.xml"
PROVENANCE_FILENAME = "openvino.json"
F32_RTOL = 1e-4
BF16_MIN_COSINE = 0.9999
PRECISIONS = ("f32", "bf16")


class OpenVinoError(ExportError):
    """OpenVINO is missing, the conversion failed, or the IR lost the serving contract."""


def _openvino():  # noqa: ANN202 - the module, imported lazily (it is an optional dependency)
    try:
        import openvino
    except ImportError as exc:
        raise OpenVinoError("OpenVINO is not installed: pip install -e '.[export]' "
                            "(or skip the IR with --no-openvino)") from exc
    return openvino


def convert(saved: Path, out_dir: Path) -> float:
    """SavedModel folder -> `out_dir/model.xml` + `model.bin` (float32 weights); returns seconds."""
    ov = _openvino()
    start = time.monotonic()
    try:
        model = ov.convert_model(str(saved))
        # compress_to_fp16 defaults to True: it would round the weights and break f32 parity.
        ov.save_model(model, str(out_dir / IR_FILENAME), compress_to_fp16=False)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; report one
        raise OpenVinoError(f"OpenVINO could not convert {saved}: {type(exc).__name__}: {exc}") from exc
    return time.monotonic() - start


def compile_ir(path: Path, precision: str | None = None, hint: str = "LATENCY"):  # noqa: ANN201
    """A compiled CPU model; `precision` None keeps OpenVINO's choice (bf16 where native)."""
    ov = _openvino()
    config = {"PERFORMANCE_HINT": hint}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return ov.Core().compile_model(str(path), "CPU", config)


def default_precision() -> str:
    """The inference precision OpenVINO picks on this CPU: bf16 with native bf16, else f32."""
    ov = _openvino()
    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


def check_contract(path: Path, iface: Interface) -> None:
    """One input and one output, with the signature's names, dims and a dynamic batch."""
    ov = _openvino()
    model = ov.Core().read_model(str(path))
    for kind, ports, name, dims in (("input", model.inputs, iface.input_name, iface.input_dims),
                                    ("output", model.outputs, iface.output_name, iface.output_dims)):
        if len(ports) != 1 or name not in ports[0].get_names():
            found = [sorted(p.get_names()) for p in ports]
            raise OpenVinoError(f"IR {kind}s are {found}; expected one named {name!r}")
        shape = ports[0].get_partial_shape()
        if not shape[0].is_dynamic or [d.get_length() for d in list(shape)[1:]] != list(dims):
            raise OpenVinoError(f"IR {kind} {name!r} has shape {shape}; expected [?, {list(dims)}]")


def parity_images(iface: Interface) -> np.ndarray:
    """The shipped sample photos as the client sends them, plus the export's fixed random batch."""
    from client.preprocess import to_model_input, to_pixels
    from export.fidelity import probe_batch
    from samples import sample_paths

    height, width = iface.input_dims[0], iface.input_dims[1]
    photos = [to_model_input(to_pixels(p, (width, height))) for p in sample_paths()]
    return np.concatenate([np.stack(photos), probe_batch(iface)], axis=0)


def parity(saved: Path, ir: Path, iface: Interface, images: np.ndarray | None = None,
           tensorflow: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Parity]:
    """TensorFlow vs OpenVINO at f32 and bf16, image by image.

    `tensorflow` computes the reference; by default the SavedModel's signature, loaded from `saved`
    (export passes the model it just proved identical to that SavedModel, saving a reload).
    """
    import tensorflow as tf

    images = parity_images(iface) if images is None else images
    if tensorflow is None:
        fn = tf.saved_model.load(str(saved)).signatures["serving_default"]

        def tensorflow(x: np.ndarray) -> np.ndarray:
            return fn(**{iface.input_name: tf.constant(x)})[iface.output_name].numpy()

    reference = np.concatenate([tensorflow(images[i:i + 1]) for i in range(len(images))])
    found = {}
    for precision in PRECISIONS:
        compiled = compile_ir(ir, precision)
        got = np.concatenate([compiled(images[i:i + 1])[0] for i in range(len(images))])
        found[precision] = compare(reference, got, "OpenVINO", precision)
    return found


def check(found: dict[str, Parity], rtol: float = F32_RTOL,
          min_cosine: float = BF16_MIN_COSINE) -> None:
    f32, bf16 = found["f32"], found["bf16"]
    if not f32.within(rtol):
        raise FidelityError(f"OpenVINO f32 differs from TensorFlow by {f32.max_abs_diff:.3g} "
                            f"(> {rtol:g} x max |output| {f32.max_abs_reference:.3g})")
    if not bf16.min_cosine >= min_cosine:
        raise FidelityError(f"OpenVINO bf16 gives a per-image cosine of {bf16.min_cosine:.6f} "
                            f"against TensorFlow (< {min_cosine})")


def add_to_staging(staging: Path, iface: Interface, progress: Callable[[str], None] | None = None,
                   tensorflow: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Convert `staging/model.savedmodel`, check contract and parity, write the provenance record.

    Runs before the staging folder becomes a version, so a version never appears with an IR that
    disagrees with its SavedModel.
    """
    say = progress or (lambda _msg: None)
    ov = _openvino()
    saved = staging / SAVEDMODEL_DIRNAME
    say("converting to OpenVINO IR (f32 weights)")
    seconds = convert(saved, staging)
    ir = staging / IR_FILENAME
    check_contract(ir, iface)
    say(f"converted in {seconds:.1f} s; checking OpenVINO f32 and bf16 against TensorFlow")
    found = parity(saved, ir, iface, tensorflow=tensorflow)
    f32, bf16 = found["f32"], found["bf16"]
    say(f"OpenVINO f32: max abs diff {f32.relative:.2g} of max |output| (tolerance {F32_RTOL:g}); "
        f"bf16: min cosine {bf16.min_cosine:.6f} (>= {BF16_MIN_COSINE}) on {f32.images} images")
    check(found)
    record = {"converter": "openvino", "openvino_version": ov.__version__,
              "convert_seconds": round(seconds, 2), "weights": "f32",
              "default_precision_here": default_precision(),
              "parity": {p: asdict(v) for p, v in found.items()},
              "f32_rtol": F32_RTOL, "bf16_min_cosine": BF16_MIN_COSINE}
    (staging / PROVENANCE_FILENAME).write_text(json.dumps(record, indent=2) + "\n")
    return record
