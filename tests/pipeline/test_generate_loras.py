"""A request with a LoRA, end to end on the devstack: the LoRA is an object in the run's R2
bucket; the pod fetches it into models/loras/ before its ComfyUI starts (the same rp_agent.models
code as the image), the stand-in accepts LoraLoaderModelOnly only because the file is there, and
the video's metadata names the LoRA with the sha256 the pod verified."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance

from rp_devstack.stack import Devstack
from rp_pipeline.video_requests.model import parse_request
from tests.pipeline.helpers import (
    SMALL,
    generate,
    latest_by_partition,
    pods_of_run,
    r2_now,
    register_requests,
    with_settings,
)

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


def test_a_warm_pod_holding_the_runs_lora_is_adopted_by_the_next_run(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pod fetched the LoRA at its boot and its idle lease says so: the next run asking
    for the same LoRA adopts it (no second boot, no second download); the video's metadata
    still names the LoRA and its sha256."""
    lora = hashlib.sha256(b"warm lora").digest() * 2048
    r2 = r2_now()
    r2.client.put_object(Bucket=r2.bucket, Key="loras/warm_style.safetensors", Body=lora)
    entries = [
        {
            "prompt": f"a lantern {n}",
            "workflow": "wan22_ti2v_5b",
            "seed": 20 + n,
            "params": SMALL,
            "loras": [{"r2": "loras/warm_style.safetensors", "strength": 0.5}],
        }
        for n in range(2)
    ]
    (prompts_dir / "warm-lora.yaml").write_text(yaml.safe_dump({"requests": entries}))
    keys = [parse_request(entry).key for entry in entries]
    register_requests(instance, resources)
    monkeypatch.setenv("RP_POD_IDLE_S", "120")
    first = generate(instance, with_settings(resources, max_live_pods=1), keys[:1])
    assert first.success
    [pod] = pods_of_run(devstack.emulator, first.run_id)
    assert pod["desired_status"] == "RUNNING", "kept warm, holding the LoRA"

    monkeypatch.setenv("RP_POD_IDLE_S", "0")
    created = len(devstack.emulator.pods())
    second = generate(instance, with_settings(resources, max_live_pods=1), keys[1:])
    assert second.success
    assert len(devstack.emulator.pods()) == created, "the warm pod was adopted, none created"
    md = latest_by_partition(instance)[keys[1]]
    assert md["pod_id"] == pod["id"]
    [row] = md["loras"]
    assert row["sha256"] == hashlib.sha256(lora).hexdigest()
