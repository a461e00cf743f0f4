"""A request's parameter values against its workflow: one line per problem, before any pod.

Each value is checked against its parameter's type, against what every node input it fills
accepts (ComfyUI's own min/max/step from the node catalogue, narrowed by the map's min/max) and
against the budgets that keep one request from running for hours: RP_MAX_STEPS for `steps`,
RP_MAX_PIXELS for width x height x frames (for workflows that map them).
"""

from __future__ import annotations

import posixpath
import re
import reprlib
from typing import Any

from rp_pipeline.workflows.bounds import Bounds, combined, input_bounds, max_pixels, max_steps
from rp_pipeline.workflows.nodes import combo_options, input_spec, object_info
from rp_pipeline.workflows.spec import ALWAYS, Param, WorkflowSpec

SEED_MAX = 2**64 - 1  # KSampler's noise_seed max
_PREFIX_RE = re.compile(r"^[A-Za-z0-9~][A-Za-z0-9_.~\-/]*$")
# Linux file names are at most 255 bytes; ComfyUI appends `_00001_.mp4` to the last part.
_MAX_NAME_BYTES = 200
# Why a value must be what it must, for the parameters whose reason is not obvious.
_STEP_HINTS = {"frames": " (WAN encodes time in blocks of 4)"}
_SIZE = ("width", "height", "frames")


def param_problems(spec: WorkflowSpec, params: Any) -> list[str]:
    if not isinstance(params, dict):
        return [f"parameters must be a mapping, got {type(params).__name__}"]
    problems: list[str] = []
    for key in params:
        if key not in spec.params and key not in ALWAYS:
            problems.append(
                f"unknown parameter {key!r} for workflow {spec.name!r} (known: "
                f"{', '.join(spec.accepted)})"
            )
    for key in spec.required:
        if params.get(key) is None:
            what = "a start image" if spec.params[key].type == "image" else key
            problems.append(f"{key} is required: workflow {spec.name!r} needs {what}")
    if params.get("seed") is not None:
        seed_bounds = _bounds(spec, spec.params.get("seed"), Bounds("INT", 0, SEED_MAX))
        if _range_problem("seed", params["seed"], seed_bounds):
            problems.append(
                f"seed must be an integer in {_num(seed_bounds.low)}..{_num(seed_bounds.high)} "
                f"or null (random), got {reprlib.repr(params['seed'])}"
            )
    for name, param in spec.params.items():
        value = params.get(name)
        if value is None or name in ALWAYS:
            continue
        problem = _value_problem(spec, param, value)
        if problem:
            problems.append(problem)
    if not problems:
        problems += _pixel_problems(spec, params)
    if params.get("filename_prefix") is not None:
        problems += _prefix_problems(params["filename_prefix"])
    return problems


def _value_problem(spec: WorkflowSpec, param: Param, value: Any) -> str | None:
    name, kind = param.name, param.type
    if kind in ("text", "image"):
        if not isinstance(value, str):
            return f"{name} must be a string, got {type(value).__name__}"
        if (param.required or kind == "image") and not value.strip():
            return f"{name} must not be empty"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
    if kind == "choice":
        choices = combo_choices(spec, param)
        if choices is not None and value not in choices:
            return (
                f"{name} must be one of {', '.join(map(str, choices))}, got {reprlib.repr(value)}"
            )
        return None
    fallback = Bounds("INT" if kind == "int" else "FLOAT", None, None)
    bounds = _bounds(spec, param, fallback)
    if kind == "float":
        bounds = Bounds("FLOAT", bounds.low, bounds.high)
    cap_hint = ""
    if name == "steps":
        low = max(bounds.low or 1, 2 if param.half_targets else 1)
        cap = max_steps()
        high = min(bounds.high, cap) if bounds.high is not None else cap
        cap_hint = " (RP_MAX_STEPS)" if high == cap else ""
        bounds = Bounds("INT", low, high, bounds.step)
    return _range_problem(name, value, bounds, _STEP_HINTS.get(name, ""), cap_hint)


