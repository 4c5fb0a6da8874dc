"""Resolve `--source` into a loaded TF2 model: hub handle, local dir, local tarball, or `twin:<name>`."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import tarfile
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import HubUnreachableError, SourceError

TWIN_PREFIX = "twin:"
HUB_TIMEOUT_S = 15.0


@dataclass
class LoadedSource:
    """A loaded model plus what it came from; `cleanup()` removes temporary files it needed."""

    description: str
    obj: Any
    kind: str
    _tmp: list[tempfile.TemporaryDirectory] = field(default_factory=list, repr=False)

    def cleanup(self) -> None:
        for tmp in self._tmp:
            tmp.cleanup()
        self._tmp.clear()


def classify(source: str) -> str:
    """One of 'twin', 'hub', 'tarball', 'directory'; raises SourceError for anything else."""
    if source.startswith(TWIN_PREFIX):
        return "twin"
    if source.startswith(("http://", "https://", "gs://")):
        return "hub"
    path = Path(source)
    if path.is_dir():
        return "directory"
    if path.is_file() and source.endswith((".tar.gz", ".tgz", ".tar")):
        return "tarball"
    if path.exists():
        raise SourceError(f"source {source!r} is a file but not a .tar.gz/.tgz/.tar archive")
    raise SourceError(
        f"source {source!r} not found: give a hub URL, a SavedModel directory, a .tar.gz of one, "
        f"or twin:<name>")


def _probe_http(parsed: urllib.parse.ParseResult, url: str, timeout: float, stage: list[str]) -> int:
    """Resolve, connect (TLS for https) and send a HEAD request; the HTTP status that came back."""
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    stage[0] = f"resolving {host}"
    socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    stage[0] = f"connecting to {host}:{port}" + (" (TCP and TLS)" if parsed.scheme == "https" else "")
    if parsed.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
        stage[0] = (f"waiting for an answer from {host}:{port} (the connection was accepted, "
                    f"no HTTP response came back)")
        conn.request("HEAD", url)
        return conn.getresponse().status
    finally:
        conn.close()


def check_hub_reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> None:
    """Fail within `timeout` in total unless the hub's host answers an HTTP request.

    Covered: DNS that fails or hangs, no route, a refused or dropped connection, TLS failures, and a
    server that accepts the connection but never answers. Any HTTP status counts as an answer (the
    download itself then reports what is wrong). The probe runs in a daemon thread joined with
    the deadline, so no step of it, however it hangs, can hold the export past `timeout`.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "gs":
        return  # resolved by TensorFlow's GCS filesystem; it has its own retries
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    stage = ["starting"]
    outcome: list[BaseException | int] = []

    def probe() -> None:
        try:
            outcome.append(_probe_http(parsed, url, timeout, stage))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=probe, daemon=True, name="hub-probe")
    worker.start()
    worker.join(timeout)
    hint = "use a local SavedModel, a .tar.gz, or --source twin:<name>"
    if not outcome:
        raise HubUnreachableError(f"cannot reach {host}:{port} for {url} within {timeout:.0f} s "
                                  f"(timed out {stage[0]}); {hint}")
    if isinstance(outcome[0], BaseException):
        exc = outcome[0]
        raise HubUnreachableError(f"cannot reach {host}:{port} for {url} within {timeout:.0f} s "
                                  f"({stage[0]}: {exc or type(exc).__name__}); {hint}") from exc


def safe_extract(archive: Path, dest: Path) -> Path:
    """Unpack `archive` into `dest`, refusing members that would land outside it or are links/devices."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest):
                    raise SourceError(f"{archive}: member {member.name!r} escapes the archive root")
                if not (member.isfile() or member.isdir()):
                    raise SourceError(f"{archive}: member {member.name!r} is a link or special file")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(f"{archive}: not a readable tar archive ({exc})") from exc
    return find_savedmodel_root(dest, archive)


def find_savedmodel_root(root: Path, origin: Path | str) -> Path:
    """The folder holding saved_model.pb: `root` itself or its single nested folder that has one."""
    if (root / "saved_model.pb").is_file():
        return root
    found = sorted(p.parent for p in root.rglob("saved_model.pb"))
    if not found:
        raise SourceError(f"{origin}: no saved_model.pb inside; not a SavedModel")
    if len(found) > 1:
        raise SourceError(f"{origin}: several SavedModels inside ({', '.join(map(str, found))})")
    return found[0]


def _load_dir(path: Path, origin: str) -> Any:
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many types for a broken model
        raise SourceError(f"{origin}: TensorFlow could not load the SavedModel ({exc})") from exc


def load_source(source: str, seed: int = 0, hub_timeout: float = HUB_TIMEOUT_S,
                progress: Callable[[str], None] | None = None) -> LoadedSource:
    """Load `source`; the caller owns the result and must call `cleanup()`."""
    say = progress or (lambda _msg: None)
    kind = classify(source)
    if kind == "twin":
        from export.twin import save_twin

        name = source[len(TWIN_PREFIX):]
        tmp = tempfile.TemporaryDirectory(prefix="twin-")
        try:
            say(f"building offline twin {name!r} (seed {seed})")
            path = save_twin(name, Path(tmp.name) / "module", seed=seed, progress=say)
        except ValueError as exc:
            tmp.cleanup()
            raise SourceError(str(exc)) from exc
        return LoadedSource(f"twin:{name} (seed {seed})", _load_dir(path, source), kind, [tmp])
    if kind == "directory":
        root = find_savedmodel_root(Path(source), source)
        say(f"loading SavedModel {root}")
        return LoadedSource(str(root), _load_dir(root, source), kind)
    if kind == "tarball":
        tmp = tempfile.TemporaryDirectory(prefix="hub-tar-")
        try:
            say(f"unpacking {source}")
            root = safe_extract(Path(source), Path(tmp.name))
            loaded = _load_dir(root, source)
        except Exception:
            tmp.cleanup()
            raise
        return LoadedSource(source, loaded, kind, [tmp])
    say(f"checking that the hub is reachable (at most {hub_timeout:.0f} s)")
    check_hub_reachable(source, hub_timeout)
    import tensorflow_hub as hub

    say(f"downloading {source}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(max(hub_timeout, 60.0))
    try:
        obj = hub.load(source)
    except Exception as exc:
        raise SourceError(f"{source}: hub.load failed ({exc})") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return LoadedSource(source, obj, kind)


def cache_dir_hint() -> str:
    return os.environ.get("TFHUB_CACHE_DIR", "<system temp>/tfhub_modules")
