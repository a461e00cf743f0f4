"""Parameter validation and injection: runs before any pod exists, so mistakes cost nothing.

`validate_params` reports every problem at once (one `WorkflowParamError`); `render_workflow`
fills the workflow's role targets, picks (and records) a random seed when none is given and
derives a unique `filename_prefix` per request so a cached identical prompt can never hide new
files behind old names.
"""

from __future__ import annotations

import copy
import posixpath
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rp_pipeline.workflows.catalog import shipped
from rp_pipeline.workflows.spec import (
    PARAMS,
    WorkflowError,
    WorkflowSpec,
    check_roles,
    load_api_json,
    parse_param_map,
    workflow_hash,
)

SEED_MAX = 2**64 - 1  # KSampler's noise_seed max
_RANDOM_SEED_BITS = 50  # stays exact in JSON numbers everywhere (JS clients included)
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")

_custom: dict[str, WorkflowSpec] = {}


class WorkflowParamError(ValueError):
    """Parameters a workflow cannot run with; `problems` lists each one."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.workflow = name
        self.problems = problems
        super().__init__(
            f"invalid parameters for workflow {name!r}:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class RenderedWorkflow:
    name: str
    api_json: dict[str, Any]
    seed: int
    filename_prefix: str
    params: dict[str, Any]
    workflow_hash: str
    output_node_ids: list[str]


def list_workflows() -> list[str]:
    return sorted(shipped()) + sorted(_custom)


def get_workflow(name: str | WorkflowSpec) -> WorkflowSpec:
    if isinstance(name, WorkflowSpec):
        return name
    spec = shipped().get(name) or _custom.get(name)
    if spec is None:
        raise WorkflowParamError(
            str(name), [f"unknown workflow {name!r}; known: {', '.join(list_workflows())}"]
        )
    return spec


def load_custom_workflow(
    path: str | Path,
    param_map: dict[str, Any],
    name: str | None = None,
    required: list[str] | None = None,
) -> WorkflowSpec:
    """Register a user's API-format workflow; param_map: {"prompt": "6.text", ...}."""
    api_json = load_api_json(path)
    roles = parse_param_map(param_map)
    check_roles(api_json, roles, str(path))
    spec = WorkflowSpec(
        name=name or Path(path).stem,
        api_json=api_json,
        roles=roles,
        required=frozenset(required if required is not None else ["prompt"]) & frozenset(roles),
        size_multiple=16,
        description=f"custom workflow from {Path(path).name}",
    )
    if not spec.output_node_ids:
        raise WorkflowError(f"{path} has no output node (SaveVideo, SaveImage, VHS_VideoCombine)")
    if spec.name in shipped():
        raise WorkflowError(f"{spec.name!r} is the name of a shipped workflow; pass name=")
    _custom[spec.name] = spec
    return spec


def defaults(spec: WorkflowSpec) -> dict[str, Any]:
    """Each parameter's value in the template (the first target's current value)."""
    values = {}
    for param, targets in spec.roles.items():
        node_id, input_name = targets[0]
        values[param] = spec.api_json[node_id]["inputs"][input_name]
    return values


def validate_params(name: str | WorkflowSpec, params: dict[str, Any]) -> None:
    """Raise WorkflowParamError listing every problem with these parameters."""
    spec = get_workflow(name)
    problems = _problems(spec, params)
    if problems:
        raise WorkflowParamError(spec.name, problems)


