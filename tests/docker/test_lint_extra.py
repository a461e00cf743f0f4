"""scripts/lint-extra.sh passes on the repository, and each tool in it does reject a broken
file (so a green run means something)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or str(BIN / name)
    if not Path(path).exists():
        pytest.skip(f"{name} is not installed (uv sync installs the dev group)")
    return path


def test_lint_extra_passes_on_the_repository() -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "lint-extra.sh")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for checked in (".github/workflows/ci.yml", "docker/Dockerfile", "docker/start.sh"):
        assert checked in result.stdout


def repo_shell_scripts() -> list[Path]:
    skip = {".venv", ".git", "node_modules", ".devstack", ".mypy_cache", ".ruff_cache"}
    scripts: list[Path] = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in skip]  # prune: never walk the venv
        scripts += [Path(root) / name for name in files if name.endswith(".sh")]
    return scripts


def test_every_shell_script_parses() -> None:
    scripts = repo_shell_scripts()
    assert scripts
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_workflow_schema_rejects_a_job_without_runs_on(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo hi\n")
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


def test_hadolint_rejects_an_unpinned_base(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM ubuntu:latest\nRUN cd /tmp && echo hi\n")
    result = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag


def test_shellcheck_rejects_an_unquoted_expansion(tmp_path: Path) -> None:
    script = tmp_path / "bad.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $1/tmp\n")
    result = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "SC2086" in result.stdout
