"""Start images of requests: where a request's `input_image` comes from, checked before any pod.

A request names its start image in `params.input_image` as one of:
- a file under the prompts folder (`start/fox.png`, relative to the folder of the YAML file);
- an object in the pipeline's own R2 bucket, `r2://<key>` (other buckets are not readable with
  the pipeline's credentials, so `s3://bucket/key` is not offered);
- an `https://` URL (never plain http: the bytes decide the video, so they must not be
  alterable on the way).

Resolving reads the bytes once, checks they decode as an image within the size limits, and
records the facts (`StartImage`). The image is stored in R2 content-addressed, at
`inputs/<sha256><suffix>`: one object per distinct image however many requests use it, an
object whose key says what it holds (it can never be replaced by other bytes), and a key that
follows from the sha256 in the request, so nothing else must be kept in step. The sha256 is part
of the request's content (model.canonical_json): a changed image is a new partition.

On the pod the image is uploaded under `rp_inputs/<sha256[:16]><suffix>` (ComfyUIClient.
upload_image): the name a LoadImage node gets is known at planning time, before any pod exists.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3
from botocore.exceptions import ClientError
from PIL import Image, UnidentifiedImageError

from rp_pipeline.integrations.comfyui.client import UPLOAD_SUBFOLDER

START_IMAGE_PARAM = "input_image"
INPUTS_PREFIX = "inputs"
# A start frame is one video frame: far below these. They keep a typo (a video, a RAW photo)
# or a decompression bomb from reaching a pod; ComfyUI itself takes up to 100 MB per upload.
MAX_START_IMAGE_BYTES = 20 * 1024 * 1024
MAX_START_IMAGE_PIXELS = 4096 * 4096
URL_TIMEOUT_S = 30.0
MAX_REDIRECTS = 5
# What LoadImage reads well and a browser shows: the suffix the stored object and upload get.
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


class StartImageError(ValueError):
    """A start image cannot be used; the message is one line saying what and what to do."""


@dataclass(frozen=True)
class StartImage:
    """What a request's start image is: recorded in the request (so in R2 and the video's
    metadata), by content."""

    source: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    format: str

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]

    @property
    def r2_key(self) -> str:
        return f"{INPUTS_PREFIX}/{self.sha256}{self.suffix}"

    @property
    def upload_name(self) -> str:
        """What ComfyUI's upload answers for it, so what its LoadImage node is given."""
        return f"{UPLOAD_SUBFOLDER}/{self.sha256[:16]}{self.suffix}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "r2_key": self.r2_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StartImage:
        try:
            image = cls(
                source=str(data["source"]),
                sha256=str(data["sha256"]),
                size_bytes=int(data["size_bytes"]),
                width=int(data["width"]),
                height=int(data["height"]),
                format=str(data["format"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StartImageError(f"'start_image' facts are incomplete: {exc}") from None
        if image.format not in SUFFIXES or len(image.sha256) != 64:
            raise StartImageError(f"'start_image' facts are malformed: {dict(data)}")
        return image


def inspect_image(data: bytes, source: str) -> StartImage:
    """The facts of `data` if it is a whole PNG/JPEG/WebP image within the limits."""
    if len(data) > MAX_START_IMAGE_BYTES:
        raise StartImageError(
            f"start image {source} is {len(data)} bytes, over the limit of "
            f"{MAX_START_IMAGE_BYTES}: use a smaller image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, fmt = image.width, image.height, str(image.format)
                if width * height > MAX_START_IMAGE_PIXELS:
                    raise StartImageError(
                        f"start image {source} is {width}x{height} pixels, over the limit of "
                        f"{MAX_START_IMAGE_PIXELS} pixels: scale it down"
                    )
                image.load()  # decode every pixel: a truncated file fails here, not on the pod
    except StartImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise StartImageError(f"start image {source} is not a readable image: {detail}") from None
    if fmt not in SUFFIXES:
        raise StartImageError(f"start image {source} is {fmt}; use PNG, JPEG or WebP")
    return StartImage(source, hashlib.sha256(data).hexdigest(), len(data), width, height, fmt)


def fetch_capped(
    url: str,
    session: requests.Session,
    max_bytes: int = MAX_START_IMAGE_BYTES,
    timeout_s: float = URL_TIMEOUT_S,
) -> bytes:
    """GET `url` whole over https only (redirects too: each hop is checked before it is
    requested), refusing more than `max_bytes` or longer than `timeout_s` in total."""
    deadline = time.monotonic() + timeout_s
    here = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if not here.startswith("https://"):
                where = "" if here == url else f" (redirected to {here})"
                raise StartImageError(f"start image {url}{where}: only https:// URLs are read")
            response = session.get(
                here, stream=True, timeout=min(timeout_s, 10.0), allow_redirects=False
            )
            if not response.is_redirect:
                break
            here = urljoin(here, response.headers["Location"])
            response.close()
        else:
            raise StartImageError(f"start image {url}: more than {MAX_REDIRECTS} redirects")
        with response:
            return _read_capped(response, url, max_bytes, deadline, timeout_s)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        detail = " ".join(str(exc).split())
        raise StartImageError(f"start image {url} could not be downloaded: {detail}") from None


def _read_capped(
    response: requests.Response, url: str, max_bytes: int, deadline: float, timeout_s: float
) -> bytes:
    if response.status_code != 200:
        raise StartImageError(f"start image {url} answered HTTP {response.status_code}")
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise StartImageError(
            f"start image {url} is {declared} bytes, over the limit of {max_bytes}"
        )
    body = bytearray()
    # read1 returns what has arrived (read(n) waits for n bytes), so the deadline is checked
    # while a server trickles: a per-read timeout alone would let it go on forever.
    while chunk := response.raw.read1(64 * 1024, decode_content=True):
        body += chunk
        if len(body) > max_bytes:
            raise StartImageError(f"start image {url} is over the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise StartImageError(f"start image {url} took over {timeout_s:.0f} s to download")
    return bytes(body)


@dataclass
class StartImageReader:
    """Reads and checks start images for one pass over requests (a scan, a run's validation):
    local paths are relative to `base_dir`; `r2://` keys need `r2`; each source is read once."""

    base_dir: Path
    r2: Any = None
    session: requests.Session = field(default_factory=requests.Session)
    url_timeout_s: float = URL_TIMEOUT_S
    _bytes: dict[str, bytes] = field(default_factory=dict)  # sha256 -> image
    _by_source: dict[str, StartImage] = field(default_factory=dict)

    def resolve(self, source: Any) -> StartImage:
        if not isinstance(source, str) or not source.strip():
            raise StartImageError(
                f"'{START_IMAGE_PARAM}' must name a start image (a file under the prompts "
                f"folder, r2://<key> or an https:// URL), got {source!r}"
            )
        source = source.strip()
        if source not in self._by_source:
            data = self.read(source)
            image = inspect_image(data, source)
            self._bytes[image.sha256] = data
            self._by_source[source] = image
        return self._by_source[source]

    def read(self, source: str) -> bytes:
        scheme = source.split("://", 1)[0].lower() if "://" in source else ""
        if scheme == "https":
            return fetch_capped(source, self.session, timeout_s=self.url_timeout_s)
        if scheme == "r2":
            return self._read_r2(source, source[len("r2://") :])
        if scheme:
            raise StartImageError(
                f"start image {source}: only https:// URLs, r2://<key> and files under the "
                "prompts folder are read"
            )
        return self._read_file(source)

    def _read_file(self, source: str) -> bytes:
        base = self.base_dir.resolve()
        path = (base / source).resolve()
        if not path.is_relative_to(base):
            raise StartImageError(
                f"start image {source} is outside the prompts folder {base}: put it there"
            )
        if not path.is_file():
            raise StartImageError(f"start image {source} not found in the prompts folder {base}")
        size = path.stat().st_size
        if size > MAX_START_IMAGE_BYTES:
            raise StartImageError(
                f"start image {source} is {size} bytes, over the limit of "
                f"{MAX_START_IMAGE_BYTES}: use a smaller image"
            )
        return path.read_bytes()

    def _read_r2(self, source: str, key: str) -> bytes:
        if self.r2 is None:
            raise StartImageError(f"start image {source}: no R2 access here to read it")
        head = self.r2.head(key)
        if head is None:
            raise StartImageError(f"start image {source}: no such object in {self.r2.bucket}")
        if head.size > MAX_START_IMAGE_BYTES:
            raise StartImageError(
                f"start image {source} is {head.size} bytes, over the limit of "
                f"{MAX_START_IMAGE_BYTES}: use a smaller image"
            )
        data: bytes = self.r2.get_bytes(key)
        return data

    def store(self, r2: Any, image: StartImage) -> None:
        """Put the image at its content key unless it is there already."""
        if r2.head(image.r2_key) is not None:
            return
        data = self._bytes.get(image.sha256)
        if data is None:
            data = self.read(image.source)
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise StartImageError(
                f"start image {image.source} changed since the request was registered: "
                "register the request again"
            )
        content_type = f"image/{image.format.lower()}"
        r2.put_bytes(image.r2_key, data, content_type, {"sha256": image.sha256})


def load_stored(r2: Any, image: StartImage) -> bytes:
    """The image's bytes from R2, checked against its sha256."""
    try:
        data: bytes = r2.get_bytes(image.r2_key)
    except ClientError as exc:
        raise StartImageError(f"start image {image.r2_key} cannot be read from R2: {exc}") from None
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise StartImageError(f"start image {image.r2_key} in R2 does not match its sha256")
    return data
