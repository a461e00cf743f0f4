"""Shared pieces for the RunPod layer tests: a client on the per-test emulator."""

from __future__ import annotations

import pytest

from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.resources.runpod import RunPodClient


@pytest.fixture
def client(runpod_emulator: RunPodEmulator) -> RunPodClient:
    # Short polls and backoffs: the emulator answers at once, tests need not wait like RunPod.
    return RunPodClient(
        runpod_emulator.api_key,
        runpod_emulator.base_url,
        poll_interval_s=0.1,
        retry_backoff_s=0.05,
        request_timeout_s=5,
    )
