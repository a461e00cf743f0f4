"""Launch config for a request typed into the Dagster UI (or sent through GraphQL).

`generated_video` is graph-backed: its `validate_requests` op takes `requests: {partition key:
spec}`, which is how a person adds a brand-new request without editing `prompts/*.yaml`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

# Small and short: the stand-in renders it in about a second.
SMALL_PARAMS = {"width": 320, "height": 192, "frames": 17, "fps": 16}


def new_partition_key(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def request_spec(prompt: str, seed: int, **params: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "workflow": "wan22_ti2v_5b",
        "seed": seed,
        "params": {**SMALL_PARAMS, **params},
    }


def run_config(partition_key: str, spec: dict[str, Any]) -> dict[str, Any]:
    config = {"requests": {partition_key: spec}}
    return {"ops": {"generated_video": {"ops": {"validate_requests": {"config": config}}}}}


def run_config_yaml(partition_key: str, spec: dict[str, Any]) -> str:
    """What a person pastes into the config editor (flow-style values stay on one line)."""
    params = ", ".join(f"{k}: {v}" for k, v in spec["params"].items())
    return (
        "ops:\n"
        "  generated_video:\n"
        "    ops:\n"
        "      validate_requests:\n"
        "        config:\n"
        "          requests:\n"
        f"            {partition_key}:\n"
        f"              prompt: {json.dumps(spec['prompt'])}\n"
        f"              workflow: {spec['workflow']}\n"
        f"              seed: {spec['seed']}\n"
        f"              params: {{{params}}}\n"
    )
