"""pytest fixtures for other test areas (the lead wires them into rp_devstack.pytest_plugin).

comfyui_standin  -> a running ComfyStandin (function scope, fresh output dir)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rp_devstack.comfyui_standin.standin import ComfyStandin


@pytest.fixture
def comfyui_standin(tmp_path: Path) -> Iterator[ComfyStandin]:
    standin = ComfyStandin(
        tmp_path / "comfyui" / "output",
        input_dir=tmp_path / "comfyui" / "input",
        temp_dir=tmp_path / "comfyui" / "temp",
        step_seconds=0.001,
    )
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
