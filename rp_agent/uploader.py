"""Put one file into R2: a single PUT for small files, streamed equal-size parts for large ones.

Memory stays bounded: a part is never loaded whole; botocore streams it from the file through
a small window reader (`PartReader`), so a 200 MiB or 200 GiB file costs the same few MB.
No ACL or tagging headers (R2 rejects them). User metadata is ASCII only: names never go in.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
MIN_PART = 5 * MIB
MAX_PART = 5 * 1024 * MIB
MAX_PARTS = 10_000

# Error codes no retry can fix: the bucket or the credentials are wrong.
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "InvalidBucketName",
        "AccountProblem",
    }
)


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "") or None
    return None


def is_permanent(exc: BaseException) -> bool:
    return error_code(exc) in PERMANENT_CODES


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks (the one hashing function of agent and pipeline)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_and_hash(path: str, size: int, keep_limit: int) -> tuple[str, bytes | None]:
    """sha256 of the file, plus its bytes when it is small enough to send from memory.

    Keeping small files (images) saves a second read and a slow block-by-block send; larger
    files are hashed in 1 MiB chunks and streamed from disk later, so memory stays bounded.
    """
    if size > keep_limit:
        return file_sha256(path), None
    with open(path, "rb") as fh:
        # One byte past the expected size reveals growth; asking for no more than that matters:
        # a read of keep_limit + 1 allocates that whole buffer (17x slower for a 1 MiB file).
        data = fh.read(size + 1)
    return hashlib.sha256(data).hexdigest(), data


def part_size_for(size: int, preferred: int) -> int:
    """Smallest whole-MiB part >= preferred (and >= 5 MiB) that keeps the count <= 10,000."""
    needed = -(-size // MAX_PARTS)
    part = max(preferred, MIN_PART, needed)
    part = -(-part // MIB) * MIB
    if part > MAX_PART:
        raise ValueError(f"file of {size} bytes needs parts above 5 GiB; S3 cannot store it")
    return part


def plan_parts(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part: all equal except the last."""
    return [(offset, min(part_size, size - offset)) for offset in range(0, size, part_size)]


class PartReader:
    """Read-only, seekable view of `length` bytes at `offset` of an open file descriptor.

    botocore needs read/seek/tell (it rewinds the body to retry) and a length; the bytes are
    read with pread in small blocks as the HTTP layer asks for them.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd, self._offset, self._length, self._pos = fd, offset, length, 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        data = os.pread(self._fd, size, self._offset + self._pos) if size else b""
        if len(data) != size:
            raise OSError("file shrank while it was being uploaded")
        self._pos += size
        return data

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = min(max(0, base + position), self._length)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


@dataclass(frozen=True)
class ObjectMeta:
    sha256: str
    close_time: float
    upload_start: float

    def as_metadata(self) -> dict[str, str]:
        return {
            "sha256": self.sha256,
            "close-time": f"{self.close_time:.3f}",
            "upload-start": f"{self.upload_start:.3f}",
        }


class Uploader:
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        multipart_threshold: int = 16 * MIB,
        part_size: int = 8 * MIB,
        part_concurrency: int = 4,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.multipart_threshold = max(multipart_threshold, MIN_PART)
        self.part_size = part_size
        self.part_concurrency = part_concurrency

    def remote_sha256(self, key: str) -> str | None:
        """sha256 metadata of the object already at `key`, or None when there is none."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return head.get("Metadata", {}).get("sha256")

    def upload(
        self, path: str, key: str, size: int, meta: ObjectMeta, body: bytes | None = None
    ) -> int:
        """Upload (from `body` when given, else from the file); return the number of parts."""
        extra: dict[str, Any] = {"Metadata": meta.as_metadata()}
        content_type, _ = mimetypes.guess_type(key)
        if content_type:
            extra["ContentType"] = content_type
        if body is not None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
            return 1
        if size <= self.multipart_threshold:
            with open(path, "rb") as stream:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=stream, **extra)
            return 1
        return self._multipart(path, key, size, extra)

    def _multipart(self, path: str, key: str, size: int, extra: dict[str, Any]) -> int:
        parts = plan_parts(size, part_size_for(size, self.part_size))
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)[
            "UploadId"
        ]
        fd = os.open(path, os.O_RDONLY)
        try:

            def send(number: int, offset: int, length: int) -> dict[str, Any]:
                resp = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=PartReader(fd, offset, length),  # type: ignore[arg-type]
                    ContentLength=length,
                )
                return {"PartNumber": number, "ETag": resp["ETag"]}

            with ThreadPoolExecutor(self.part_concurrency, thread_name_prefix="part") as pool:
                futures = [
                    pool.submit(send, n, offset, length)
                    for n, (offset, length) in enumerate(parts, start=1)
                ]
                done = [f.result() for f in futures]
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},  # type: ignore[typeddict-item]
            )
        except BaseException:
            # The original error is the one worth reporting.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        finally:
            os.close(fd)
        return len(parts)
