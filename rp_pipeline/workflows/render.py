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
import reprlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rp_agent import keys
from rp_pipeline.workflows.bounds import Bounds, combined, input_bounds, max_pixels, max_steps
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
_PREFIX_RE = re.compile(r"^[A-Za-z0-9~][A-Za-z0-9_.~\-/]*$")
# Linux file names are at most 255 bytes; ComfyUI appends `_00001_.mp4` to the last part.
_MAX_NAME_BYTES = 200

_custom: dict[str, WorkflowSpec] = {}


class WorkflowParamError(ValueError):
    """Parameters a workflow cannot run with; `problems` lists each one."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.workflow = name
        self.problems = problems
        # One line: it is shown as is in run failures, logs and the CLI.
        super().__init__(f"invalid parameters for workflow {name!r}: " + "; ".join(problems))


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
    return keys.default_prefix(workflow, request_id or uuid.uuid4().hex[:16])


def _as_input(param: str, value: Any) -> Any:
    if param in ("fps", "cfg"):
        return float(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _role_bounds(spec: WorkflowSpec, role: str, fallback: Bounds) -> Bounds:
    """What every node input this role feeds accepts, per ComfyUI's node catalogue."""
    found = []
    for node_id, input_name in spec.roles.get(role, []):
        node = spec.api_json.get(node_id) or {}
        bounds = input_bounds(str(node.get("class_type")), input_name)
        if bounds is not None:
            found.append(bounds)
    return combined(found) or fallback


def _describe(bounds: Bounds) -> str:
    span = f"between {_num(bounds.low)} and {_num(bounds.high)}"
    if bounds.kind == "FLOAT":
        return f"a number {span}"
    low = int(bounds.low or 0)
    if bounds.step > 1 and low % bounds.step:
        return f"{bounds.step}n+{low} {span}"
    if bounds.step > 1:
        return f"a multiple of {bounds.step} {span}"
    return f"an integer {span}"


def _bounds_problem(
    key: str, value: Any, bounds: Bounds, step_hint: str = "", cap_hint: str = ""
) -> str | None:
    """One line if `value` is outside `bounds`; the hints say why a step or the cap exists."""
    if bounds.kind == "INT" and not _is_int(value):
        return f"{key} must be an integer, got {type(value).__name__} {reprlib.repr(value)}"
    if not _is_number(value):
        return f"{key} must be a number, got {type(value).__name__} {reprlib.repr(value)}"
    low, high = bounds.low, bounds.high
    off_step = bounds.kind == "INT" and (value - int(low or 0)) % bounds.step != 0
    over = high is not None and value > high
    if (low is not None and value < low) or over or off_step:
        hint = (step_hint if off_step else "") + (cap_hint if over else "")
        return f"{key} must be {_describe(bounds)}, got {reprlib.repr(value)}{hint}"
    return None


# Used when a custom workflow's node is not in the catalogue (a custom node).
_ANY_SIZE = Bounds("INT", 1, None)
_ANY_STEPS = Bounds("INT", 1, None)
_ANY_CFG = Bounds("FLOAT", 0, None)
_ANY_FPS = Bounds("FLOAT", 1, 120)
_ANY_SEED = Bounds("INT", 0, SEED_MAX)


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
    seed_bounds = _role_bounds(spec, "seed", _ANY_SEED)
    if seed is not None and _bounds_problem("seed", seed, seed_bounds):
        problems.append(
            f"seed must be an integer in {_num(seed_bounds.low)}..{_num(seed_bounds.high)} "
            f"or null (random), got {seed!r}"
        )

    valid: dict[str, int] = {}
    for key, role, fallback in (
        ("width", "width", _ANY_SIZE),
        ("height", "height", _ANY_SIZE),
        ("frames", "frames", _ANY_SIZE),
    ):
        value = params.get(key)
        if value is None:
            continue
        hint = " (WAN encodes time in blocks of 4)" if key == "frames" else ""
        problem = _bounds_problem(key, value, _role_bounds(spec, role, fallback), step_hint=hint)
        if problem:
            problems.append(problem)
        else:
            valid[key] = int(value)

    fps = params.get("fps")
    if fps is not None:
        fps_bounds = _role_bounds(spec, "fps", _ANY_FPS)
        problem = _bounds_problem("fps", fps, Bounds("FLOAT", fps_bounds.low, fps_bounds.high))
        if problem:
            problems.append(problem)

    steps = params.get("steps")
    if steps is not None:
        comfy = _role_bounds(spec, "steps", _ANY_STEPS)
        # Two-stage samplers give each expert steps // 2, so each needs at least one.
        low = max(comfy.low or 1, 2 if spec.split_step_targets else 1)
        cap = max_steps()
        high = min(comfy.high, cap) if comfy.high is not None else cap
        hint = " (RP_MAX_STEPS)" if high == cap else ""
        problem = _bounds_problem("steps", steps, Bounds("INT", low, high), cap_hint=hint)
        if problem:
            problems.append(problem)

    cfg = params.get("cfg")
    if cfg is not None:
        cfg_bounds = _role_bounds(spec, "cfg", _ANY_CFG)
        problem = _bounds_problem("cfg", cfg, Bounds("FLOAT", cfg_bounds.low, cfg_bounds.high))
        if problem:
            problems.append(problem)

    if not problems:
        problems += _pixel_problems(spec, valid)

    prefix = params.get("filename_prefix")
    if prefix is not None:
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            problems.append(
                "filename_prefix must be a relative path of letters, digits, '_', '-', '.', "
                f"'~', '/', got {prefix!r}"
            )
        elif posixpath.normpath(prefix) != prefix.rstrip("/") or ".." in prefix.split("/"):
            problems.append(f"filename_prefix must not contain '..' or empty parts: {prefix!r}")
        elif any(len(part.encode()) > _MAX_NAME_BYTES for part in prefix.split("/")):
            problems.append(
                f"filename_prefix parts must be at most {_MAX_NAME_BYTES} bytes (a file name; "
                "a long partition key makes a long one): use a shorter partition key"
            )
    return problems


def _pixel_problems(spec: WorkflowSpec, given: dict[str, int]) -> list[str]:
    """width x height x frames against the pixel budget (template values fill the gaps)."""
    size = {**{k: v for k, v in defaults(spec).items() if k in ("width", "height", "frames")}}
    size.update(given)
    if not all(_is_int(size.get(k)) for k in ("width", "height", "frames")):
        return []
    pixels = size["width"] * size["height"] * size["frames"]
    budget = max_pixels()
    if pixels <= budget:
        return []
    return [
        f"width x height x frames = {size['width']}x{size['height']}x{size['frames']} = "
        f"{pixels:,} pixels is over the budget of {budget:,} (RP_MAX_PIXELS): make the video "
        "smaller or shorter"
    ]
