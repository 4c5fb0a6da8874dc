"""Progress for long export steps: a live elapsed-time line on a terminal, plain lines in logs.

TensorFlow's save and load calls report nothing while they run (minutes for the full network), so
the terminal line keeps ticking to show the export is alive and which step it is in.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm


class Steps:
    """Call with a message at the start of each step; `close()` when done."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, label: str = "export") -> None:
        self.quiet = quiet
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.live = not quiet and self.stream.isatty()
        self._bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=self.stream,
                         disable=not self.live, leave=False)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        if self.live:
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._bar.refresh()

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        line = f"[{self.label} {time.monotonic() - self.start:6.1f}s] {msg}"
        if self.live:
            self._bar.set_description_str(f"{self.label}: {msg}")
            tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._bar.close()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