def render_workflow(
    name: str | WorkflowSpec, params: dict[str, Any], request_id: str | None = None
) -> RenderedWorkflow:
    """Validated API JSON ready for `POST /prompt`, with the seed and prefix it used."""
    spec = get_workflow(name)
    validate_params(spec, params)
    # None means "the template's value"; so does an empty negative prompt (callers send ""
    # for "not given", and the official templates' negative prompt is part of their quality).
    given = {k: v for k, v in params.items() if v is not None}
    if not str(given.get("negative_prompt", "x")).strip():
        given.pop("negative_prompt")
    resolved = {**defaults(spec), **given}
    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbits(_RANDOM_SEED_BITS)
    resolved["seed"] = seed
    prefix = params.get("filename_prefix") or default_prefix(spec.name, request_id)
    resolved["filename_prefix"] = prefix
    api = copy.deepcopy(spec.api_json)
    for param, targets in spec.roles.items():
        if param not in resolved:
            continue
        for node_id, input_name in targets:
            api[node_id]["inputs"][input_name] = _as_input(param, resolved[param])
    if "steps" in resolved:
        for node_id, input_name in spec.split_step_targets:
            api[node_id]["inputs"][input_name] = max(1, int(resolved["steps"]) // 2)
    if spec.image_attach and resolved.get("input_image"):
        loader_id, target_id, target_input = spec.image_attach
        api[loader_id] = {
            "inputs": {"image": resolved["input_image"]},
            "class_type": "LoadImage",
            "_meta": {"title": "Load Image"},
        }
        api[target_id]["inputs"][target_input] = [loader_id, 0]
    return RenderedWorkflow(
        name=spec.name,
        api_json=api,
        seed=int(seed),
        filename_prefix=prefix,
        params={k: resolved[k] for k in sorted(resolved)},
        workflow_hash=workflow_hash(spec.api_json),
        output_node_ids=spec.output_node_ids,
    )


def default_prefix(workflow: str, request_id: str | None) -> str:
    """`video/<workflow>/<request id>`: unique per request, grouped per workflow."""
    rid = re.sub(r"[^A-Za-z0-9_.-]", "_", request_id) if request_id else uuid.uuid4().hex[:16]
    return f"video/{workflow}/{rid}"


def _as_input(param: str, value: Any) -> Any:
    if param in ("fps", "cfg"):
        return float(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _problems(spec: WorkflowSpec, params: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if not isinstance(params, dict):
        return [f"parameters must be a mapping, got {type(params).__name__}"]
    for key in params:
        if key not in PARAMS:
            problems.append(f"unknown parameter {key!r} (known: {', '.join(PARAMS)})")
        elif key not in spec.accepted:
            problems.append(f"parameter {key!r} is not used by workflow {spec.name!r}")
    for key in sorted(spec.required):
        if params.get(key) is None:
            what = "an input image (uploaded file name)" if key == "input_image" else key
            problems.append(f"{key} is required: workflow {spec.name!r} needs {what}")

    def text(key: str, allow_empty: bool) -> None:
        value = params.get(key)
        if value is None:
            return
        if not isinstance(value, str):
            problems.append(f"{key} must be a string, got {type(value).__name__}")
        elif not allow_empty and not value.strip():
            problems.append(f"{key} must not be empty")

    text("prompt", allow_empty=False)
    text("negative_prompt", allow_empty=True)
    text("input_image", allow_empty=False)

    seed = params.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= SEED_MAX):
        problems.append(f"seed must be an integer in 0..{SEED_MAX} or null (random), got {seed!r}")

    for key in ("width", "height"):
        value = params.get(key)
        if value is None:
            continue
        if not _is_int(value):
            problems.append(f"{key} must be an integer, got {type(value).__name__}")
        elif value < spec.size_multiple or value > 16384 or value % spec.size_multiple:
            problems.append(
                f"{key} must be a multiple of {spec.size_multiple} between "
                f"{spec.size_multiple} and 16384, got {value}"
            )

    frames = params.get("frames")
    if frames is not None:
        if not _is_int(frames):
            problems.append(f"frames must be an integer, got {type(frames).__name__}")
        elif frames < 1 or (frames - 1) % 4:
            problems.append(
                f"frames must be 4n+1 (1, 5, ..., 81, 121): WAN encodes time in blocks of 4, "
                f"got {frames}"
            )

    fps = params.get("fps")
    if fps is not None and (not _is_number(fps) or not 1 <= fps <= 120):
        problems.append(f"fps must be a number between 1 and 120, got {fps!r}")

    steps = params.get("steps")
    min_steps = 2 if spec.split_step_targets else 1
    if steps is not None and (not _is_int(steps) or not min_steps <= steps <= 10000):
        problems.append(f"steps must be an integer between {min_steps} and 10000, got {steps!r}")

    cfg = params.get("cfg")
    if cfg is not None and (not _is_number(cfg) or not 0 <= cfg <= 100):
        problems.append(f"cfg must be a number between 0 and 100, got {cfg!r}")

    prefix = params.get("filename_prefix")
    if prefix is not None:
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            problems.append(
                "filename_prefix must be a relative path of letters, digits, '_', '-', '.', '/'"
                f", got {prefix!r}"
            )
        elif posixpath.normpath(prefix) != prefix.rstrip("/") or ".." in prefix.split("/"):
            problems.append(f"filename_prefix must not contain '..' or empty parts: {prefix!r}")
    return problems
