"""What ComfyUI accepts for each workflow input, read from its own node catalogue.

The bounds come from the node catalogue (`nodes.py`: saved real `/object_info` answers), so
they are never hand-copied: e.g. EmptyHunyuanLatentVideo
`length` is INT 1..16384 step 4, KSampler `steps` INT 1..10000, `cfg` FLOAT 0..100, `seed`
INT 0..2**64-1. ComfyUI rejects a value outside min/max only once the pod is up; checking here
rejects it before a pod is paid for.

On top of what ComfyUI allows, two budgets keep one request from running for hours:
`RP_MAX_PIXELS` (width x height x frames) and `RP_MAX_STEPS` (sampling steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rp_pipeline.settings import current
from rp_pipeline.workflows.nodes import object_info


@dataclass(frozen=True)
class Bounds:
    """An INT or FLOAT input's range; for INT, valid values are `low + k * step`."""

    kind: str
    low: float | None
    high: float | None
    step: int = 1


def input_bounds(class_type: str, input_name: str) -> Bounds | None:
    """Bounds of one node input, None when the class or input is not in the catalogue (custom
    nodes) or the input is not a number."""
    node = object_info().get(class_type)
    if node is None:
        return None
    inputs = node.get("input", {})
    spec = (inputs.get("required") or {}).get(input_name) or (inputs.get("optional") or {}).get(
        input_name
    )
    if not spec or spec[0] not in ("INT", "FLOAT"):
        return None
    options = spec[1] if len(spec) > 1 else {}
    step = int(options.get("step", 1)) if spec[0] == "INT" else 1
    return Bounds(spec[0], options.get("min"), options.get("max"), max(step, 1))


def combined(bounds: list[Bounds]) -> Bounds | None:
    """The values every target accepts (a role may feed several node inputs)."""
    if not bounds:
        return None
    lows = [b.low for b in bounds if b.low is not None]
    highs = [b.high for b in bounds if b.high is not None]
    step = math.lcm(*(b.step for b in bounds))
    kind = "INT" if any(b.kind == "INT" for b in bounds) else "FLOAT"
    return Bounds(kind, max(lows) if lows else None, min(highs) if highs else None, step)


def max_pixels() -> int:
    """RP_MAX_PIXELS as set now (default `rp_pipeline.settings.DEFAULT_MAX_PIXELS`)."""
    value: int = current("max_pixels")
    return value


def max_steps() -> int:
    """RP_MAX_STEPS as set now (default `rp_pipeline.settings.DEFAULT_MAX_STEPS`)."""
    value: int = current("max_steps")
    return value
