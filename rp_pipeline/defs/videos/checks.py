"""Asset checks on `generated_video` (the UI's Checks tab), one evaluation per partition.

- `sha256_matches_agent`: the object in R2 now has the sha256 the pod's agent computed before
  uploading it (from the agent's receipt; the pipeline's own sha256 for a /view fallback upload).
- `mp4_decodes`: every frame of the object decodes (PyAV).
- `matches_request`: width, height, frames and fps of the video are the ones requested.

In a run, the op that materializes a video records all three right after it (the ops
materialize with explicit events rather than an output, so check steps planned in the same run
would be skipped) with `harvested_video_checks`: it judges the facts the harvest read from its
own download of the video and the request the run rendered, so nothing is fetched again.

From the Checks tab (one partition at a time) the checks read the partition's latest
materialization, its receipt and request from R2, and download and decode the object once per
process for the three of them (keyed by the ETag, so a replaced object is read again). A failure
names the property and the difference.
"""

import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from rp_agent.uploader import file_sha256
from rp_pipeline.asset_keys import GENERATED_VIDEO
from rp_pipeline.defs.requests.partitions import video_request_partitions
from rp_pipeline.fleet.state import PlannedVideo, VideoRecord
from rp_pipeline.integrations.r2.keys import agent_relpath
from rp_pipeline.integrations.r2.reports import find_receipt
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.media import decode_all, probe
from rp_pipeline.video_requests.store import load_request
from rp_pipeline.workflows import get_workflow
from rp_pipeline.workflows.render import defaults

# Checks on a dynamically partitioned asset need `partitions_def` on their spec, which Dagster
# flags as a preview feature; the warning would print on every load of the code location
# (each `make demo`, each run) and says nothing the user can act on.
warnings.filterwarnings(
    "ignore",
    message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=PreviewWarning,
)

CHECKED = ("width", "height", "frames", "fps")
FPS_TOLERANCE = 0.01


@dataclass(frozen=True)
class ObjectFacts:
    """The video object as read from R2."""

    sha256: str
    decode_error: str | None
    decoded_frames: int
    facts: dict[str, Any]


@dataclass(frozen=True)
class Expected:
    """What the partition's video should be."""

    sha256: str
    sha256_from: str  # "agent receipt" | "pipeline upload"
    properties: dict[str, Any] | None  # the requested CHECKED values; None: no request known


Verdict = tuple[bool, str, dict[str, Any]]  # passed, one-line reason, metadata
Judge = Callable[[Expected, ObjectFacts], Verdict]


def _sha_judge(expected: Expected, obj: ObjectFacts) -> Verdict:
    want, source = expected.sha256, expected.sha256_from
    extra = {"sha256_in_r2": obj.sha256, "sha256_expected": want, "expected_from": source}
    if obj.sha256 == want:
        return True, f"sha256 {obj.sha256[:12]}... matches the {source}", extra
    return False, f"sha256 in R2 {obj.sha256[:12]}... != {source} {want[:12]}...", extra


def _decode_judge(expected: Expected, obj: ObjectFacts) -> Verdict:
    extra = {"decoded_frames": obj.decoded_frames}
    if obj.decode_error:
        return False, f"does not decode: {obj.decode_error}", extra
    if obj.decoded_frames == 0:
        return False, "no video frame decodes", extra
    return True, f"{obj.decoded_frames} frame(s) decode", extra


def _request_judge(expected: Expected, obj: ObjectFacts) -> Verdict:
    if expected.properties is None:
        return False, "the request of this partition is not in R2", {}
    if obj.decode_error:
        return False, f"cannot read the video: {obj.decode_error}", {}
    problems = []
    for name, want in expected.properties.items():
        got = obj.facts.get(name)
        if name == "fps":
            if got is None or abs(float(got) - float(want)) > FPS_TOLERANCE:
                problems.append(
                    f"fps {got} != requested {want} (off by {float(got or 0) - float(want):+.3f})"
                )
        elif got != int(want):
            problems.append(
                f"{name} {got} != requested {want} (off by {int(got or 0) - int(want):+d})"
            )
    extra = {
        f"{name}": MetadataValue.text(f"{obj.facts.get(name)} (requested {want})")
        for name, want in expected.properties.items()
    }
    if problems:
        return False, "; ".join(problems), extra
    summary = ", ".join(f"{n} {obj.facts.get(n)}" for n in expected.properties)
    return True, f"as requested: {summary}", extra


# Check name -> (its judge, its description in the UI).
CHECKS: dict[str, tuple[Judge, str]] = {
    "sha256_matches_agent": (
        _sha_judge,
        "The object in R2 has the sha256 the pod's agent computed before uploading it.",
    ),
    "mp4_decodes": (_decode_judge, "Every video frame of the object in R2 decodes."),
    "matches_request": (
        _request_judge,
        "Width, height, frame count and fps are the ones the request asked for.",
    ),
}


