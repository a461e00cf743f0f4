"""The one place an S3 client for Cloudflare R2 is built (agent and pipeline share it).

R2 speaks S3 with a few differences that boto3's defaults trip over, so every client in the
project comes from `make_r2_client` and tests assert its configuration directly (moto accepts
what R2 rejects, so a round trip against moto cannot catch a wrong setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

R2_ENV_NAMES = ("R2_ENDPOINT", "R2_BUCKET", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")


class R2ConfigError(ValueError):
    """R2 settings are missing or unusable; the message names what to set."""


@dataclass(frozen=True)
class R2Settings:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> R2Settings:
        env = os.environ if environ is None else environ
        missing = [name for name in R2_ENV_NAMES if not env.get(name)]
        if missing:
            raise R2ConfigError(
                f"missing environment variable(s) {', '.join(missing)}: set them to your R2 "
                "endpoint (https://<account>.r2.cloudflarestorage.com), bucket and API token keys"
            )
        return cls(
            endpoint=env["R2_ENDPOINT"],
            bucket=env["R2_BUCKET"],
            access_key_id=env["R2_ACCESS_KEY_ID"],
            secret_access_key=env["R2_SECRET_ACCESS_KEY"],
        )

    def __repr__(self) -> str:  # never let the secret reach a log line
        return f"R2Settings(endpoint={self.endpoint!r}, bucket={self.bucket!r}, access_key_id=***)"


def r2_client_config(
    max_pool_connections: int = 10, retry_mode: Literal["standard", "adaptive"] = "standard"
) -> Config:
    """botocore Config that R2 accepts.

    boto3 >= 1.36 sends CRC32 trailer checksums by default; R2 rejects them, so checksums are
    only computed when an operation requires one. The body is not hashed into the signature
    (`UNSIGNED-PAYLOAD`, which R2 accepts): the agent has already computed the file's sha256,
    which travels as metadata and receipt and is verified on download, and a second sha256 of
    every body was the largest CPU cost per small upload. The pool is sized to the caller's
    worker count so concurrent uploads never wait on a connection.
    """
    return Config(
        region_name="auto",
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": retry_mode, "max_attempts": 5},
        max_pool_connections=max(10, max_pool_connections),
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path", "payload_signing_enabled": False},
    )


def make_r2_client(settings: R2Settings, max_pool_connections: int = 10) -> S3Client:
    client: Any = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name="auto",
        config=r2_client_config(max_pool_connections),
    )
    return client
