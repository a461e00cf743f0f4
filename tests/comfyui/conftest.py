"""Fixtures: a real ComfyUI stand-in on a loopback port, and clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rp_devstack.comfyui_standin import ComfyStandin
from rp_pipeline.resources.comfyui import ComfyUIClient


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ComfyStandin]:
    server = ComfyStandin(
        tmp_path / "output",
        input_dir=tmp_path / "input",
        temp_dir=tmp_path / "temp",
        step_seconds=0.005,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(standin: ComfyStandin) -> ComfyUIClient:
    return ComfyUIClient(standin.base_url, poll_interval_s=0.2)
