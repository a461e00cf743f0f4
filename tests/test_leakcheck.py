"""The session leak check (tests/leakcheck.py) run on real inner pytest sessions: one that
leaves a temp dir and a process fails and has both removed; a tidy one passes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.leakcheck import SESSION_PREFIX, processes_with_env

LEAKY = """
import os, subprocess, tempfile

def test_leaves_things_behind():
    tempfile.mkdtemp(prefix="rp-leaky-")
    subprocess.Popen(["sleep", "600"], env={**os.environ, "RP_LEAK_PROBE": "PROBE"})
"""

TIDY = """
import subprocess, tempfile

def test_cleans_up(tmp_path):
    (tmp_path / "kept-by-pytest").write_text("x")
    with tempfile.TemporaryDirectory(prefix="rp-tidy-"):
        pass
    subprocess.run(["sleep", "0"], check=True)
"""


def run_inner_session(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.leakcheck", "-p", "no:cacheprovider",
         "-q", "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def inner_session_dirs() -> list[str]:
    return [p.name for p in Path(tempfile.gettempdir()).glob(f"{SESSION_PREFIX}*")]


def test_a_session_that_leaves_a_temp_dir_and_a_process_fails(tmp_path: Path) -> None:
    probe = f"RP_LEAK_PROBE={uuid.uuid4().hex}"
    result = run_inner_session(tmp_path, LEAKY.replace("PROBE", probe.split("=")[1]))

    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 passed" in out  # the test itself passed: the leak alone fails the session
    assert "left behind by the tests" in out
    assert "rp-leaky-" in out
    assert "sleep 600" in out
    # Reported, then removed: the inner session's dir is gone and its `sleep` was killed.
    assert inner_session_dirs() == []
    assert processes_with_env(probe) == {}


def test_a_tidy_session_passes(tmp_path: Path) -> None:
    result = run_inner_session(tmp_path, TIDY)

    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "left behind" not in out
    assert inner_session_dirs() == []
