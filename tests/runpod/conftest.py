"""Shared pieces for the RunPod layer tests: a client on the per-test emulator, once per API.

`api` parametrizes the contract suite over both backends (REST v2, the default, and GraphQL).
After each test the emulator must hold no answer that broke RunPod's v2 document, and a REST
client must not have sent a single GraphQL request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.integrations.runpod.resource import RunPodClient


@pytest.fixture(params=["rest", "graphql"])
def api(request: pytest.FixtureRequest, runpod_emulator: RunPodEmulator) -> Iterator[str]:
    yield request.param
    assert runpod_emulator.contract_violations == []
    if request.param == "rest":
        assert "POST /graphql" not in runpod_emulator.request_counts()


@pytest.fixture
def client(runpod_emulator: RunPodEmulator, api: str) -> RunPodClient:
    # Short polls and backoffs: the emulator answers at once, tests need not wait like RunPod.
    return RunPodClient(
        runpod_emulator.api_key,
        runpod_emulator.base_url,
        poll_interval_s=0.1,
        retry_backoff_s=0.05,
        request_timeout_s=5,
        api=api,
    )
