"""The asset checks a run records judge the harvest's own read of the video (real H.264 file,
real S3 server): one download serves the harvest and the three checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from rp_agent.r2 import R2Settings
from rp_agent.uploader import file_sha256
from rp_devstack.comfyui_standin.media import Frames, Video, write_mp4
from rp_pipeline.defs.videos.checks import harvested_video_checks
from rp_pipeline.fleet.harvest import Located, inspect_video
from rp_pipeline.fleet.state import PlannedVideo, VideoRecord
from rp_pipeline.integrations.r2.resource import R2Resource

WORKFLOW = "wan22_ti2v_5b"


def planned(key: str, **params: Any) -> PlannedVideo:
    return PlannedVideo(
        partition_key=key,
        request={"prompt": "a fox", "workflow": WORKFLOW, "params": params, "seed": 1},
        workflow_name=WORKFLOW,
        workflow_hash="0" * 12,
        seed=1,
        filename_prefix="video/x",
        api_json={},
    )


@pytest.fixture
def harvested(tmp_path: Path, r2_settings: R2Settings) -> VideoRecord:
    """A 64x32, 5-frame, 8 fps video uploaded by 'the pipeline' and harvested from R2."""
    r2 = R2Resource(
        endpoint=r2_settings.endpoint,
        bucket=r2_settings.bucket,
        access_key_id=r2_settings.access_key_id,
        secret_access_key=r2_settings.secret_access_key,
    )
    local = tmp_path / "clip_00001_.mp4"
    write_mp4(local, Video(Frames(64, 32, 5), fps=8.0))
    head = r2.upload_file(
        local, "outputs/2026-01-01/pod1/video/clip_00001_.mp4", {"sha256": file_sha256(local)}
    )
    located = Located(head, head.seen_at, "pipeline_fallback")
    return inspect_video(
        r2=r2, located=located, partition_key="clip", prompt_id="p1",
        generation_time_s=None, queue_wait_s=None,
    )  # fmt: skip


def verdicts(record: VideoRecord, video: PlannedVideo) -> dict[str, Any]:
    return {e.check_name: e for e in harvested_video_checks(record, video)}


def test_the_harvest_reads_what_the_checks_judge(harvested: VideoRecord) -> None:
    assert harvested.decoded_frames == 5 and harvested.decode_error is None
    assert harvested.sha256_expected == harvested.sha256
    assert harvested.sha256_expected_from == "pipeline upload"
    found = verdicts(harvested, planned("clip", width=64, height=32, frames=5, fps=8.0))
    assert set(found) == {"sha256_matches_agent", "mp4_decodes", "matches_request"}
    assert all(e.passed and e.partition == "clip" for e in found.values()), found
    assert found["mp4_decodes"].description == "5 frame(s) decode"


def test_a_video_unlike_its_request_fails_naming_the_difference(harvested: VideoRecord) -> None:
    # Not given: the workflow's defaults (1280x704, 121 frames, 24 fps) are what was asked.
    found = verdicts(harvested, planned("clip", width=64))
    assert found["sha256_matches_agent"].passed and found["mp4_decodes"].passed
    request = found["matches_request"]
    assert not request.passed
    assert request.description == (
        "height 32 != requested 704 (off by -672); frames 5 != requested 121 (off by -116); "
        "fps 8.0 != requested 24.0 (off by -16.000)"
    )


def test_a_sha256_or_decode_failure_of_the_harvest_fails_its_check(
    harvested: VideoRecord,
) -> None:
    video = planned("clip", width=64, height=32, frames=5, fps=8.0)
    other = dataclasses.replace(
        harvested, sha256_expected="f" * 64, sha256_expected_from="agent receipt"
    )
    sha = verdicts(other, video)["sha256_matches_agent"]
    assert not sha.passed and "!= agent receipt ffffffffffff..." in (sha.description or "")
    broken = dataclasses.replace(harvested, decoded_frames=3, decode_error="InvalidDataError: x")
    found = verdicts(broken, video)
    assert found["mp4_decodes"].description == "does not decode: InvalidDataError: x"
    assert not found["mp4_decodes"].passed and not found["matches_request"].passed
