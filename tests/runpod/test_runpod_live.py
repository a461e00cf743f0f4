"""Against the real RunPod API: our REST v2 calls and GraphQL documents are valid there, not only
on the emulator (each check runs once per API).

Skipped unless RUNPOD_LIVE=1 and RUNPOD_API_KEY hold a real key. The read-only checks cost
nothing; the launch check (RUNPOD_LIVE_LAUNCH=1) rents the cheapest listed GPU for about a
minute under a $1/hr cap and always terminates it.
"""

from __future__ import annotations

import os
import uuid

import pytest

from rp_pipeline.integrations.runpod.errors import RunPodRequestError
from rp_pipeline.integrations.runpod.resource import (
    PodSpec,
    RestBackend,
    RunPodAuthError,
    RunPodClient,
)

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        os.environ.get("RUNPOD_LIVE") != "1" or not os.environ.get("RUNPOD_API_KEY"),
        reason="set RUNPOD_LIVE=1 and RUNPOD_API_KEY to run against the real RunPod API",
    ),
]

REAL_API = "https://api.runpod.io"


@pytest.fixture(params=["rest", "graphql"])
def live_client(request: pytest.FixtureRequest) -> RunPodClient:
    return RunPodClient(os.environ["RUNPOD_API_KEY"], REAL_API, api=request.param)


@pytest.fixture
def rest_backend() -> RestBackend:
    return RestBackend(os.environ["RUNPOD_API_KEY"], REAL_API)


def test_rest_v2_catalog_reports_stock_per_datacenter(rest_backend: RestBackend) -> None:
    gpus = {g["id"]: g for g in rest_backend.gpu_types()}
    assert "NVIDIA GeForce RTX 4090" in gpus
    levels = {g["availability"] for g in gpus.values()}
    assert levels <= {"NONE", "LOW", "MEDIUM", "HIGH"} and levels
    stocked = [g for g in gpus.values() if g["availability"] != "NONE"]
    assert all(g["dataCenters"] for g in stocked)  # per-datacenter figures where in stock


def test_rest_v2_refuses_an_undocumented_field_naming_it(rest_backend: RestBackend) -> None:
    """A body the document refuses is a 422 naming the field, before anything is created."""
    with pytest.raises(RunPodRequestError, match="notAField"):
        rest_backend._call(
            "POST",
            "/v2/pods",
            "createPod",
            json_body={"name": "live-contract-check", "image": "busybox", "notAField": 1},
        )


def test_rest_v2_bad_key_is_the_key_message() -> None:
    with pytest.raises(RunPodAuthError, match="RUNPOD_API_KEY"):
        RestBackend("rpa_not_a_real_key", REAL_API).list_pods()


def test_read_only_queries_are_valid_on_runpod(live_client: RunPodClient) -> None:
    gpus = live_client.gpu_types()
    assert any(g.id == "NVIDIA GeForce RTX 4090" for g in gpus)
    assert isinstance(live_client.network_volumes(), list)
    assert isinstance(live_client.list_pods(), list)
    assert isinstance(live_client.list_templates(), list)
    assert live_client.get("nonexistent00000") is None


@pytest.mark.skipif(os.environ.get("RUNPOD_LIVE_LAUNCH") != "1", reason="costs money")
def test_launch_ready_terminate_on_runpod(live_client: RunPodClient) -> None:
    spec = PodSpec(
        image=os.environ.get(
            "RUNPOD_LIVE_IMAGE", "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
        ),
        gpu_types=["NVIDIA GeForce RTX 4090", "NVIDIA RTX A5000", "NVIDIA RTX A4000"],
        cloud_type="SECURE",
        network_volume_id=os.environ.get("RUNPOD_NETWORK_VOLUME_ID") or None,
        max_cost_per_hr=1.0,
        name="live-test",
    )
    pod = live_client.launch(spec, f"live-{uuid.uuid4().hex}")
    try:
        assert pod.cost_per_hr is not None and pod.cost_per_hr <= 1.0
        fetched = live_client.get(pod.id)
        assert fetched is not None and fetched.name == pod.name
    finally:
        live_client.terminate(pod.id)
    assert live_client.get(pod.id) is None
