"""Keep TensorFlow's own log lines out of the command-line tools' output unless asked for.

TensorFlow's C++ runtime writes to file descriptor 2 directly, and part of it before its logging is
set up (so `TF_CPP_MIN_LOG_LEVEL` can't silence it): `oneDNN custom operations are on`,
`Could not find cuda drivers`, and `E0000 ... failed call to cuInit`, an error line on every
machine without a GPU that reads like a failure. `filtered_stderr()` puts a pipe in front of fd 2
for the duration of a command and drops those lines; everything else (Python warnings, tracebacks,
the progress line) passes through as it comes.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Any line in glog/absl format (`I0000 00:00:1796052578.282127    6390 port.cc:153] ...`) and
#: absl's note that comes before them. In a process whose only C++ logger is TensorFlow's.
GLOG_LINE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are "
                       rb"written to STDERR|[IWEF]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] )")

#: TensorFlow's start-up lines only, by source file: for logs that also hold other programs' glog
#: lines (tritonserver's own log, where the Python backend's TensorFlow writes too).
TF_STARTUP_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|"
                             r"[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cuda_platform|cuda_executor|"
                             r"cuda_dnn|cuda_blas|cuda_fft|cpu_feature_guard)\.cc)")


def without_tf_noise(text: str) -> str:
    """`text` without TensorFlow's start-up lines."""
    return "\n".join(line for line in text.splitlines() if not TF_STARTUP_LINE.match(line))


def _pump(read_fd: int, out_fd: int, drop: re.Pattern[bytes]) -> None:
    """Copy `read_fd` to `out_fd` a segment at a time (ending in \\n or \\r), dropping matches.

    A trailing partial segment is held back only while it could still become a dropped line
    (glog lines start with I/W/E/F), so a live progress line is shown as it is written.
    """
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        for segment in re.findall(rb"[^\r\n]*[\r\n]", pending):
            if not drop.match(segment):
                os.write(out_fd, segment)
        pending = re.sub(rb"^(?:[^\r\n]*[\r\n])*", b"", pending, count=1)
        if pending and pending[:1] not in (b"I", b"W", b"E", b"F"):
            os.write(out_fd, pending)
            pending = b""
    if pending and not drop.match(pending):
        os.write(out_fd, pending)
    os.close(read_fd)


@contextmanager
def filtered_stderr(drop: re.Pattern[bytes] = GLOG_LINE, enabled: bool = True) -> Iterator[None]:
    """Within the block, lines written to fd 2 (by Python or C++) that match `drop` are dropped."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, saved, drop), daemon=True,
                            name="stderr-filter")
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump sees the end and returns
        pump.join(timeout=5)
        if not pump.is_alive():  # else a child still holds the pipe: leave the pump its output
            os.close(saved)


def quiet_tensorflow(verbose: bool) -> None:
    """Environment for TensorFlow in this process and its children: its C++ log at errors only
    (the rest of its start-up noise is filtered by `filtered_stderr`), unless `verbose`."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
