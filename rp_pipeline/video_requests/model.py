"""Video requests: what to generate, with a stable key that names the Dagster partition.

A request is (workflow, prompt, negative prompt, seed, other parameters). Its key is a short
slug of the prompt plus a hash of the canonical JSON of the whole request, so the same request
always maps to the same partition and any change (even the seed) makes a new one. Requests come
from YAML files (`prompts/*.yaml`) or from launch config in the Dagster UI.
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from rp_pipeline.settings import current
from rp_pipeline.video_requests.safe_yaml import UnsafeYamlError, load_yaml_file
from rp_pipeline.video_requests.start_image import (
    START_IMAGE_PARAM,
    StartImage,
    StartImageError,
    StartImageReader,
)
from rp_pipeline.workflows import WorkflowError, WorkflowParamError, get_workflow, validate_params
from rp_pipeline.workflows.loras import LoraError, LoraRef, attach_loras, parse_loras

DEFAULT_WORKFLOW = "wan22_ti2v_5b"
# Keys become file name prefixes and partition keys: keep them short and portable.
_SLUG_WORDS = 5
_HASH_CHARS = 10
# WAN's text encoder reads about 512 tokens; a prompt past this is a mistake, not a prompt.
MAX_PROMPT_CHARS = 4000


class RequestError(ValueError):
    """A request cannot be used; the message is one line that says what is wrong."""


class RequestFileError(RequestError):
    """A prompts file is malformed; the message names the file and entry."""


@dataclass(frozen=True)
class RequestScan:
    """What a prompts directory holds: the usable requests by key, and one line per bad entry
    (`<file>: entry <n>: <what is wrong>`)."""

    requests: dict[str, VideoRequest]
    problems: list[str]


@dataclass(frozen=True)
class VideoRequest:
    prompt: str
    workflow: str = DEFAULT_WORKFLOW
    negative_prompt: str = ""
    seed: int | None = None
    # Every other parameter of the workflow, by the name its map gives it (the shipped ones take
    # width, height, frames, fps, steps, cfg, input_image); unknown names are refused with the
    # workflow's list. Top-level keys a request does not know land here too.
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    # The facts of params.input_image once read and checked (start_image.StartImage.to_dict).
    start_image: Mapping[str, Any] | None = None
    # LoRAs applied to the diffusion model, in the request form (workflows.loras.LoraRef.to_dict).
    loras: tuple[Mapping[str, Any], ...] = ()

    @property
    def lora_refs(self) -> tuple[LoraRef, ...]:
        return parse_loras(list(self.loras))

    @property
    def key(self) -> str:
        return request_key(self)

    def workflow_params(self) -> dict[str, Any]:
        """Parameters for `workflows.render_workflow` / `validate_params`."""
        params = {**dict(self.params), "prompt": self.prompt, "seed": self.seed}
        if self.negative_prompt:  # only when set: a custom workflow may have no negative input
            params["negative_prompt"] = self.negative_prompt
        if self.start_image:  # the LoadImage node gets the name the pod's upload will have
            params[START_IMAGE_PARAM] = StartImage.from_dict(self.start_image).upload_name
        return params

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        if self.start_image is None:
            del data["start_image"]
        if self.loras:
            data["loras"] = [dict(lora) for lora in self.loras]
        else:
            del data["loras"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> VideoRequest:
        """A request from its mapping; RequestError (one line) says what is malformed."""
        if not isinstance(data, Mapping):
            raise RequestError(f"a request must be a mapping, got {type(data).__name__}")
        known = {
            *("prompt", "workflow", "negative_prompt", "seed", "params", "name", "start_image"),
            "loras",
        }
        extra = {k: v for k, v in data.items() if k not in known}
        prompt = data.get("prompt")
        if prompt is None:
            raise RequestError("'prompt' is missing: every request needs a prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError(f"'prompt' must be non-empty text, got {reprlib.repr(prompt)}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(
                f"'prompt' is {len(prompt)} characters, over the limit of {MAX_PROMPT_CHARS}"
            )
        seed = data.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RequestError(
                f"'seed' must be a whole number or null (random), got {type(seed).__name__} "
                f"{reprlib.repr(seed)}"
            )
        params = data.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise RequestError(
                f"'params' must be a mapping (e.g. {{width: 640, frames: 33}}), got "
                f"{type(params).__name__} {reprlib.repr(params)}"
            )
        for key in ("workflow", "negative_prompt", "name"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise RequestError(
                    f"{key!r} must be text, got {type(value).__name__} {reprlib.repr(value)}"
                )
        start_image = data.get("start_image")
        if start_image is not None and not isinstance(start_image, Mapping):
            raise RequestError(f"'start_image' must be a mapping, got {type(start_image).__name__}")
        try:
            loras = parse_loras(data.get("loras"))
        except LoraError as exc:
            raise RequestError(str(exc)) from None
        return cls(
            prompt=prompt.strip(),
            workflow=str(data.get("workflow") or DEFAULT_WORKFLOW),
            negative_prompt=str(data.get("negative_prompt") or ""),
            seed=seed,
            params={**dict(params or {}), **extra},
            name=data.get("name"),
            start_image=dict(start_image) if start_image else None,
            loras=tuple(ref.to_dict() for ref in loras),
        )


def check_request(request: VideoRequest) -> None:
    """Raise RequestError (one line) if the request's workflow cannot run its parameters."""
    try:
        validate_params(request.workflow, request.workflow_params())
        if request.loras:  # every LoRA must find the model path (expert) it names
            attach_loras(get_workflow(request.workflow).api_json, request.lora_refs)
    except (WorkflowParamError, WorkflowError) as exc:
        raise RequestError(str(exc)) from None


