"""Video requests: what to generate, with a stable key that names the Dagster partition.

A request is (workflow, prompt, negative prompt, seed, other parameters). Its key is a short
slug of the prompt plus a hash of the canonical JSON of the whole request, so the same request
always maps to the same partition and any change (even the seed) makes a new one. Requests come
from YAML files (`prompts/*.yaml`) or from launch config in the Dagster UI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_WORKFLOW = "wan22_ti2v_5b"
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
# Keys become file name prefixes and partition keys: keep them short and portable.
_SLUG_WORDS = 5
_HASH_CHARS = 10


class RequestFileError(ValueError):
    """A prompts file is malformed; the message names the file and entry."""


@dataclass(frozen=True)
class VideoRequest:
    prompt: str
    workflow: str = DEFAULT_WORKFLOW
    negative_prompt: str = ""
    seed: int | None = None
    # Every other workflow parameter (width, height, frames, fps, steps, cfg, input_image).
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def key(self) -> str:
        return request_key(self)

    def workflow_params(self) -> dict[str, Any]:
        """Parameters for `workflows.render_workflow` / `validate_params`."""
        params = {**dict(self.params), "prompt": self.prompt, "seed": self.seed}
        if self.negative_prompt:  # only when set: a custom workflow may have no negative input
            params["negative_prompt"] = self.negative_prompt
        return params

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoRequest:
        known = {"prompt", "workflow", "negative_prompt", "seed", "params", "name"}
        extra = {k: v for k, v in data.items() if k not in known}
        if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
            raise RequestFileError(f"request needs a non-empty 'prompt': {dict(data)!r}")
        seed = data.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise RequestFileError(f"'seed' must be an integer or null, got {seed!r}")
        return cls(
            prompt=data["prompt"].strip(),
            workflow=str(data.get("workflow") or DEFAULT_WORKFLOW),
            negative_prompt=str(data.get("negative_prompt") or ""),
            seed=seed,
            params={**dict(data.get("params") or {}), **extra},
            name=data.get("name"),
        )


def canonical_json(request: VideoRequest) -> str:
    """The content the key hashes: everything that changes the video, not the display name."""
    content = {
        "workflow": request.workflow,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "params": dict(request.params),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)


def slugify(text: str, words: int = _SLUG_WORDS) -> str:
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(tokens[:words]) or "request"


def request_key(request: VideoRequest) -> str:
    digest = hashlib.sha256(canonical_json(request).encode()).hexdigest()[:_HASH_CHARS]
    return f"{slugify(request.name or request.prompt)}-{digest}"


def load_request_file(path: Path) -> list[VideoRequest]:
    """A YAML file holds `requests: [...]` (or a bare list) of request mappings.

    File-level `defaults:` apply to every entry (e.g. a shared workflow or resolution).
    """
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RequestFileError(f"{path}: not valid YAML: {exc}") from exc
    entries = doc if isinstance(doc, list) else doc.get("requests", [])
    defaults = {} if isinstance(doc, list) else dict(doc.get("defaults") or {})
    if not isinstance(entries, list):
        raise RequestFileError(f"{path}: 'requests' must be a list")
    requests = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        if not isinstance(entry, Mapping):
            raise RequestFileError(f"{path}: entry {index} must be a mapping or a prompt string")
        merged = {**defaults, **entry}
        merged["params"] = {**dict(defaults.get("params") or {}), **dict(entry.get("params") or {})}
        try:
            requests.append(VideoRequest.from_dict(merged))
        except RequestFileError as exc:
            raise RequestFileError(f"{path}: entry {index}: {exc}") from exc
    return requests


def prompts_dir() -> Path:
    """Where request files live: RP_PROMPTS_DIR, else the repo's `prompts/`."""
    return Path(os.environ.get("RP_PROMPTS_DIR") or DEFAULT_PROMPTS_DIR)


def load_requests(directory: Path | None = None) -> dict[str, VideoRequest]:
    """Every request in `directory/*.yaml` (default `prompts_dir()`) by key (duplicates
    collapse to one partition)."""
    directory = directory or prompts_dir()
    found: dict[str, VideoRequest] = {}
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        for request in load_request_file(path):
            found.setdefault(request.key, request)
    return found


def requests_by_key(requests: Iterable[VideoRequest]) -> dict[str, VideoRequest]:
    return {request.key: request for request in requests}


# `filename_prefix` of a pipeline render is `video/<partition key>-<run id[:8]>`; ComfyUI appends
# `_00001_.mp4`. Anything else in R2 was made outside Dagster (e.g. ComfyUI used by hand).
_PIPELINE_FILE = re.compile(r"^(?P<key>[a-z0-9-]+)-(?P<run>[0-9a-f]{8})_\d+_?\.[A-Za-z0-9]+$")


def pipeline_partition_key(object_key: str) -> str | None:
    """The partition key a pipeline-made object belongs to, from its file name."""
    match = _PIPELINE_FILE.match(object_key.rsplit("/", 1)[-1])
    return match.group("key") if match else None
