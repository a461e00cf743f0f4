"""Fixtures: a real ComfyUI stand-in on a loopback port, and clients for it."""

from __future__ import annotations

import pytest

from rp_devstack.comfyui_standin import ComfyStandin
from rp_pipeline.integrations.comfyui.client import ComfyUIClient


@pytest.fixture
def standin(comfyui_standin: ComfyStandin) -> ComfyStandin:
    """The devstack plugin's stand-in (rp_devstack.pytest_plugin), under the short name."""
    return comfyui_standin


@pytest.fixture
def client(standin: ComfyStandin) -> ComfyUIClient:
    return ComfyUIClient(standin.base_url, poll_interval_s=0.2)
