"""Process lifetime: children that die with their parent, and signal handling that stops once.

Two failure modes this module exists for:

- A child started in a session of its own (tritonserver, so that a Ctrl-C in the terminal reaches
  only its parent, which then drains it) is not signalled when its parent is killed with SIGKILL,
  and `make` does not pass a SIGTERM on to its recipe. Linux's parent-death signal
  (`prctl(PR_SET_PDEATHSIG)`) covers both: the kernel signals the child when its parent exits,
  however it exits.
- A second SIGTERM or Ctrl-C while a shutdown is already running (a supervisor's TERM after a group
  TERM, an impatient user) must not interrupt that shutdown. `ShutdownSignals` records signals
  instead of raising from whatever line happens to run, so the one stop always runs to its end.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_libc_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc_prctl = _libc.prctl
        _libc_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                                ctypes.c_ulong]
        _libc_prctl.restype = ctypes.c_int
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        _libc_prctl = None


def parent_death_signal_supported() -> bool:
    return _libc_prctl is not None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits; False where unsupported.

    The kernel ties the signal to the parent *thread* that forked this process: start children from
    a thread that lives as long as they should (the main thread, in this project).
    """
    if _libc_prctl is None:
        return False
    if _libc_prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    return True


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when the caller exits.

    It runs in the forked child before exec. The parent may already have died between fork and
    the prctl call (then no signal would ever come): the child compares its parent with the pid
    captured here, before the fork, and ends itself if they differ.
    """
    parent = os.getpid()
    prctl = _libc_prctl

    def preexec() -> None:
        signal.signal(sig, signal.SIG_DFL)  # an ignored signal would stay ignored across exec
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def exit_with_parent(sig: int = signal.SIGTERM) -> int:
    """For a command run by `make` or a supervisor that does not forward signals: get `sig` when
    the parent exits. Returns the parent's pid; if the parent is already gone, `sig` is raised now.
    """
    parent = os.getppid()
    set_parent_death_signal(sig)
    if parent == 1 or os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return parent


def terminate(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM `process` (it drains and stops its own children), SIGKILL its process group if it
    has not exited within `timeout`; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


class Interrupted(Exception):  # noqa: N818 - reads as what happened: "Interrupted('SIGTERM')"
    """Raised once, by `ShutdownSignals(raise_first=True)`, at the first stop signal."""


class ShutdownSignals:
    """Handle SIGTERM/SIGINT/SIGHUP so that any number of them leads to exactly one shutdown.

    Signals set `requested` (a `threading.Event`, so waits can be cut short) and are counted.
    With `raise_first=True` the first signal outside `shielded()` also raises `Interrupted` in the
    main thread, for code that blocks in calls it can't poll (a subprocess, a load test); every
    later signal, and every signal inside `shielded()`, is only recorded. Wrap the cleanup in
    `shielded()` so a late signal can't cut it short.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, *, raise_first: bool = False) -> None:
        self.signals = signals
        self.raise_first = raise_first
        self.requested = threading.Event()
        self.received: list[str] = []
        self._shielded = False
        self._raised = False
        self._previous: dict[int, object] = {}

    @property
    def first(self) -> str | None:
        return self.received[0] if self.received else None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        self.requested.set()
        if self.raise_first and not self._raised and not self._shielded:
            self._raised = True
            raise Interrupted(signal.Signals(signum).name)

    def install(self) -> ShutdownSignals:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Signals inside are recorded, never raised: for the one cleanup that must finish."""
        self._shielded = True
        try:
            yield
        finally:
            self._shielded = False

    def __enter__(self) -> ShutdownSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        # Handlers stay recording (never the default action) until the caller's cleanup is done.
        self.restore()
