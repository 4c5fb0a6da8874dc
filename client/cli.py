"""`pnasnet-embed` (or `python -m client`): embed a folder or glob of images into a .npy file, or
check a server.

    pnasnet-embed embed photos/ -o photos.npy                  # every image under photos/
    pnasnet-embed embed 'shots/**/*.jpg' -o shots.npy --payload uint8 --normalize
    pnasnet-embed health --wait 120                            # exit 0 once the model is ready

`embed` writes OUT.npy (float32, one row per embedded image, in the order of the sorted input
list) and OUT.index.json (the path of each row, the model version that made it, and every image
that failed with its reason), then prints a summary. Exit code: 0 all embedded, 1 some failed
(outputs still written), 2 nothing ran. Defaults come from the environment as in the library
(TRITON_GRPC_URL, TRITON_PROTOCOL, TRITON_MODEL, TRITON_PAYLOAD; see client/settings.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from client.embedding_client import EmbeddingClient
from client.errors import EmbeddingError
from client.preprocess import IMAGE_SUFFIXES, MAX_PIXELS
from client.retry import RetryPolicy
from client.settings import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, PAYLOADS, PROTOCOLS

__all__ = ["IMAGE_SUFFIXES", "build_parser", "find_images", "main"]


def find_images(inputs: list[str], recursive: bool = True) -> list[Path]:
    """Files named directly, image files inside folders, and glob matches; sorted, no duplicates."""
    found: dict[Path, None] = {}
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            matches = [p for p in walker if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            matches = [path]
        else:
            matches = [Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file()]
            if not matches:
                raise FileNotFoundError(f"no file, folder or glob match for {entry!r}")
        for match in sorted(matches):
            found.setdefault(match, None)
    return list(found)


def _headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--header takes KEY=VALUE, got {value!r}")
        headers[key.strip()] = val
    return headers


class _OldPayloadOption(argparse.Action):
    """`--transport` is the old name of `--payload`: still accepted, with a warning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print("client: --transport is renamed --payload", file=sys.stderr)
        namespace.payload = values


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="host:port (default: TRITON_GRPC_URL / "
                   "TRITON_HTTP_URL or localhost)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="grpc or http (default: TRITON_PROTOCOL, else grpc)")
    p.add_argument("--model", default=None,
                   help="the embedding model (default: TRITON_MODEL, else pnasnet_large)")
    p.add_argument("--payload", choices=PAYLOADS, default=None,
                   help="what requests carry (default: TRITON_PAYLOAD, else auto: uint8 when the "
                   "server has the model's uint8 model, else float32)")
    p.add_argument("--transport", choices=(*PAYLOADS, "float", "compact"), dest="payload",
                   action=_OldPayloadOption, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds per call (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--root-certificates", metavar="PEM", help="CA of the server (turns TLS on)")
    p.add_argument("--private-key", metavar="PEM", help="client key, for mutual TLS")
    p.add_argument("--certificate-chain", metavar="PEM", help="client certificate, for mutual TLS")
    p.add_argument("--ssl", action="store_true", help="TLS with the system's CA certificates")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                   help="sent with every call (repeatable), e.g. authorization='Bearer ...'")


def build_parser() -> argparse.ArgumentParser:
    invoked = Path(sys.argv[0]).name
    prog = "python -m client" if invoked in ("__main__.py", "-c", "") else invoked
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed", help="embed images into a .npy file")
    e.add_argument("inputs", nargs="+", help="image files, folders, or globs (quote them)")
    e.add_argument("-o", "--output", type=Path, required=True, help="the .npy file to write")
    e.add_argument("--index", type=Path, help="index file (default: OUTPUT with .index.json)")
    e.add_argument("--no-recursive", action="store_true", help="only the top level of folders")
    e.add_argument("--batch-size", type=int, default=None, help="images per request "
                   "(default: the model's max_batch_size)")
    e.add_argument("--in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                   help="requests at the server at once (default: %(default)s)")
    e.add_argument("--workers", type=int, default=None, help="preprocessing threads")
    e.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    e.add_argument("--center-crop", action="store_true", help="crop the central square first")
    e.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse images over N pixels, width x height (decompression bomb guard; "
                   f"default {MAX_PIXELS:,} = 8192x8192)")
    e.add_argument("--retries", type=int, default=5, help="tries per request for transient errors")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    _connection_args(e)
    h = sub.add_parser("health", help="is the server live, and the model ready?")
    h.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for readiness")
    _connection_args(h)
    return p


def _client(args: argparse.Namespace, **kwargs: Any) -> EmbeddingClient:
    return EmbeddingClient(
        args.url, args.model, protocol=args.protocol, payload=args.payload,
        timeout=args.timeout, ssl=args.ssl, root_certificates=args.root_certificates,
        private_key=args.private_key, certificate_chain=args.certificate_chain,
        headers=_headers(args.header), **kwargs)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write: Any) -> None:
    """Write via a temp file + rename (a reader never sees half a file), with the umask's mode.

    mkstemp creates its file 0600; the output gets what `open()` would give (0666 & ~umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npy(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda fh: np.save(fh, array))


def _save_json(path: Path, data: dict[str, Any]) -> None:
    _write_atomic(path, lambda fh: fh.write((json.dumps(data, indent=1) + "\n").encode()))


def embed_command(args: argparse.Namespace) -> int:
    try:
        paths = find_images(args.inputs, recursive=not args.no_recursive)
    except FileNotFoundError as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print("client: no image files found", file=sys.stderr)
        return 2
    index_path = args.index or args.output.with_suffix(".index.json")
    start = time.perf_counter()
    with _client(args, batch_size=args.batch_size, max_in_flight=args.in_flight,
                 workers=args.workers, normalize=args.normalize, center_crop=args.center_crop,
                 max_pixels=args.max_pixels, exact_versions=True,  # rows are stored: exact
                 retry=RetryPolicy(attempts=max(args.retries, 1))) as client:
        try:
            result = client.embed_many(paths, progress=not args.no_progress)
        except EmbeddingError as exc:
            print(f"client: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        info, payload = client.info, client.payload_in_use
    seconds = time.perf_counter() - start
    ok = result.ok
    rows = np.flatnonzero(ok)
    # The version of the embedding model that made each row (behind the uint8 ensemble: the
    # ensemble's composing model, not the ensemble's own version).
    versions = [result.versions[i] for i in rows]
    _save_npy(args.output, result.embeddings[ok])
    _save_json(index_path, {
        "model": result.model or client.model, "served_by": info.name,
        "version": ",".join(dict.fromkeys(versions)), "payload": payload, "url": client.url,
        "dim": info.output_dim, "normalized": bool(args.normalize),
        "center_crop": bool(args.center_crop),
        "rows": [str(paths[i]) for i in rows],
        "versions": versions,
        "failures": [{"path": str(paths[f.index]), "type": f.kind,
                      "error": getattr(f.error, "reason", None) or str(f.error)}
                     for f in result.failures],
    })
    rate = len(paths) / seconds if seconds > 0 else 0.0
    print(f"embedded {result.succeeded} of {len(paths)} images in {seconds:.1f} s "
          f"({rate:.1f} images/s, {payload} payload, "
          f"{result.model or info.name} v{','.join(dict.fromkeys(versions)) or '?'}); "
          f"{len(result.failures)} failed")
    print(f"wrote {args.output} [{result.succeeded}, {info.output_dim}] and {index_path}")
    for failure in result.failures[:10]:
        print(f"  failed: {paths[failure.index]}: {failure.kind}: {failure.reason}", file=sys.stderr)
    if len(result.failures) > 10:
        print(f"  ... and {len(result.failures) - 10} more (see {index_path})", file=sys.stderr)
    return 1 if result.failures else 0


def health_command(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.wait > 0:
            try:
                client.wait_until_ready(args.wait)
            except EmbeddingError as exc:
                print(f"client: {exc}", file=sys.stderr)
        report = client.health()
        report["model_ready"] = client.is_ready()
    print(json.dumps(report, indent=1))
    return 0 if report["model_ready"] else 1


def main(argv: list[str] | None = None) -> int:
    """The console script `pnasnet-embed` (also `python -m client`)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "embed":
            return embed_command(args)
        return health_command(args)
    except (argparse.ArgumentTypeError, ValueError) as exc:  # a bad option or environment value
        print(f"client: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("client: interrupted", file=sys.stderr)
        return 130
