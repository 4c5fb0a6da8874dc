"""A short headless Locust run through `python -m loadtest` against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_locust_grpc_run_exits_by_itself_with_zero_failures(grpc_url: str, tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "--host", grpc_url, "--users", "4", "--duration", "3s",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(Path(f"{out}.json").read_text())
    flow, lat = report["throughput"], report["latency_ms"]
    assert flow["requests"] > 0 and flow["failures"] == 0 and lat["count"] == flow["requests"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert Path(f"{out}.html").stat().st_size > 0
    assert "p95" in proc.stdout
