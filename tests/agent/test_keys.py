"""The object key format and its parsers: partition keys survive the round trip whole."""

from __future__ import annotations

import pytest

from rp_agent.keys import (
    filename_prefix,
    object_key,
    pipeline_partition_key,
    pod_of,
    unescape_segment,
)

KEYS = [
    "a-fox-in-snow-0123456789",
    "a/b",
    "b",
    "with space",
    "ünïcödé 🦊 ключ",
    ".hidden",
    "a~2Fb",
    "x-0123abcd",
    "trailing/",
]


@pytest.mark.parametrize("partition_key", KEYS)
def test_partition_key_round_trips_through_the_object_key(partition_key: str) -> None:
    prefix = filename_prefix("wan22_ti2v_5b", partition_key, "0123abcd-run")
    assert prefix.count("/") == 2  # the key is ONE path segment, whatever it holds
    relative = f"{prefix}_00001_.mp4"
    key = object_key(relative, 1_767_225_600.0, pod_id="pod9", prefix="tenant/outputs")
    assert pipeline_partition_key(key) == partition_key
    assert not relative.split("/")[-1].startswith(".")  # the agent skips hidden files
    assert pod_of(key, "tenant/outputs") == "pod9"


def test_a_key_with_a_slash_is_not_its_last_part() -> None:
    ab = pipeline_partition_key(
        object_key(f"{filename_prefix('w', 'a/b', 'deadbeef')}_00001_.mp4", 0.0, "p")
    )
    b = pipeline_partition_key(
        object_key(f"{filename_prefix('w', 'b', 'deadbeef')}_00001_.mp4", 0.0, "p")
    )
    assert (ab, b) == ("a/b", "b")


def test_objects_made_outside_the_pipeline_have_no_partition() -> None:
    assert pipeline_partition_key("outputs/2026-01-01/pod/video/ComfyUI_00001_.mp4") is None
    assert pipeline_partition_key("outputs/2026-01-01/pod/stills/x-0123abcd_00001_.png") is None
    assert pipeline_partition_key("outputs/2026-01-01/pod/video/w/x-0123abcd.mp4") is None


def test_pod_of_knows_the_prefix() -> None:
    assert pod_of("outputs/2026-01-01/pod1/video/a.mp4") == "pod1"
    assert pod_of("a/b/2026-01-01/pod1/video/a.mp4", "a/b") == "pod1"
    assert pod_of("elsewhere/2026-01-01/pod1/a.mp4") == ""
    assert unescape_segment("~C3~BC") == "ü"
