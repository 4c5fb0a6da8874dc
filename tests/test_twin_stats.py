"""`python -m export.twin stats|list|save` and the registry (fast: only the tiny twin is built)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export.twin.__main__ import main
from export.twin.stats import TwinStats, format_report

ROOT = Path(__file__).resolve().parents[1]


def test_registry_lists_the_twins_without_importing_tensorflow() -> None:
    code = ("import sys, export.twin as t; print(sorted(t.TWINS)); "
            "print(t.get_twin('pnasnet_large').feature_dim, t.get_twin('pnasnet_reduced').feature_dim,"
            " t.get_twin('pnasnet_large_classification').feature_dim); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == str(sorted(["pnasnet_large", "pnasnet_large_classification", "pnasnet_reduced",
                                 "tiny"]))
    assert out[1] == "4320 4320 1001"
    assert out[2] == "False"


def test_stats_command_counts_a_twin(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorflow")
    assert main(["stats", "--twin", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "twin tiny" in out and "parameters" in out and "multiply-adds" in out
    assert "86.1M" in out and "25.0B" in out
    assert "only the faithful twin is meant to match" in out


def test_unknown_twin_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--twin", "nope"]) == 2
    assert "unknown twin 'nope'" in capsys.readouterr().err


def test_report_verdict_and_differences() -> None:
    stats = TwinStats(name="x", description="d", parameters=86_061_989, head_parameters=4_325_321,
                      non_trainable=176_988, multiply_adds=24_937_400_112,
                      head_multiply_adds=4_324_320, multiply_adds_by_op={"Conv2D": 1},
                      batch_norm_elements=53_108_082, with_head=True, faithful=True)
    report = format_report(stats)
    assert "-0.04%" in report and "-0.25%" in report
    assert "verdict: matches the published figures" in report
    assert "81,736,668 parameters" in report
    off = TwinStats(name="x", description="d", parameters=80_000_000, head_parameters=0,
                    non_trainable=0, multiply_adds=25_000_000_000, head_multiply_adds=0)
    assert "verdict: differs from" in format_report(off)


def test_save_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorflow")
    assert main(["save", "tiny", str(tmp_path / "m"), "--seed", "2"]) == 0
    assert (tmp_path / "m" / "saved_model.pb").is_file()
    assert main(["save", "tiny", str(tmp_path / "m")]) == 2  # refuses to overwrite
