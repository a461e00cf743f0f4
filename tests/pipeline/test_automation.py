"""Declarative automation, for users who prefer it to the cron (RP_AUTOMATION=true, off by
default): each newly registered request partition is requested once; partitions that existed
when it was turned on, or that a run already made, are not requested again."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    evaluate_automation_conditions,
)

from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS


def video_defs(monkeypatch: pytest.MonkeyPatch, automation: str | None) -> object:
    import rp_pipeline.defs.videos.defs as videos

    if automation is None:
        monkeypatch.delenv("RP_AUTOMATION", raising=False)
    else:
        monkeypatch.setenv("RP_AUTOMATION", automation)
    return importlib.reload(videos).defs


def test_automation_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    defs = video_defs(monkeypatch, None)
    asset = defs.get_assets_def(AssetKey("generated_video"))  # type: ignore[attr-defined]
    assert asset.automation_conditions_by_key.get(AssetKey("generated_video")) is None
    video_defs(monkeypatch, None)


def test_new_request_partitions_are_requested_once(
    monkeypatch: pytest.MonkeyPatch, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    defs = video_defs(monkeypatch, "true")
    try:
        from rp_pipeline.defs.requests.assets import video_requests

        instance.add_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS, ["old-a", "old-b"])
        instance.report_runless_asset_event(AssetMaterialization(video_requests.key))
        assets = Definitions(
            assets=[*defs.assets, video_requests],  # type: ignore[attr-defined]
            resources=resources,
        )
        first = evaluate_automation_conditions(defs=assets, instance=instance)
        assert first.total_requested == 0  # what existed when it was turned on is left alone

        instance.add_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS, ["new-c"])
        second = evaluate_automation_conditions(defs=assets, instance=instance, cursor=first.cursor)
        requested = second.get_requested_partitions(AssetKey("generated_video"))
        assert requested == {"new-c"}

        third = evaluate_automation_conditions(defs=assets, instance=instance, cursor=second.cursor)
        assert third.total_requested == 0  # requested once, not on every tick
    finally:
        video_defs(monkeypatch, None)
