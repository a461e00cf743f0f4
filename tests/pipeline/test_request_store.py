"""Where a run finds the spec of each partition it was asked to generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.video_requests.store import UnknownRequestError, resolve_requests

from .helpers import write_prompts


def test_partition_known_only_from_prompts_dir_is_resolved(
    r2_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_PROMPTS_DIR", str(tmp_path / "prompts"))
    (key,) = write_prompts(tmp_path / "prompts", "local-only", 1)
    r2 = R2Resource(
        endpoint=r2_settings.endpoint,
        bucket=r2_settings.bucket,
        access_key_id=r2_settings.access_key_id,
        secret_access_key=r2_settings.secret_access_key,
    )
    found = resolve_requests(r2, [key], {})
    assert found[key].prompt.startswith("local-only scene 0")
    with pytest.raises(UnknownRequestError, match="no-such-key"):
        resolve_requests(r2, [key, "no-such-key"], {})
