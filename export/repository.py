"""The on-disk Triton model repository: version numbering, atomic writes, pruning.

Triton ignores sub-folders of a model whose names are not plain numbers, so a version is built in a
hidden staging folder beside the versions and renamed into place only when it is complete and
verified: an export that fails or is killed never leaves a numbered folder Triton would load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

STAGING_PREFIX = ".staging-"


def model_dir(repository: Path, model: str) -> Path:
    return Path(repository) / model


def versions(repository: Path, model: str) -> list[int]:
    """Version numbers present, ascending (only numeric folders, as Triton counts them)."""
    root = model_dir(repository, model)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir()
                  if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"))


def next_version(repository: Path, model: str) -> int:
    found = versions(repository, model)
    return found[-1] + 1 if found else 1


def new_staging_dir(repository: Path, model: str) -> Path:
    root = model_dir(repository, model)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def commit_version(staging: Path, repository: Path, model: str) -> int:
    """Rename `staging` to the next free version number; retries if a concurrent export took it."""
    for _ in range(100):
        number = next_version(repository, model)
        target = model_dir(repository, model) / str(number)
        try:
            os.rename(staging, target)  # atomic on one filesystem; fails if target exists
        except OSError:
            if target.exists():
                continue
            raise
        return number
    raise RuntimeError(f"could not claim a version number under {model_dir(repository, model)}")


def clean_stale_staging(repository: Path, model: str) -> list[Path]:
    """Remove staging folders left by exports that were killed (their process no longer runs)."""
    removed = []
    root = model_dir(repository, model)
    if not root.is_dir():
        return removed
    for path in root.glob(f"{STAGING_PREFIX}*"):
        pid_text = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(repository: Path, model: str, keep: int) -> list[int]:
    """Delete all but the newest `keep` versions; returns the numbers removed."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    found = versions(repository, model)
    doomed = found[:-keep]
    for number in doomed:
        shutil.rmtree(model_dir(repository, model) / str(number))
    return doomed


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file + rename, so Triton never reads a half-written config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; configs are read by the server's user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
