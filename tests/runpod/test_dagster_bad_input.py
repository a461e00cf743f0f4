"""Bad RunPod input in a real Dagster run on the devstack: the run fails at launch with one clear
line naming the problem, and no pod is left (mostly none is ever created)."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterInstance
from runpod_helpers import GPU_4090, GPU_A6000

from rp_devstack.ports import free_port
from rp_devstack.stack import Devstack
from rp_pipeline.integrations.replace import replace_fields
from tests.pipeline.helpers import generate, pods_of_run, register_requests, write_prompts


def with_runpod(resources: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**resources, "runpod": replace_fields(resources["runpod"], **changes)}


CASES = {
    "unknown_gpu": ({"gpu_types": ["NVIDIA GeForce RTX 9999"]}, "unknown GPU type id(s)"),
    "no_stock": ({"gpu_types": [GPU_4090, GPU_A6000]}, "no stock (catalog availability NONE)"),
    "bad_volume": ({"network_volume_id": "vol-typo"}, "vol-typo is not in this RunPod account"),
    "wrong_key": ({"api_key": "rpa-wrong-key"}, "RunPod rejected the API key"),
    # A short read patience: the client would ride out a 60 s outage before each read fails.
    "unreachable": ({"api_base_url": "unreachable", "read_patience_s": 3.0}, "network error"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_runpod_input_fails_the_run_in_one_line_without_a_pod(
    case: str, devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], tmp_path
) -> None:
    changes, expected = CASES[case]
    if changes.get("api_base_url") == "unreachable":
        changes = {**changes, "api_base_url": f"http://127.0.0.1:{free_port()}"}
    emulator = devstack.emulator
    if case == "no_stock":
        emulator.set_stock(GPU_4090, 0)
        emulator.set_stock(GPU_A6000, 0)
    try:
        [key] = write_prompts(tmp_path / "prompts", f"bad-{case}", 1)
        register_requests(instance, resources)
        result = generate(instance, with_runpod(resources, **changes), [key])
    finally:
        emulator.reset_stock()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "launch_pod" in failure.step_key
    error = failure.event_specific_data.error
    while error.cause is not None:  # the RunPod layer's own error, under Dagster's wrapper
        error = error.cause
    message = error.message.strip()
    assert expected in message and len(message.splitlines()) == 1, message
    assert "rpa-wrong-key" not in message
    assert pods_of_run(emulator, result.run_id) == []


def test_one_video_run_speaks_only_rest_v2(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], tmp_path, capsys
) -> None:
    """Acceptance: a one-video run on the devstack sends no GraphQL request; the v2 requests it
    makes are printed (run with -s to read them)."""
    [key] = write_prompts(tmp_path / "prompts", "v2-only", 1)
    register_requests(instance, resources)
    emulator = devstack.emulator
    emulator.reset_request_counts()
    result = generate(instance, resources, [key])
    assert result.success
    counts = emulator.request_counts()
    assert "POST /graphql" not in counts and counts["POST /v2/pods"] == 1, counts
    assert all(route.split()[1].startswith("/v2/") for route in counts), counts
    assert emulator.contract_violations == []
    with capsys.disabled():
        print(f"\none-video run: {sum(counts.values())} REST v2 requests: {counts}")
    [pod] = pods_of_run(emulator, result.run_id)
    assert pod["desired_status"] == "TERMINATED"
