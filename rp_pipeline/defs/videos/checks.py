"""Asset checks on `generated_video` (the UI's Checks tab), one evaluation per partition.

- `sha256_matches_agent`: the object in R2 now has the sha256 the pod's agent computed before
  uploading it (from the agent's receipt; the pipeline's own sha256 for a /view fallback upload).
- `mp4_decodes`: every frame of the object decodes (PyAV).
- `matches_request`: width, height, frames and fps of the video are the ones requested.

The three checks share one download and decode of each object per process (keyed by the ETag,
so a replaced object is read again). A failure names the property and the difference.

They run from the Checks tab (one partition at a time). The asset's ops materialize partitions
with explicit events rather than an output, so check steps planned in the same run would be
skipped; instead `harvest_outputs` yields `video_check_evaluations(...)` right after each
materialization, which records all three for each partition, also in a run over a batch.
"""

import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from rp_agent.uploader import file_sha256
from rp_pipeline.defs.requests.partitions import video_request_partitions
from rp_pipeline.integrations.r2.reports import find_receipt
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.media import probe
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

GENERATED_VIDEO = AssetKey("generated_video")
CHECKED = ("width", "height", "frames", "fps")
FPS_TOLERANCE = 0.01


@dataclass(frozen=True)
class ObjectFacts:
    sha256: str
    decode_error: str | None
    decoded_frames: int
    facts: dict[str, Any]


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
        error, frames, facts = None, 0, {}
        try:
            facts = probe(local).as_dict()
            with av.open(str(local)) as container:
                frames = sum(1 for _ in container.decode(video=0))
        except (av.FFmpegError, IndexError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
    found = ObjectFacts(digest, error, frames, facts)
    with _cache_lock:
        _cache[ident] = found
    return found


def latest_materialization(instance: DagsterInstance, partition: str) -> Any | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=GENERATED_VIDEO, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records and records[0].asset_materialization is not None else None


def agent_relpath(key: str, prefix: str) -> str:
    """`{prefix}/{day}/{pod}/{relpath}` -> relpath."""
    return key[len(prefix.strip("/")) + 1 :].split("/", 2)[-1]


Verdict = tuple[bool, str, dict[str, Any]]  # passed, one-line reason, metadata
Judge = Callable[[R2Resource, str, dict[str, Any], ObjectFacts], Verdict]


def judge_partition(r2: R2Resource, record: Any | None, partition: str, judge: Judge) -> Verdict:
    if record is None:
        return False, "no materialization of this partition", {}
    md = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    if not md.get("r2_key"):
        return False, "its materialization has no r2_key", {}
    obj = read_object(r2, str(md["r2_key"]))
    if obj is None:
        return False, f"{md['r2_key']} is not in R2", {}
    return judge(r2, partition, md, obj)


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


def _sha_judge(r2: R2Resource, partition: str, md: dict[str, Any], obj: ObjectFacts) -> Verdict:
    key = str(md["r2_key"])
    receipt = find_receipt(r2, str(md.get("pod_id", "")), agent_relpath(key, r2.prefix))
    if receipt is not None and receipt.key == key:
        expected, source = receipt.sha256, "agent receipt"
    else:
        expected, source = str(md.get("sha256", "")), "pipeline upload"
    extra = {"sha256_in_r2": obj.sha256, "sha256_expected": expected, "expected_from": source}
    if obj.sha256 == expected:
        return True, f"sha256 {obj.sha256[:12]}... matches the {source}", extra
    return False, f"sha256 in R2 {obj.sha256[:12]}... != {source} {expected[:12]}...", extra


def _decode_judge(r2: R2Resource, partition: str, md: dict[str, Any], obj: ObjectFacts) -> Verdict:
    extra = {"decoded_frames": obj.decoded_frames}
    if obj.decode_error:
        return False, f"does not decode: {obj.decode_error}", extra
    if obj.decoded_frames == 0:
        return False, "no video frame decodes", extra
    return True, f"{obj.decoded_frames} frame(s) decode", extra


def expected_properties(r2: R2Resource, partition: str) -> dict[str, Any] | None:
    request = load_request(r2, partition)
    if request is None:
        return None
    values = {**defaults(get_workflow(request.workflow)), **dict(request.params)}
    return {name: values[name] for name in CHECKED if name in values}


def _request_judge(r2: R2Resource, partition: str, md: dict[str, Any], obj: ObjectFacts) -> Verdict:
    expected = expected_properties(r2, partition)
    if expected is None:
        return False, "the request of this partition is not in R2", {}
    if obj.decode_error:
        return False, f"cannot read the video: {obj.decode_error}", {}
    problems = []
    for name, want in expected.items():
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
        for name, want in expected.items()
    }
    if problems:
        return False, "; ".join(problems), extra
    summary = ", ".join(f"{n} {obj.facts.get(n)}" for n in expected)
    return True, f"as requested: {summary}", extra


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
JUDGES: dict[str, Judge] = {name: judge for name, (judge, _) in CHECKS.items()}
video_checks = [_video_check(name, judge, about) for name, (judge, about) in CHECKS.items()]


def video_check_evaluations(
    instance: DagsterInstance, r2: R2Resource, partition_keys: Iterable[str]
) -> Iterator[AssetCheckEvaluation]:
    """The three checks for each partition, as events an op can yield right after it
    materialized those partitions (per partition, also in a run over several of them)."""
    for partition in partition_keys:
        record = latest_materialization(instance, partition)
        for name, judge in JUDGES.items():
            passed, reason, metadata = judge_partition(r2, record, partition, judge)
            yield AssetCheckEvaluation(
                asset_key=GENERATED_VIDEO,
                check_name=name,
                passed=passed,
                metadata=metadata,
                description=reason,
                partition=partition,
            )
