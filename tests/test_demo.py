"""`python -m demo` end to end on the tiny twin: export, serve, embed, batch, load test, stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serve.server import Ports

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_whole_path(tmp_path: Path) -> None:
    ports = Ports.free()
    env = dict(os.environ, HTTP_PORT=str(ports.http), GRPC_PORT=str(ports.grpc),
               METRICS_PORT=str(ports.metrics))
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--source", "twin:tiny", "--repository", str(tmp_path / "repo"),
         "--work-dir", str(tmp_path / "work"), "--duration", "3s", "--users", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for section in ("1. export", "2. start", "3. embed", "4. dynamic batching", "5. load test",
                    "6. stop"):
        assert section in out
    assert "cosine similarity" in out and "(4320,)" in out
    assert "average batch" in out
    assert "failures 0" in out
    assert "tritonserver exited with code 0" in out
    assert (tmp_path / "repo" / "pnasnet_large" / "1" / "model.savedmodel").is_dir()
