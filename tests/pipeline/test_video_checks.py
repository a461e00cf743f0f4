"""Asset checks on generated_video and the pod's receipts, on the devstack (real pod processes,
real rp-agent, real S3 server, real Dagster)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from dagster import AssetSelection, DagsterInstance, Definitions, define_asset_job, materialize

from rp_agent.keys import receipts_prefix
from rp_devstack.stack import Devstack
from rp_pipeline.defs.jobs import generate_videos
from rp_pipeline.defs.previews.assets import FACT_NAMES
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.defs.videos.checks import video_check_evaluations, video_checks
from rp_pipeline.integrations.r2.keys import preview_json_key, request_key
from rp_pipeline.integrations.r2.reports import find_receipt
from rp_pipeline.integrations.r2.scan import scan
from tests.pipeline.helpers import (
    latest_by_partition,
    preview_and_catalog,
    r2_now,
    register_requests,
    write_prompts,
)


def run_checks(instance: DagsterInstance, resources: dict[str, Any], key: str) -> Any:
    """The checks alone for one partition, as the Checks tab's "Execute" runs them."""
    job = define_asset_job("check_video", selection=AssetSelection.checks(*video_checks))
    defs = Definitions(
        assets=[video_requests, generated_video],
        asset_checks=video_checks,
        jobs=[job],
        resources=resources,
    )
    return defs.resolve_job_def("check_video").execute_in_process(
        instance=instance, tags={"dagster/partition": key}, raise_on_error=False
    )


