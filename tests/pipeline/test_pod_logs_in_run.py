"""The pod's own log lines (its agent's and ComfyUI's) reach the Dagster run's event log, each
prefixed by the pod id (devstack: real pod processes, real agent shipping to the S3 server)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from rp_devstack.stack import Devstack
from tests.pipeline.helpers import (
    generate,
    pods_of_run,
    register_requests,
    run_messages,
    write_prompts,
)


def test_run_log_shows_the_pods_agent_and_comfyui_lines(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    [key] = write_prompts(prompts_dir, "podlogs", 1)
    register_requests(instance, resources)
    result = generate(instance, resources, [key])
    assert result.success
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    messages = run_messages(instance, result.run_id)
    agent = [m for m in messages if m.startswith(f"[pod {pod['id']} agent] ")]
    comfy = [m for m in messages if m.startswith(f"[pod {pod['id']} comfyui] ")]
    assert any("uploaded" in m for m in agent), messages
    assert any("ComfyUI stand-in on http://127.0.0.1:" in m for m in comfy), messages
    # Lines shipped as the pod ends (the agent's SIGTERM) still make it into the run.
    assert any("SIGTERM received" in m for m in agent), messages
    # Each op carries on where the previous one stopped: no line is forwarded twice.
    shipped = Counter(agent + comfy)
    assert max(shipped.values()) == 1, shipped.most_common(3)
