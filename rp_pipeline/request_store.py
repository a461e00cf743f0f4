"""Request specs kept in R2 (`requests/<partition key>.json`) so any run, on any machine, can find
what a partition means; the `video_requests` asset writes them, `validate_requests` reads them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from rp_pipeline.requests import VideoRequest, load_requests
from rp_pipeline.resources.r2 import R2Resource

log = logging.getLogger(__name__)

REQUESTS_PREFIX = "requests"


class UnknownRequestError(LookupError):
    """A partition key has no stored request spec."""


def spec_key(partition_key: str) -> str:
    return f"{REQUESTS_PREFIX}/{partition_key}.json"


def save_request(r2: R2Resource, partition_key: str, request: VideoRequest) -> None:
    body = json.dumps({"partition_key": partition_key, **request.to_dict()}, sort_keys=True)
    r2.put_bytes(spec_key(partition_key), body.encode(), "application/json")


def load_request(r2: R2Resource, partition_key: str) -> VideoRequest | None:
    if r2.head(spec_key(partition_key)) is None:
        return None
    data: dict[str, Any] = json.loads(r2.get_bytes(spec_key(partition_key)))
    data.pop("partition_key", None)
    return VideoRequest.from_dict(data)


def resolve_requests(
    r2: R2Resource, partition_keys: list[str], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, VideoRequest]:
    """Spec per key: launch config first, then R2, then the local prompts files.

    Raises UnknownRequestError naming every key that has no spec anywhere.
    """
    found: dict[str, VideoRequest] = {}
    local: dict[str, VideoRequest] | None = None
    missing = []
    for key in partition_keys:
        if key in overrides:
            found[key] = VideoRequest.from_dict(overrides[key])
            save_request(r2, key, found[key])  # so the catalogue and later runs know it too
            continue
        stored = load_request(r2, key)
        if stored is None:
            local = load_requests() if local is None else local
            stored = local.get(key)
        if stored is None:
            missing.append(key)
        else:
            found[key] = stored
    if missing:
        raise UnknownRequestError(
            f"no request spec for partition(s) {', '.join(missing)}: materialize video_requests "
            "or give the request in launch config (requests: {<key>: {prompt: ...}})"
        )
    return found