def parse_request(data: Any, images: StartImageReader | None = None) -> VideoRequest:
    """A request from a mapping, checked against its workflow, its start image (if any) read
    and checked by `images` (default: paths under prompts_dir()); RequestError (one line)."""
    request = VideoRequest.from_dict(data)
    if request.params.get(START_IMAGE_PARAM) is not None:
        images = images or StartImageReader(prompts_dir())
        try:
            image = images.resolve(request.params[START_IMAGE_PARAM])
        except StartImageError as exc:
            raise RequestError(str(exc)) from None
        request = replace(request, start_image=image.to_dict())
    elif request.start_image is not None:  # facts without an image to stand for: not trusted
        request = replace(request, start_image=None)
    check_request(request)
    return request


def canonical_json(request: VideoRequest) -> str:
    """The content the key hashes: everything that changes the video, not the display name.
    A start image counts by its bytes (sha256), not by where it was read from."""
    params = dict(request.params)
    if request.start_image:
        params[START_IMAGE_PARAM] = f"sha256:{request.start_image['sha256']}"
    content: dict[str, Any] = {
        "workflow": request.workflow,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "params": params,
    }
    if request.loras:  # only when set: the keys of requests without LoRAs stay as they were
        content["loras"] = [dict(lora) for lora in request.loras]
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)


def slugify(text: str, words: int = _SLUG_WORDS) -> str:
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(tokens[:words]) or "request"


def request_key(request: VideoRequest) -> str:
    digest = hashlib.sha256(canonical_json(request).encode()).hexdigest()[:_HASH_CHARS]
    return f"{slugify(request.name or request.prompt)}-{digest}"


def read_request_file(
    path: Path, images: StartImageReader | None = None
) -> tuple[list[VideoRequest], list[str]]:
    """The valid requests of one YAML file and one line per entry that is not.

    A file holds `requests: [...]` (or a bare list) of request mappings or prompt strings;
    file-level `defaults:` apply to every entry (e.g. a shared workflow or resolution). A bad
    entry never hides the others.
    """
    try:
        doc = load_yaml_file(path) or {}
    except UnsafeYamlError as exc:
        return [], [f"{path}: not read: {exc}"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        return [], [f"{path}: not a readable YAML file: {detail}"]
    if not isinstance(doc, list | Mapping):
        return [], [f"{path}: expected 'requests: [...]' or a list, got {type(doc).__name__}"]
    entries = doc if isinstance(doc, list) else doc.get("requests", [])
    defaults = {} if isinstance(doc, list) else doc.get("defaults") or {}
    if not isinstance(entries, list):
        return [], [f"{path}: 'requests' must be a list, got {type(entries).__name__}"]
    if not isinstance(defaults, Mapping):
        return [], [f"{path}: 'defaults' must be a mapping, got {type(defaults).__name__}"]
    requests: list[VideoRequest] = []
    problems: list[str] = []
    images = images or StartImageReader(path.parent)  # start image paths are relative to it
    for index, entry in enumerate(entries):
        try:
            requests.append(parse_request(_merge_entry(defaults, entry), images))
        except RequestError as exc:
            problems.append(f"{path}: entry {index}: {exc}")
    return requests, problems


def _merge_entry(defaults: Mapping[str, Any], entry: Any) -> Any:
    if isinstance(entry, str):
        entry = {"prompt": entry}
    if not isinstance(entry, Mapping):
        raise RequestError(f"must be a mapping or a prompt string, got {type(entry).__name__}")
    merged = {**defaults, **entry}
    base, own = defaults.get("params"), entry.get("params")
    if isinstance(base, Mapping | None) and isinstance(own, Mapping | None):
        merged["params"] = {**dict(base or {}), **dict(own or {})}
    return merged


def load_request_file(path: Path) -> list[VideoRequest]:
    """Every request of one file; RequestFileError (first bad entry) if any is malformed."""
    requests, problems = read_request_file(path)
    if problems:
        raise RequestFileError(problems[0])
    return requests


def prompts_dir() -> Path:
    """Where request files live: RP_PROMPTS_DIR, else the repo's `prompts/`."""
    directory: Path = current("prompts_dir")
    return directory


def scan_requests(
    directory: Path | None = None, images: StartImageReader | None = None
) -> RequestScan:
    """Every valid request in `directory/*.yaml` (default `prompts_dir()`) by key (duplicates
    collapse to one partition), and one line per bad entry or file."""
    directory = directory or prompts_dir()
    found: dict[str, VideoRequest] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        requests, bad = read_request_file(path, images)
        problems += bad
        for request in requests:
            found.setdefault(request.key, request)
    return RequestScan(found, problems)


def load_requests(
    directory: Path | None = None, images: StartImageReader | None = None
) -> dict[str, VideoRequest]:
    """The valid requests of `scan_requests` by key."""
    return scan_requests(directory, images).requests
