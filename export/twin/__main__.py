"""`python -m export.twin`: list the twins, print a twin's counts, or save one in hub format.

    python -m export.twin stats [--twin pnasnet_large]
    python -m export.twin save pnasnet_reduced /tmp/module [--seed 0]
    python -m export.twin list
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.twin",
                                description="Offline twins of the hub model: random weights, real graph.")
    sub = p.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="parameter and multiply-add counts vs the published figures")
    stats.add_argument("--twin", default="pnasnet_large", help="twin name (default: %(default)s)")
    save = sub.add_parser("save", help="build a twin and save it as a TF2 hub module")
    save.add_argument("twin", help="twin name")
    save.add_argument("path", type=Path, help="output directory (must not exist)")
    save.add_argument("--seed", type=int, default=0, help="weight seed (default: %(default)s)")
    sub.add_parser("list", help="the available twins")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from export.twin import TWINS, get_twin

    if args.command == "list":
        for name in sorted(TWINS):
            print(f"{name:<30} {TWINS[name].description}")
        return 0
    try:
        get_twin(args.twin)
    except ValueError as exc:
        print(f"export.twin: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "stats":
        from export.twin.stats import format_report, twin_stats

        print(format_report(twin_stats(args.twin)))
        return 0
    if args.path.exists():
        print(f"export.twin: error: {args.path} exists", file=sys.stderr)
        return 2
    from export.twin import save_twin

    start = time.monotonic()
    save_twin(args.twin, args.path, seed=args.seed,
              progress=lambda msg: print(f"[{time.monotonic() - start:6.1f}s] {msg}", flush=True))
    print(f"saved twin:{args.twin} (seed {args.seed}) to {args.path} "
          f"in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
