"""The main job, small: ``python -m dh_tf demo`` end to end in its own process (its own JVM)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, free_port


@pytest.mark.slow
def test_demo_trains_reports_and_beats_the_baseline(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "dh_tf", "demo", "--rows", "300000", "--epochs", "2", "--batch-size", "1024",
         "--data-dir", str(tmp_path / "data"), "--out", str(out), "--port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["rows_train"] + report["rows_test"] <= 300_000 and report["rows_test"] > 25_000
    assert len(report["history"]["loss"]) == 2
    assert report["test_accuracy"] > report["baseline_accuracy"] + 0.2
    assert (out / "training_curve.png").stat().st_size > 10_000
    assert "test accuracy" in (out / "report.md").read_text()
    assert "read-only epoch into TF" in proc.stdout
