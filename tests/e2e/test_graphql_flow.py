"""The UI flow without a browser, for people who trigger runs from their own tools:
add the partition, submit `generate_videos` for it with the request in run config, poll the run,
read the partition's metadata, and find no pod left running."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import E2EStack
from tests.e2e.graphql_api import GraphQLApi
from tests.e2e.requests_config import new_partition_key, request_spec, run_config

pytestmark = [
    pytest.mark.e2e,
    # dagster-graphql calls gql with arguments gql has deprecated; not ours to fix
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

OPS_IN_ORDER = [
    "generated_video.validate_requests",
    "generated_video.launch_pod",
    "generated_video.wait_for_ready",
    "generated_video.submit_workflow",
    "generated_video.harvest_outputs",
    "generated_video.terminate_pod",
]


@pytest.mark.timeout(420)
def test_new_request_materialized_through_graphql(e2e_stack: E2EStack) -> None:
    api = GraphQLApi(e2e_stack.url)
    key = new_partition_key("e2e-gql-lighthouse")
    spec = request_spec("A lighthouse on a cliff at night, storm waves, sweeping beam", seed=1001)

    api.add_partition(key)
    run_id = api.launch(key, run_config(key, spec))

    assert api.wait_finished(run_id, timeout_s=180) == "SUCCESS"
    assert api.started_steps(run_id) == OPS_IN_ORDER
    materialized_by, metadata = api.latest_metadata(key)
    assert materialized_by == run_id
    assert metadata["generation_time_s"] > 0
    assert metadata["upload_latency_s"] >= 0
    assert metadata["cost_usd"] > 0
    assert metadata["prompt"] == spec["prompt"]
    assert metadata["seed"] == spec["seed"]
    env = e2e_stack.devstack.env
    assert metadata["r2_url"].startswith(f"s3://{env['R2_BUCKET']}/outputs/")
    assert "presigned_url" not in metadata  # a presigned link carries the access key id
    assert metadata["r2_key"].endswith(f"/{key}-{run_id[:8]}_00001_.mp4")
    assert metadata["poster"].startswith(f"![{key}](data:image/png;base64,")
    pods = e2e_stack.pods_of_run(run_id)
    assert [p["desired_status"] for p in pods] == ["TERMINATED"]
    assert e2e_stack.live_pods() == []


def test_unknown_partition_is_refused_before_any_pod(e2e_stack: E2EStack) -> None:
    """A partition added without a request spec fails in validate_requests; no pod is launched."""
    api = GraphQLApi(e2e_stack.url)
    key = new_partition_key("e2e-gql-no-spec")
    api.add_partition(key)
    run_id = api.launch(key, {})
    assert api.wait_finished(run_id, timeout_s=180) == "FAILURE"
    assert api.started_steps(run_id) == ["generated_video.validate_requests"]
    assert e2e_stack.pods_of_run(run_id) == []
