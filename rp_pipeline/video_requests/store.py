"""Request specs kept in R2 (`requests/<partition key>.json`) so any run, on any machine, can find
what a partition means; `register_requests` (the `video_requests` asset and the batch schedule)
writes them, `validate_requests` reads them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from dagster import DagsterInstance

from rp_pipeline.integrations.r2.keys import request_key
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.video_requests.model import (
    RequestError,
    VideoRequest,
    load_requests,
    parse_request,
    prompts_dir,
    scan_requests,
)
from rp_pipeline.video_requests.start_image import StartImage, StartImageError, StartImageReader

log = logging.getLogger(__name__)

# The dynamic partitions of `generated_video`: one per registered request.
VIDEO_REQUESTS_PARTITIONS = "video_requests"


class UnknownRequestError(LookupError):
    """A partition key has no stored request spec."""


@dataclass(frozen=True)
class Registration:
    """What `register_requests` did: valid requests by key, the keys it added as partitions,
    and one line per bad entry (`<file>: entry <n>: <what is wrong>`)."""

    requests: dict[str, VideoRequest]
    new_keys: list[str]
    problems: list[str]


def register_requests(
    instance: DagsterInstance, r2: R2Resource, directory: Path | None = None
) -> Registration:
    """Store every valid request of the prompts files in R2 (with its start image) and add its
    partition; bad entries are logged one line each and skipped, never failing the others."""
    images = StartImageReader(directory or prompts_dir(), r2=r2)
    scan = scan_requests(directory, images)
    problems = list(scan.problems)
    requests = {}
    for key, request in scan.requests.items():
        try:
            store_start_image(r2, request, images)
        except StartImageError as exc:
            problems.append(f"{key}: {exc}")
            continue
        save_request(r2, key, request)
        requests[key] = request
    for problem in problems:
        log.warning("request not registered: %s", problem)
    existing = set(instance.get_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS))
    new_keys = [key for key in requests if key not in existing]
    if new_keys:
        instance.add_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS, new_keys)
    return Registration(requests, new_keys, problems)


def store_start_image(r2: R2Resource, request: VideoRequest, images: StartImageReader) -> None:
    """Put the request's start image (if any) in R2 at its content key, once."""
    if request.start_image:
        images.store(r2, StartImage.from_dict(request.start_image))


def save_request(r2: R2Resource, partition_key: str, request: VideoRequest) -> None:
    body = json.dumps({"partition_key": partition_key, **request.to_dict()}, sort_keys=True)
    r2.put_bytes(request_key(partition_key), body.encode(), "application/json")


def load_request(r2: R2Resource, partition_key: str) -> VideoRequest | None:
    try:  # one GET, not HEAD then GET: this is on the way to every run's first prompt
        raw = r2.get_bytes(request_key(partition_key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    data: dict[str, Any] = json.loads(raw)
    data.pop("partition_key", None)
    return VideoRequest.from_dict(data)


def resolve_requests(
    r2: R2Resource, partition_keys: list[str], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, VideoRequest]:
    """Spec per key: launch config first, then R2, then the local prompts files.

    Raises RequestError (one line per bad spec, `<key>: <what is wrong>`) or UnknownRequestError
    naming every key that has no spec anywhere.
    """
    found: dict[str, VideoRequest] = {}
    images = StartImageReader(prompts_dir(), r2=r2)
    local: dict[str, VideoRequest] | None = None
    missing = []
    bad = []
    for key in partition_keys:
        if key in overrides:
            try:
                found[key] = parse_request(overrides[key], images)
                store_start_image(r2, found[key], images)
            except (RequestError, StartImageError) as exc:
                bad.append(f"{key}: {exc}")
                continue
            save_request(r2, key, found[key])  # so the catalogue and later runs know it too
            continue
        try:
            stored = load_request(r2, key)
        except RequestError as exc:
            bad.append(f"{key}: stored spec {request_key(key)} is unusable: {exc}")
            continue
        if stored is None:
            local = load_requests(images=images) if local is None else local
            stored = local.get(key)
        if stored is None:
            missing.append(key)
            continue
        try:  # a stored spec's image was stored with it; one from the prompts files maybe not
            store_start_image(r2, stored, images)
        except StartImageError as exc:
            bad.append(f"{key}: {exc}")
            continue
        found[key] = stored
    if bad:
        raise RequestError("; ".join(bad))
    if missing:
        raise UnknownRequestError(
            f"no request spec for partition(s) {', '.join(missing)}: materialize video_requests "
            "or give the request in launch config (requests: {<key>: {prompt: ...}})"
        )
    return found
