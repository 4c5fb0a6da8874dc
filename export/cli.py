"""`python -m export`: write the hub model (or a twin) as the next version in a Triton repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export import DEFAULT_MODEL, DEFAULT_SOURCE
from export.errors import ExportError, HubUnreachableError
from export.progress import Steps
from export.sources import HUB_TIMEOUT_S
from serve.tflog import filtered_stderr, quiet_tensorflow


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    p.add_argument("--source", default=DEFAULT_SOURCE,
                   help="hub URL, SavedModel directory, .tar.gz of one, or twin:<name> "
                        "(default: %(default)s)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="Triton model repository (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    p.add_argument("--keep", type=int, default=None, metavar="K",
                   help="keep only the newest K versions after a successful export")
    p.add_argument("--seed", type=int, default=0, help="weight seed for twin sources")
    p.add_argument("--hub-timeout", type=float, default=HUB_TIMEOUT_S,
                   help="seconds to wait for the hub before giving up (default: %(default)s)")
    p.add_argument("--fallback-twin", metavar="NAME",
                   help="if the hub can't be reached, export twin:NAME instead of failing")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    p.add_argument("--verbose", action="store_true",
                   help="keep TensorFlow's own log lines (hidden by default)")
    p.add_argument("--no-openvino", dest="openvino", action="store_false",
                   help="skip the OpenVINO IR (model.xml beside model.savedmodel, parity-checked); "
                        "the local server then serves TensorFlow")
    # --- optimized serving paths (export/onnx.py, export/tftrt.py) ---
    from export import onnx, tftrt

    onnx.add_arguments(p)
    tftrt.add_arguments(p)
    # --- end optimized serving paths ---
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow(args.verbose)
    with filtered_stderr(enabled=not args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from export.pipeline import export_model

    say = Steps(quiet=args.quiet)
    kwargs = dict(seed=args.seed, keep=args.keep, hub_timeout=args.hub_timeout, progress=say,
                  openvino=args.openvino)
    try:
        # --- optimized serving paths: their options and needs (TensorRT, a GPU) are checked first
        from export import onnx, tftrt

        onnx.preflight(args)
        tftrt.preflight(args)
        # --- end optimized serving paths ---
        try:
            result = export_model(args.source, args.repository, args.model, **kwargs)
        except HubUnreachableError as exc:
            if not args.fallback_twin:
                raise
            print(f"export: {exc}\nexport: falling back to the offline twin "
                  f"twin:{args.fallback_twin} (random weights, same interface)", flush=True)
            result = export_model(f"twin:{args.fallback_twin}", args.repository, args.model, **kwargs)
    except ExportError as exc:
        say.close()
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    say.close()
    print(f"exported {result.source} -> {result.path} "
          f"({result.interface.input_name} {list(result.interface.input_dims)} -> "
          f"{result.interface.output_name} {list(result.interface.output_dims)}; "
          f"max abs diff {result.max_abs_diff:.3g}; {result.seconds:.1f} s)", flush=True)
    if result.openvino:
        par = result.openvino["parity"]
        print(f"OpenVINO IR {result.openvino['openvino_version']}: f32 max abs diff "
              f"{par['f32']['max_abs_diff'] / par['f32']['max_abs_reference']:.2g} of max |output|, "
              f"bf16 min cosine {par['bf16']['min_cosine']:.6f} on {par['f32']['images']} images; "
              f"this CPU runs it at {result.openvino['default_precision_here']}", flush=True)
    # --- optimized serving paths, built from the version just written ---
    from export import onnx, tftrt

    say = Steps(quiet=args.quiet)
    try:
        for step in (onnx.run_after_export, tftrt.run_after_export):
            line = step(args, result.version, say)
            if line:
                print(line, flush=True)
    except ExportError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    finally:
        say.close()
    # --- end optimized serving paths ---
    return 0
