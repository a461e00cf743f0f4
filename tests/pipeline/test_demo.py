"""`make demo` end to end: exit 0, two pods side by side for the batch, zero pods left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_one_batch_and_leaves_no_pod() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rp_pipeline.tools.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "pods launched for the batch: 2 side by side for 4 videos" in out
    assert "pods left running on the emulator: 0" in out
    assert out.count("agent") + out.count("pipeline_fallback") >= 4
    assert "demo ok" in out
