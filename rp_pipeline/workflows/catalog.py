"""The shipped WAN 2.2 workflows and where each parameter goes in them.

The API JSON files in `api/` are faithful conversions of the official `comfyui-workflow-templates`
(UI format, with subgraphs, switches and primitive nodes) to plain API format, with the template's
switches resolved: T2V 14B without the Lightning LoRA (20 steps split 10/10, cfg 3.5, shift 5) at
720p (1280x704x121 @ 16 fps), I2V 14B with the LightX2V 4-step LoRAs (4 steps split 2/2, cfg 1,
shift 5, 640x640x81 @ 16 fps), and TI2V 5B (KSampler uni_pc 20 steps cfg 5, shift 8,
1280x704x121 @ 24 fps; the start image is optional there, as in the template where LoadImage is
bypassed). `tests/comfyui/test_templates.py` checks them against the template package.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from rp_pipeline.workflows.spec import WorkflowSpec

API_DIR = Path(__file__).with_name("api")


def _api(name: str) -> dict:
    data: dict = json.loads((API_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


@cache
def shipped() -> dict[str, WorkflowSpec]:
    specs = [
        WorkflowSpec(
            name="wan22_t2v_14b",
            api_json=_api("wan22_t2v_14b"),
            roles={
                "prompt": [("89", "text")],
                "negative_prompt": [("72", "text")],
                "seed": [("81", "noise_seed")],
                "width": [("74", "width")],
                "height": [("74", "height")],
                "frames": [("74", "length")],
                "fps": [("88", "fps")],
                "steps": [("81", "steps"), ("78", "steps"), ("78", "end_at_step")],
                "cfg": [("81", "cfg"), ("78", "cfg")],
                "filename_prefix": [("80", "filename_prefix")],
            },
            split_step_targets=(("81", "end_at_step"), ("78", "start_at_step")),
            description="WAN 2.2 text-to-video 14B (high+low noise experts), 720p",
            source_template="video_wan2_2_14B_t2v",
        ),
        WorkflowSpec(
            name="wan22_i2v_14b_lightx2v",
            api_json=_api("wan22_i2v_14b_lightx2v"),
            roles={
                "prompt": [("93", "text")],
                "negative_prompt": [("89", "text")],
                "seed": [("86", "noise_seed")],
                "width": [("98", "width")],
                "height": [("98", "height")],
                "frames": [("98", "length")],
                "fps": [("94", "fps")],
                "steps": [("86", "steps"), ("85", "steps"), ("85", "end_at_step")],
                "cfg": [("86", "cfg"), ("85", "cfg")],
                "filename_prefix": [("108", "filename_prefix")],
                "input_image": [("97", "image")],
            },
            required=frozenset({"prompt", "input_image"}),
            split_step_targets=(("86", "end_at_step"), ("85", "start_at_step")),
            description="WAN 2.2 image-to-video 14B with the LightX2V 4-step LoRA (turbo)",
            source_template="video_wan2_2_14B_i2v",
        ),
        WorkflowSpec(
            name="wan22_ti2v_5b",
            api_json=_api("wan22_ti2v_5b"),
            roles={
                "prompt": [("6", "text")],
                "negative_prompt": [("7", "text")],
                "seed": [("3", "seed")],
                "width": [("55", "width")],
                "height": [("55", "height")],
                "frames": [("55", "length")],
                "fps": [("57", "fps")],
                "steps": [("3", "steps")],
                "cfg": [("3", "cfg")],
                "filename_prefix": [("58", "filename_prefix")],
            },
            image_attach=("56", "55", "start_image"),
            description="WAN 2.2 text/image-to-video 5B (start image optional)",
            source_template="video_wan2_2_5B_ti2v",
        ),
    ]
    return {spec.name: spec for spec in specs}