def _bounds(spec: WorkflowSpec, param: Param | None, fallback: Bounds) -> Bounds:
    """What every node input the parameter fills accepts, narrowed by the map's min/max."""
    if param is None:
        return fallback
    found = []
    for node_id, input_name in param.targets:
        node = spec.api_json.get(node_id) or {}
        bounds = input_bounds(str(node.get("class_type")), input_name)
        if bounds is not None:
            found.append(bounds)
    base = combined(found) or fallback
    lows = [x for x in (base.low, param.min) if x is not None]
    highs = [x for x in (base.high, param.max) if x is not None]
    low, high = (max(lows) if lows else None), (min(highs) if highs else None)
    if param.half_targets:
        low = max(low or 0, 2)  # each expert needs at least one step
    return Bounds(base.kind, low, high, base.step)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _describe(bounds: Bounds) -> str:
    if bounds.low is None and bounds.high is None:
        return "an integer" if bounds.kind == "INT" else "a number"
    if bounds.high is None:
        span = f"of at least {_num(bounds.low)}"
    elif bounds.low is None:
        span = f"of at most {_num(bounds.high)}"
    else:
        span = f"between {_num(bounds.low)} and {_num(bounds.high)}"
    if bounds.kind == "FLOAT":
        return f"a number {span}"
    low = int(bounds.low or 0)
    if bounds.step > 1 and low % bounds.step:
        return f"{bounds.step}n+{low} {span}"
    if bounds.step > 1:
        return f"a multiple of {bounds.step} {span}"
    return f"an integer {span}"


def _range_problem(
    key: str, value: Any, bounds: Bounds, step_hint: str = "", cap_hint: str = ""
) -> str | None:
    """One line if `value` is outside `bounds`; the hints say why a step or the cap exists."""
    if bounds.kind == "INT" and not _is_int(value):
        return f"{key} must be an integer, got {type(value).__name__} {reprlib.repr(value)}"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"{key} must be a number, got {type(value).__name__} {reprlib.repr(value)}"
    low, high = bounds.low, bounds.high
    off_step = bounds.kind == "INT" and (value - int(low or 0)) % bounds.step != 0
    over = high is not None and value > high
    if (low is not None and value < low) or over or off_step:
        hint = (step_hint if off_step else "") + (cap_hint if over else "")
        return f"{key} must be {_describe(bounds)}, got {reprlib.repr(value)}{hint}"
    return None


def _pixel_problems(spec: WorkflowSpec, params: dict[str, Any]) -> list[str]:
    """width x height x frames against the pixel budget (the workflow's values fill gaps)."""
    if not all(name in spec.params for name in _SIZE):
        return []
    size = {}
    for name in _SIZE:
        node_id, input_name = spec.params[name].targets[0]
        given = params.get(name)
        size[name] = given if given is not None else spec.api_json[node_id]["inputs"][input_name]
    if not all(_is_int(size[k]) for k in _SIZE):
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


def _prefix_problems(prefix: Any) -> list[str]:
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        return [
            "filename_prefix must be a relative path of letters, digits, '_', '-', '.', "
            f"'~', '/', got {prefix!r}"
        ]
    if posixpath.normpath(prefix) != prefix.rstrip("/") or ".." in prefix.split("/"):
        return [f"filename_prefix must not contain '..' or empty parts: {prefix!r}"]
    if any(len(part.encode()) > _MAX_NAME_BYTES for part in prefix.split("/")):
        return [
            f"filename_prefix parts must be at most {_MAX_NAME_BYTES} bytes (a file name; "
            "a long partition key makes a long one): use a shorter partition key"
        ]
    return []


def combo_choices(spec: WorkflowSpec, param: Param) -> list[Any] | None:
    """The choices of a choice parameter: the map's, else its first target's combo list (None
    when that list is empty: model files, checked against the manifest on the whole graph)."""
    if param.choices is not None:
        return list(param.choices)
    if not param.targets:
        return None
    node_id, input_name = param.targets[0]
    info = object_info().get(spec.api_json[node_id]["class_type"]) or {}
    found = input_spec(info, input_name)
    options = combo_options(found[0], found[2]) if found else None
    return options or None
