"""A request with a LoRA, end to end on the devstack: the LoRA is an object in the run's R2
bucket; the pod fetches it into models/loras/ before its ComfyUI starts (the same rp_agent.models
code as the image), the stand-in accepts LoraLoaderModelOnly only because the file is there, and
the video's metadata names the LoRA with the sha256 the pod verified."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance

from rp_devstack.stack import Devstack
from rp_pipeline.video_requests.model import parse_request
from tests.pipeline.helpers import SMALL, generate, latest_by_partition, r2_now, register_requests

LORA_KEY = "loras/fox_style_v1.safetensors"


def test_a_request_with_an_r2_lora_renders_and_names_it_in_metadata(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    lora = hashlib.sha256(b"lora").digest() * 4096  # 128 KiB standing in for LoRA weights
    r2 = r2_now()
    r2.client.put_object(Bucket=r2.bucket, Key=LORA_KEY, Body=lora)
    entry = {
        "prompt": "a fox in the style of the LoRA",
        "workflow": "wan22_t2v_14b",
        "seed": 11,
        "params": SMALL,
        "loras": [{"r2": LORA_KEY, "strength": 0.8}],
    }
    (prompts_dir / "lora.yaml").write_text(yaml.safe_dump({"requests": [entry]}))
    key = parse_request(entry).key
    register_requests(instance, resources)

    result = generate(instance, resources, [key])
    assert result.success

    md = latest_by_partition(instance)[key]
    [row] = md["loras"]
    assert row == {
        "name": "fox_style_v1.safetensors",
        "source": "r2",
        "location": LORA_KEY,
        "strength": 0.8,
        "expert": "both",
        "sha256": hashlib.sha256(lora).hexdigest(),
    }
    assert md["workflow"] == "wan22_t2v_14b"


def test_a_lora_the_pod_could_not_fetch_is_refused_by_comfyui_and_no_video_is_recorded(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    """The other side of the test above: without the file in models/loras/, ComfyUI (the
    stand-in, as the real server) refuses LoraLoaderModelOnly's lora_name."""
    entry = {
        "prompt": "a fox with a LoRA nobody uploaded",
        "workflow": "wan22_ti2v_5b",
        "seed": 12,
        "params": SMALL,
        "loras": [{"r2": "loras/never_uploaded.safetensors"}],
    }
    (prompts_dir / "lora.yaml").write_text(yaml.safe_dump({"requests": [entry]}))
    key = parse_request(entry).key
    register_requests(instance, resources)
    result = generate(instance, resources, [key])
    assert not result.success
    assert key not in latest_by_partition(instance)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = str(failure.event_specific_data.error)
    assert "LoraLoaderModelOnly" in error and "never_uploaded.safetensors" in error
