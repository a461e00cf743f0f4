"""A person stops a run from the UI while the video is still rendering: the pod must go.

The run is started through GraphQL (the UI launch is covered by test_ui_materialize) with a
request of 5000 sampler steps, which the ComfyUI stand-in renders at its devstack pace of
0.02 s/step: ~100 s of generation, so the run is certainly mid-generation when Terminate is
clicked. The ops terminate the pod on interruption; the canceled-run sensor and the reaper
(60 s) are the fallbacks, so the pod must be TERMINATED within ~70 s.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.browser import NO_BROWSER, UI, browser_available, text_is
from tests.e2e.conftest import E2EStack, publish_to_docs
from tests.e2e.graphql_api import GraphQLApi
from tests.e2e.requests_config import new_partition_key, request_spec, run_config

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not browser_available(), reason=NO_BROWSER),
    # dagster-graphql calls gql with arguments gql has deprecated; not ours to fix
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

SLOW_STEPS = 5000
POD_GONE_WITHIN_S = 70.0


def wait_until(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.mark.timeout(420)
def test_terminate_from_the_ui_mid_generation_ends_the_pod(
    e2e_stack: E2EStack, browser_ui: UI
) -> None:
    ui = browser_ui
    api = GraphQLApi(e2e_stack.url)
    key = new_partition_key("e2e-ui-cancel")
    api.add_partition(key)
    spec = request_spec("A paper boat drifting down a rain gutter", seed=4004, steps=SLOW_STEPS)
    run_id = api.launch(key, run_config(key, spec))

    # Mid-generation: the prompt is queued on the pod and harvest_outputs is waiting on it.
    wait_until(
        lambda: "generated_video.harvest_outputs" in api.started_steps(run_id),
        180,
        "harvest_outputs to start",
    )
    (pod,) = wait_until(lambda: e2e_stack.pods_of_run(run_id), 10, "the run's pod")
    assert pod["desired_status"] == "RUNNING"

    ui.open(f"/runs/{run_id}")
    ui.find("//*[normalize-space()='Executing (1)']", what="the executing step")
    ui.screenshot("run-generating")
    ui.button("Terminate")
    ui.find(f"//*[@role='dialog']//*[{text_is('Terminate runs')}]", what="the terminate dialog")
    ui.screenshot("terminate-dialog")
    ui.button("Terminate 1 run")
    clicked_at = time.monotonic()

    ui.wait_run_status({"Canceled"}, 120, stop_on={"Success"})
    publish_to_docs(ui.screenshot("run-canceled"), "ui-run-canceled.png")

    def pod_terminated() -> bool:
        (now,) = e2e_stack.pods_of_run(run_id)
        return now["desired_status"] == "TERMINATED"

    remaining = max(1.0, POD_GONE_WITHIN_S - (time.monotonic() - clicked_at))
    wait_until(pod_terminated, remaining, f"pod {pod['id']} to be terminated")
    print(f"pod {pod['id']} terminated {time.monotonic() - clicked_at:.1f} s after Terminate")
    assert api.client.get_run_status(run_id).value == "CANCELED"
    assert e2e_stack.live_pods() == []