def evaluations(result: Any) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_pass_after_a_real_run_and_catch_a_corrupted_object(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    [key] = write_prompts(prompts_dir, "checked", 1)
    register_requests(instance, resources)
    bookmark = scan(r2_now(), None, None)
    result = materialize(
        [video_requests, generated_video],
        selection=[generated_video],
        instance=instance,
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )
    assert result.success
    # The materializing op records the three checks in the run itself (the Checks tab of a
    # run started from the asset page), although `materialize` plans no check step for them.
    in_run = evaluations(result)
    assert set(in_run) == {"sha256_matches_agent", "mp4_decodes", "matches_request"}
    assert all(e.passed and e.partition == key for e in in_run.values()), in_run
    checks = evaluations(run_checks(instance, resources, key))
    assert set(checks) == {"sha256_matches_agent", "mp4_decodes", "matches_request"}
    for name, evaluation in checks.items():
        assert evaluation.passed, f"{name}: {evaluation.description}"
        assert evaluation.partition == key

    r2 = r2_now()
    # The same three as events an op yields after materializing (per partition, batch or not).
    events = list(video_check_evaluations(instance, r2, [key]))
    assert {e.check_name for e in events} == set(checks)
    assert all(e.passed and e.partition == key for e in events)

    md = latest_by_partition(instance)[key]
    receipt = find_receipt(r2, md["pod_id"], md["r2_key"].split("/", 3)[3])
    assert receipt is not None and receipt.key == md["r2_key"]
    # Measured on the pod: close -> upload returned, transfer included.
    assert md["upload_latency_s"] == round(receipt.upload_done - receipt.close_time, 3)
    assert md["upload_latency_s"] > 0 and md["sha256"] == receipt.sha256

    # The receipts live beside the day folders; the R2 sensor's scan never reports them.
    assert any(page.keys for page in r2.iter_keys(receipts_prefix(md["pod_id"], r2.prefix)))
    new_keys = scan(r2, bookmark.cursor, None).new_keys
    assert md["r2_key"] in new_keys and not any("/_rp/" in k for k in new_keys)

    # Someone overwrites the video in R2: the sha256 check fails and says by how much.
    data = bytearray(r2.get_bytes(md["r2_key"]))
    data[len(data) // 2] ^= 0xFF
    r2.put_bytes(md["r2_key"], bytes(data), "video/mp4")
    sha = evaluations(run_checks(instance, resources, key))["sha256_matches_agent"]
    assert not sha.passed
    assert "!= agent receipt" in (sha.description or "")
    assert sha.metadata["sha256_expected"].value == receipt.sha256

    # video_preview reuses the harvest's facts and poster: it never reads the video again
    # (garbage in place of the video would make a probe fail).
    r2.put_bytes(md["r2_key"], b"not a video any more", "video/mp4")
    preview = preview_and_catalog(instance, resources, raise_on_error=False)
    assert preview.success
    doc = json.loads(r2.get_bytes(preview_json_key(md["r2_key"])))
    assert doc["facts"] == {name: md[name] for name in FACT_NAMES}
    assert doc["facts"]["frames"] == 9


# One request line of the S3 server's log (werkzeug): `... "GET /bucket/key?query HTTP/1.1" 200 -`.
REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+"')


def object_gets(log: Path, since: int, bucket: str) -> Counter[str]:
    """GETs of single objects the S3 server answered after byte `since` of its log, by key
    (listings, which are GETs of the bucket itself, are not counted)."""
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    gets: Counter[str] = Counter()
    for match in REQUEST_LINE.finditer(text):
        path = unquote(urlsplit(match["target"]).path)
        if match["method"] == "GET" and path.startswith(f"/{bucket}/"):
            gets[path[len(bucket) + 2 :]] += 1
    return gets


def test_generate_videos_job_records_every_partitions_checks(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    """The job excludes the check steps; its runs still carry all three checks per video, from
    the facts the harvest read: each video object is fetched from R2 once in the run."""
    keys = write_prompts(prompts_dir, "jobchecked", 2)
    register_requests(instance, resources)
    s3_log = devstack.state_dir / "s3.log"
    log_start = s3_log.stat().st_size
    defs = Definitions(
        assets=[video_requests, generated_video],
        asset_checks=video_checks,
        jobs=[generate_videos],
        resources=resources,
    )
    result = defs.resolve_job_def("generate_videos").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        raise_on_error=False,
    )
    assert result.success
    found = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    assert set(found) == {
        (name, key)
        for key in keys
        for name in ("sha256_matches_agent", "mp4_decodes", "matches_request")
    }
    assert all(e.passed for e in found.values()), found
    # Counted by the S3 server itself: harvest and checks share one download of each video.
    videos = {md["r2_key"] for key, md in latest_by_partition(instance).items() if key in keys}
    assert len(videos) == len(keys)
    gets = object_gets(s3_log, log_start, r2_now().bucket)
    assert {key: gets[key] for key in videos} == dict.fromkeys(videos, 1), gets
    # ... and each request is read once, when the run plans it (the checks judge that one).
    assert all(gets[request_key(key)] <= 1 for key in keys), gets


def test_a_broken_video_in_the_bucket_does_not_block_the_other_previews(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    """Catch-up previews skip (and name) an object that is not a video; asked for by name, the
    same object fails the run in one line."""
    import uuid

    from rp_pipeline.defs.previews.assets import video_preview

    r2 = r2_now()
    broken = f"{r2.prefix}/2026-01-01/pod-by-hand/video/broken-{uuid.uuid4().hex[:8]}_00001_.mp4"
    r2.put_bytes(broken, b"not a video", "video/mp4")
    try:
        caught_up = materialize([video_preview], instance=instance, resources=resources)
        assert caught_up.success
        [mat] = caught_up.asset_materializations_for_node("video_preview")
        unreadable = mat.metadata["unreadable"].value
        assert isinstance(unreadable, dict) and broken in unreadable
        assert broken not in mat.metadata["object_keys"].value

        by_name = materialize(
            [video_preview], instance=instance, resources=resources, raise_on_error=False,
            run_config={"ops": {"video_preview": {"config": {"object_keys": [broken]}}}},
        )  # fmt: skip
        assert not by_name.success
        failure = next(e for e in by_name.all_events if e.event_type_value == "STEP_FAILURE")
        message = str(failure.event_specific_data.error.message)
        assert f"{broken} is not a readable video" in message and "no preview made" in message
    finally:
        r2.client.delete_object(Bucket=r2.bucket, Key=broken)
