"""COMFYUI_URL: runs use a ComfyUI the user runs themselves instead of launching pods
(devstack: the ComfyUI stand-in outside any pod, real S3 server, real Dagster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.stack import Devstack
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    r2_now,
    register_requests,
    settled_by_partition,
    write_prompts,
)


def test_a_run_with_comfyui_url_uses_it_and_creates_no_pod(
    devstack: Devstack,
    instance: DagsterInstance,
    pipeline_env: dict[str, str],
    prompts_dir: Path,
    comfyui_standin: ComfyStandin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rp_pipeline.definitions import resources_for

    monkeypatch.setenv("COMFYUI_URL", comfyui_standin.base_url)
    resources: dict[str, Any] = resources_for("devstack")
    assert resources["comfyui"].uses_external_comfyui
    keys = write_prompts(prompts_dir, "external", 2)
    register_requests(instance, resources)
    pods_before = len(devstack.emulator.pods())

    result = generate(instance, resources, keys)

    assert result.success
    assert len(devstack.emulator.pods()) == pods_before, "no pod may be created"
    found = latest_by_partition(instance)
    r2 = r2_now()
    for key in keys:
        md = found[key]
        assert md["r2_source"] == "pipeline_fallback"
        assert (md["width"], md["height"], md["frames"]) == (320, 192, 9)
        head = r2.head(md["r2_key"])
        assert head is not None and head.size == md["size_bytes"]
    settled = settled_by_partition(instance)
    assert all(settled[key]["cost_usd"] == 0 for key in keys)
