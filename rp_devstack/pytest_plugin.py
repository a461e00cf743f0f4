"""pytest fixtures for the devstack pieces: usable by this repo's tests and by users' own.

Enable with `pytest_plugins = ["rp_devstack.pytest_plugin"]`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from rp_agent.r2 import R2Settings, make_r2_client
from rp_devstack.s3 import LocalS3


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    server = LocalS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def r2_settings(local_s3: LocalS3) -> R2Settings:
    """A fresh, empty bucket on the session's S3 server."""
    return local_s3.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def r2_client(r2_settings: R2Settings):
    return make_r2_client(r2_settings)


@pytest.fixture
def r2_env(r2_settings: R2Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
