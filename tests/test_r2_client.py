from __future__ import annotations

import pytest

from rp_agent.keys import object_key
from rp_agent.r2 import R2ConfigError, R2Settings, make_r2_client


def test_client_config_is_what_r2_accepts() -> None:
    client = make_r2_client(R2Settings("https://acct.r2.cloudflarestorage.com", "b", "k", "s"), 32)
    config = client.meta.config
    assert client.meta.region_name == "auto"
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries["mode"] in {"standard", "adaptive"}
    assert config.max_pool_connections == 32


def test_missing_env_names_every_missing_variable() -> None:
    with pytest.raises(R2ConfigError) as err:
        R2Settings.from_env({"R2_ENDPOINT": "http://x", "R2_BUCKET": "b"})
    assert "R2_ACCESS_KEY_ID" in str(err.value) and "R2_SECRET_ACCESS_KEY" in str(err.value)


def test_settings_repr_hides_secret() -> None:
    assert "topsecret" not in repr(R2Settings("http://x", "b", "AKID", "topsecret"))


def test_round_trip_against_real_s3_server(r2_client, r2_settings) -> None:
    r2_client.put_object(Bucket=r2_settings.bucket, Key="a/b.txt", Body=b"hello")
    body = r2_client.get_object(Bucket=r2_settings.bucket, Key="a/b.txt")["Body"].read()
    assert body == b"hello"


def test_object_key_scheme() -> None:
    mtime = 1_767_225_599.0  # 2025-12-31T23:59:59Z
    assert object_key("video/x_00001_.mp4", mtime, "pod123") == (
        "outputs/2025-12-31/pod123/video/x_00001_.mp4"
    )
    assert object_key("a.png", mtime, None, prefix="custom/") == "custom/2025-12-31/local/a.png"
    with pytest.raises(ValueError):
        object_key("../etc/passwd", mtime)


def test_ui_links_open_or_say_how_to_get_one() -> None:
    """A metadata link a browser can open: the public URL where R2_PUBLIC_BASE_URL is set,
    otherwise the command that prints a short-lived link, as text (never a presigned URL)."""
    from dagster import MetadataValue

    from rp_pipeline.integrations.r2.resource import R2Resource

    private = R2Resource(
        endpoint="http://127.0.0.1:9", bucket="videos", access_key_id="AKID", secret_access_key="s"
    )
    assert private.link_metadata("outputs/a.mp4") == MetadataValue.text(
        "rp-video url s3://videos/outputs/a.mp4"
    )
    public = R2Resource(
        endpoint="http://127.0.0.1:9", bucket="videos", access_key_id="AKID",
        secret_access_key="s", public_base_url="https://cdn.example.com/",
    )  # fmt: skip
    link = public.link_metadata("outputs/a.mp4")
    assert link == MetadataValue.url("https://cdn.example.com/outputs/a.mp4")
    assert "AKID" not in str(link)