def requested_properties(workflow: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The CHECKED values a request asks for: its params over its workflow's defaults."""
    values = {**defaults(get_workflow(workflow)), **dict(params)}
    return {name: values[name] for name in CHECKED if name in values}


def _evaluations(
    partition: str, verdicts: Iterable[tuple[str, Verdict]]
) -> Iterator[AssetCheckEvaluation]:
    for name, (passed, reason, metadata) in verdicts:
        yield AssetCheckEvaluation(
            asset_key=GENERATED_VIDEO,
            check_name=name,
            passed=passed,
            metadata=metadata,
            description=reason,
            partition=partition,
        )


# ------------------------------------------------------------------ in a run: the harvest's facts


def harvested_video_checks(record: VideoRecord, video: PlannedVideo) -> list[AssetCheckEvaluation]:
    """The three checks of a video the run just harvested, as events the op yields right after
    its materialization: judged on what the harvest read from its download of the object (no
    second fetch) against the request the run rendered."""
    obj = ObjectFacts(record.sha256, record.decode_error, record.decoded_frames, record.facts)
    expected = Expected(
        sha256=record.sha256_expected,
        sha256_from=record.sha256_expected_from,
        properties=requested_properties(
            str(video.request.get("workflow") or video.workflow_name),
            video.request.get("params") or {},
        ),
    )
    verdicts = ((name, judge(expected, obj)) for name, (judge, _) in CHECKS.items())
    return list(_evaluations(record.partition_key, verdicts))


# ------------------------------------------------------- from the Checks tab: read back from R2


_cache: dict[tuple[str, str, str], ObjectFacts] = {}
_cache_lock = threading.Lock()


def read_object(r2: R2Resource, key: str) -> ObjectFacts | None:
    """Hash and fully decode the object at `key` (None when it is gone)."""
    head = r2.head(key)
    if head is None:
        return None
    ident = (r2.bucket, key, head.etag)
    with _cache_lock:
        if ident in _cache:
            return _cache[ident]
    with tempfile.TemporaryDirectory(prefix="rp-check-") as tmp:
        local = r2.download(key, Path(tmp) / Path(key).name)
        digest = file_sha256(local)
        decoded = decode_all(local)
        error, facts = decoded.error, {}
        try:
            facts = probe(local).as_dict()
        except (av.FFmpegError, IndexError, ValueError) as exc:
            error = error or f"{type(exc).__name__}: {exc}"
    found = ObjectFacts(digest, error, decoded.frames, facts)
    with _cache_lock:
        _cache[ident] = found
    return found


def latest_materialization(instance: DagsterInstance, partition: str) -> Any | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=GENERATED_VIDEO, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records and records[0].asset_materialization is not None else None


def expected_in_r2(r2: R2Resource, partition: str, md: Mapping[str, Any]) -> Expected:
    """What the materialization `md` of `partition` should be, from the pod's receipt (or the
    pipeline's own sha256 for a /view fallback upload) and the request stored in R2."""
    key = str(md["r2_key"])
    receipt = find_receipt(r2, str(md.get("pod_id", "")), agent_relpath(key, r2.prefix))
    if receipt is not None and receipt.key == key:
        sha256, source = receipt.sha256, "agent receipt"
    else:
        sha256, source = str(md.get("sha256", "")), "pipeline upload"
    request = load_request(r2, partition)
    properties = None if request is None else requested_properties(request.workflow, request.params)
    return Expected(sha256, source, properties)


def read_back(
    r2: R2Resource, record: Any | None, partition: str
) -> tuple[Expected, ObjectFacts] | str:
    """What the partition's latest materialization should be and its object as in R2, or why
    there is nothing to judge (then every check fails with that reason)."""
    if record is None:
        return "no materialization of this partition"
    md = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    if not md.get("r2_key"):
        return "its materialization has no r2_key"
    obj = read_object(r2, str(md["r2_key"]))
    if obj is None:
        return f"{md['r2_key']} is not in R2"
    return expected_in_r2(r2, partition, md), obj


def verdict(found: tuple[Expected, ObjectFacts] | str, judge: Judge) -> Verdict:
    """`judge` on what `read_back` found; failed, with its reason, when nothing was found."""
    return (False, found, {}) if isinstance(found, str) else judge(*found)


def judge_partition(r2: R2Resource, record: Any | None, partition: str, judge: Judge) -> Verdict:
    return verdict(read_back(r2, record, partition), judge)


def _result(context: AssetCheckExecutionContext, r2: R2Resource, judge: Judge) -> AssetCheckResult:
    """Run from the Checks tab (one partition) or with a run over several partitions."""
    verdicts = {
        p: judge_partition(r2, latest_materialization(context.instance, p), p, judge)
        for p in context.partition_keys
    }
    if len(verdicts) == 1:
        [(passed, reason, metadata)] = verdicts.values()
        return AssetCheckResult(passed=passed, description=reason, metadata=metadata)
    failed = {p: v[1] for p, v in verdicts.items() if not v[0]}
    return AssetCheckResult(
        passed=not failed,
        description="; ".join(f"{p}: {why}" for p, why in failed.items())[:2000] or "all passed",
        metadata={p: MetadataValue.text(v[1]) for p, v in verdicts.items()},
    )


def _video_check(name: str, judge: Judge, description: str) -> AssetChecksDefinition:
    """One check of the Checks tab: `judge` on each partition the check runs for."""

    @asset_check(
        asset=GENERATED_VIDEO,
        name=name,
        partitions_def=video_request_partitions,
        description=description,
    )
    def check(context: AssetCheckExecutionContext, r2: R2Resource) -> AssetCheckResult:
        return _result(context, r2, judge)

    return check


video_checks = [_video_check(name, judge, about) for name, (judge, about) in CHECKS.items()]


def video_check_evaluations(
    instance: DagsterInstance, r2: R2Resource, partition_keys: Iterable[str]
) -> Iterator[AssetCheckEvaluation]:
    """The three checks for each partition read back from the instance and R2 (fetching the
    object), as events; a run that just harvested a video uses `harvested_video_checks`."""
    for partition in partition_keys:
        found = read_back(r2, latest_materialization(instance, partition), partition)
        verdicts = ((name, verdict(found, judge)) for name, (judge, _) in CHECKS.items())
        yield from _evaluations(partition, verdicts)
