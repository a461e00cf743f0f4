"""No invented image: a pod runs the image the user's CI publishes (RP_IMAGE) or the one their
RunPod template names (RUNPOD_TEMPLATE_ID). With a template and no image, the create carries no
image (one would override the template's); with neither, nothing is created."""

from __future__ import annotations

import pytest

from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.integrations.runpod.client import RunPodClient
from rp_pipeline.integrations.runpod.errors import PodLaunchError
from rp_pipeline.integrations.runpod.pods import PodSpec, deploy_request
from rp_pipeline.settings import NO_IMAGE, read_settings
from tests.rp_launch import one_line_error, only_base_url_and_key

GPU = "NVIDIA GeForce RTX 4090"
TEMPLATE_IMAGE = "ghcr.io/acme/runpod-dagster:from-template"


def creates(emulator: RunPodEmulator) -> int:
    counts = emulator.request_counts()
    return counts.get("POST /v2/pods", 0) + counts.get("POST /graphql", 0)


def test_with_a_template_the_create_carries_no_image(runpod_emulator: RunPodEmulator) -> None:
    template = runpod_emulator.save_template(
        {"name": "wan22", "imageName": TEMPLATE_IMAGE, "ports": "8188/http,22/tcp"}
    )
    spec = PodSpec(gpu_types=[GPU], template_id=template["id"], env={"ENABLE_R2_SYNC": "false"})
    assert "imageName" not in deploy_request(spec, "dagster-x", "run", "ALL", None)
    client = RunPodClient(runpod_emulator.api_key, runpod_emulator.base_url)
    pod = client.launch(spec, "run-template")
    try:
        assert client.get(pod.id).image == TEMPLATE_IMAGE  # the template's, not one we invented
    finally:
        client.terminate(pod.id)


def test_with_neither_image_nor_template_nothing_is_created(
    runpod_emulator: RunPodEmulator,
) -> None:
    client = RunPodClient(runpod_emulator.api_key, runpod_emulator.base_url)
    before = creates(runpod_emulator)
    with pytest.raises(PodLaunchError) as err:
        client.launch(PodSpec(gpu_types=[GPU]), "run-none")
    assert "RP_IMAGE" in str(err.value) and "RUNPOD_TEMPLATE_ID" in str(err.value)
    assert creates(runpod_emulator) == before


def test_rp_launch_without_an_image_fails_in_one_line_before_any_create(
    runpod_emulator: RunPodEmulator,
) -> None:
    before = creates(runpod_emulator)
    result = only_base_url_and_key(runpod_emulator, "launch", "--gpu", GPU, RP_IMAGE="")
    line = one_line_error(result, 2)
    assert "--image" in line and "RUNPOD_TEMPLATE_ID" in line and "runpod-dagster" in line
    assert creates(runpod_emulator) == before


def test_production_without_image_or_template_is_a_settings_problem() -> None:
    assert NO_IMAGE in read_settings({"RP_ENV": "production"}).problems
    assert NO_IMAGE not in read_settings({"RP_ENV": "production", "RP_IMAGE": "i:1"}).problems
    with_template = read_settings({"RP_ENV": "production", "RUNPOD_TEMPLATE_ID": "tpl"})
    assert NO_IMAGE not in with_template.problems
    assert NO_IMAGE not in read_settings({"RP_ENV": "devstack"}).problems
