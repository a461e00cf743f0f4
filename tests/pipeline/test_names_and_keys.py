"""The pipeline's names and its layout of the bucket: one spelling each, consistent with the
agent's keys and with the names RunPod pods get."""

from __future__ import annotations

import pytest

from rp_pipeline.fleet.sweep import run_name_prefix
from rp_pipeline.integrations.r2 import keys
from rp_pipeline.integrations.runpod.client import pod_name
from rp_pipeline.integrations.runpod.names import run_slug

RUN_IDS = ["7f0bcecb-0a0f-400a-920e-d409e24852e3", "ABC_def-123456789", "run-lease-test"]


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_every_pod_name_of_a_run_starts_with_the_prefix_the_sweep_looks_for(run_id: str) -> None:
    assert run_slug(run_id) == "".join(c for c in run_id.lower() if c.isalnum())[:8]
    for label in (None, "replace-1"):
        assert pod_name(run_id, label).startswith(run_name_prefix(run_id))


def test_the_agent_relpath_of_an_output_key_undoes_object_key() -> None:
    key = keys.object_key("video/wan/clip_00001_.mp4", 1_700_000_000.0, "pod1", "outs/x")
    assert key == "outs/x/2023-11-14/pod1/video/wan/clip_00001_.mp4"
    assert keys.agent_relpath(key, "outs/x/") == "video/wan/clip_00001_.mp4"
    assert keys.pod_of(key, "outs/x") == "pod1"


def test_preview_keys_sit_beside_the_prefix_and_lead_back_to_the_video() -> None:
    video = "outputs/2026-01-01/pod1/video/wan/a-0123abcd_00001_.mp4"
    assert keys.preview_json_key(video) == f"previews/{video}.json"
    assert keys.preview_png_key(video) == f"previews/{video}.png"
    assert keys.preview_video_key(keys.preview_json_key(video)) == video
    assert keys.preview_video_key(keys.preview_png_key(video)) is None  # a poster, not facts
    assert keys.request_key("scene/1") == "requests/scene/1.json"
    assert keys.lease_key("pod1", "outputs") == "outputs/_rp/leases/pod1.json"
    assert keys.boot_key("pod1", "outputs") == "outputs/_rp/boot/pod1.json"
    probe = keys.doctor_probe_key("outputs", "abc")
    assert probe == "outputs/_rp/doctor/probe-abc"
    assert probe.startswith(keys.control_prefix("outputs"))  # no video listing sees it


def test_render_markers_of_a_partition_list_under_one_prefix() -> None:
    run_id = "7f0bcecb-0a0f-400a-920e-d409e24852e3"
    marker = keys.render_marker_key("scene/1", run_id, "outputs")
    assert marker == "outputs/_rp/renders/scene~2F1/7f0bcecb.json"
    assert marker.startswith(keys.render_markers_prefix("scene/1", "outputs"))
    # The run id part is the one the render's filename prefix carries.
    assert keys.filename_prefix("wan", "scene/1", run_id).endswith("-" + marker[-13:-5])
