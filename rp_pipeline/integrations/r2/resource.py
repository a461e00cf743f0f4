"""Cloudflare R2 as a Dagster resource: head, list, download, upload, presign.

Built on `rp_agent.r2.make_r2_client` (the one client factory with R2-safe settings). Secrets
arrive through `EnvVar` (`rp_pipeline.defs.resources.r2_resource`), so run config and the
instance only ever store the variable names.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from rp_agent.r2 import R2Settings, make_r2_client

log = logging.getLogger(__name__)

# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ObjectHead:
    key: str
    size: int
    metadata: dict[str, str]
    last_modified: float
    # When this process first saw the object (HEAD answered 200).
    seen_at: float
    etag: str = ""


@dataclass(frozen=True)
class ListPage:
    keys: list[str]
    prefixes: list[str]
    # (key, LastModified epoch s) of each object, in key order
    objects: list[tuple[str, float]]


@functools.lru_cache(maxsize=8)
def shared_client(settings: R2Settings) -> Any:
    """One boto3 client per R2 settings for the whole process. Building one loads botocore's
    service model (about 0.1 s), and Dagster builds the resource anew for every op, so a run
    paid it five times before its first prompt; boto3 clients are thread-safe to share."""
    return make_r2_client(settings, max_pool_connections=16)


class R2Resource(ConfigurableResource):
    """R2 bucket access for ops, sensors and assets."""

    endpoint: str
    bucket: str
    access_key_id: str = Field(repr=False)
    secret_access_key: str = Field(repr=False)
    prefix: str = "outputs"
    public_base_url: str | None = None
    presign_expiry_s: int = MAX_PRESIGN_EXPIRY_S

    _client: Any = PrivateAttr(default=None)

    def __repr__(self) -> str:
        return f"R2Resource(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    def settings(self) -> R2Settings:
        return R2Settings(self.endpoint, self.bucket, self.access_key_id, self.secret_access_key)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = shared_client(self.settings())
        return self._client

    # -- reading ------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectHead | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return ObjectHead(
            key=key,
            size=int(resp["ContentLength"]),
            metadata={k.lower(): v for k, v in (resp.get("Metadata") or {}).items()},
            last_modified=resp["LastModified"].timestamp(),
            seen_at=time.time(),
            etag=str(resp.get("ETag", "")),
        )

    def get_bytes(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, key, str(dest))
        return dest

    def iter_keys(
        self, prefix: str, start_after: str | None = None, delimiter: str | None = None
    ) -> Iterator[ListPage]:
        """Pages of a ListObjectsV2 listing (boto3's paginator follows the continuation)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        if delimiter:
            kwargs["Delimiter"] = delimiter
        for resp in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            contents = resp.get("Contents", [])
            yield ListPage(
                keys=[obj["Key"] for obj in contents],
                prefixes=[p["Prefix"] for p in resp.get("CommonPrefixes", [])],
                objects=[(obj["Key"], obj["LastModified"].timestamp()) for obj in contents],
            )

    # -- writing ------------------------------------------------------------------------------

    def upload_file(
        self, path: Path, key: str, metadata: dict[str, str] | None = None, content_type: str = ""
    ) -> ObjectHead:
        extra: dict[str, Any] = {"Metadata": metadata or {}}
        if content_type:
            extra["ContentType"] = content_type
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra)
        head = self.head(key)
        if head is None:  # read-after-write is strong on R2; a miss is a real failure
            raise RuntimeError(f"uploaded {key} but HEAD does not find it")
        return head

    def put_bytes(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata=metadata or {},
        )

    # -- URLs ---------------------------------------------------------------------------------

    def presign(self, key: str, expires_s: int | None = None) -> str:
        """A GET link valid `expires_s` (default `presign_expiry_s`, the one setting, at most 7
        days). It embeds the access key id: hand it to a person, never store it in metadata."""
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=min(expires_s or self.presign_expiry_s, MAX_PRESIGN_EXPIRY_S),
        )
        return url

    def object_url(self, key: str) -> str:
        """`s3://<bucket>/<key>`: names the object, grants nothing (safe to store and log)."""
        return f"s3://{self.bucket}/{key}"

    def link_metadata(self, key: str) -> Any:
        """How a person opens the object from the UI: its public URL when R2_PUBLIC_BASE_URL is
        set (a link that opens), else the command that prints a short-lived link, as text (a
        presigned URL carries the access key id and would stay in the event log for good)."""
        from dagster import MetadataValue

        public = self.public_url(key)
        if public:
            return MetadataValue.url(public)
        return MetadataValue.text(f"rp-video url {self.object_url(key)}")

    def public_url(self, key: str) -> str | None:
        if not self.public_base_url:
            return None
        return f"{self.public_base_url.rstrip('/')}/{key}"
