"""Where the bundled tritonserver and its Python backend live, and the environment they need.

Facts that make the binary work from any CPython venv: the Python backend stub must load the same
libpython as the venv's interpreter (found through `sysconfig`), the stub for this Python version
must sit beside `libtriton_python.so`, and the venv's `bin` must come first on PATH so the embedded
interpreter sees the venv's packages.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

BACKENDS_SRC = Path(__file__).parent / "backends"
SHARED_BACKEND_MODULE = "batched.py"  # copied beside each backend's model.py


class RuntimeMissingError(RuntimeError):
    """nvidia-pytriton (which carries tritonserver) is not installed or is incomplete."""


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise RuntimeMissingError(
            "nvidia-pytriton is not installed; install the serve extra: pip install -e '.[serve]'"
        ) from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def tritonserver_binary() -> Path:
    binary = pytriton_root() / "bin" / "tritonserver"
    if not binary.is_file():
        raise RuntimeMissingError(f"tritonserver not found at {binary}")
    return binary


def python_stub() -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton_root() / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeMissingError(f"no Python backend stub for Python {version} at {stub}")
    return stub


def _copy_replacing(src: Path, dest: Path) -> None:
    """Copy beside `dest`, then rename over it: a binary that a leftover process still executes
    can be replaced this way, where copying onto it fails with "Text file busy"."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def prepare_backend_directory(dest: Path) -> Path:
    """Lay out `dest/python` (Triton's Python backend) and this project's Python-based backends."""
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    src = pytriton_root() / "backends" / "python"
    for item in src.iterdir():
        if item.is_file():
            _copy_replacing(item, python_dir / item.name)
    _copy_replacing(python_stub(), python_dir / "triton_python_backend_stub")
    for backend in BACKENDS_SRC.iterdir():
        if (backend / "model.py").is_file():
            shutil.copytree(backend, dest / backend.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(BACKENDS_SRC / SHARED_BACKEND_MODULE, dest / backend.name)
    return dest


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    bundled = pytriton_root().parent.parent / "nvidia_pytriton.libs"
    paths = [p for p in (libdir, str(bundled), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
