"""Every command-line tool says what it is (--version) and what each option does (--help)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("tool", ["rp-launch", "rp-agent", "rp-video", "rp-devstack"])
def test_every_tool_has_a_version(tool: str) -> None:
    result = subprocess.run(
        [str(BIN / tool), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tool} ") and result.stdout.strip() != f"{tool} unknown"


@pytest.mark.parametrize(
    "argv",
    [
        ["rp-launch", "launch"],
        ["rp-launch", "wait"],
        ["rp-launch", "template", "sync"],
        ["rp-launch", "doctor"],
        ["rp-launch", "workflow", "check"],
        ["rp-launch", "workflow", "list"],
        ["rp-devstack", "up"],
        ["rp-agent", "sync"],
    ],
)
def test_every_option_has_help_text(argv: list[str]) -> None:
    """No option is listed bare: each has a line of help under it or beside it."""
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    options = result.stdout.split("options:", 1)[1].splitlines()
    bare = [
        line.strip()
        for i, line in enumerate(options)
        if line.startswith("  -")
        and len(line.strip().split("  ")) == 1  # nothing beside the option
        and not (i + 1 < len(options) and options[i + 1].startswith("                "))
    ]
    assert bare == [], result.stdout
