"""One HTTP request with the redirect rules the model hubs need (standard library only).

Hugging Face answers a resolve URL of a large (LFS) file with a 302 to its CDN; CivitAI
redirects to signed storage URLs. Redirects are followed up to 10 hops, and the Authorization
header is dropped as soon as a hop leaves the original host (as curl and requests do), so a
token is never sent to a CDN or storage provider.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 10
USER_AGENT = "rp-agent-models/1"


class HttpError(Exception):
    """A request that got an answer other than the one wanted; `status` 0 = no answer."""

    def __init__(self, status: int, url: str, detail: str = "") -> None:
        self.status, self.url = status, url
        super().__init__(f"HTTP {status} from {url}" if status else f"{detail} ({url})")


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    url: str  # the last hop's URL
    first_headers: http.client.HTTPMessage  # the first hop's (Hugging Face puts metadata there)
    raw: http.client.HTTPResponse
    conn: http.client.HTTPConnection

    def read(self, size: int) -> bytes:
        return self.raw.read(size)

    def close(self) -> None:
        self.raw.close()
        self.conn.close()


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(0, url, "not an http(s) URL")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return cls(parts.netloc, timeout=timeout), target


def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    follow: str = "all",
    timeout: float = 60.0,
) -> Response:
    """`follow`: "all" redirects, "relative" only (huggingface_hub's HEAD for metadata: a renamed
    repo redirects relatively, the CDN absolutely), or "none". The caller closes the response."""
    sent = {"User-Agent": USER_AGENT, **(headers or {})}
    origin = urlsplit(url).netloc
    first: http.client.HTTPMessage | None = None
    for _ in range(MAX_REDIRECTS + 1):
        conn, target = _connect(url, timeout)
        try:
            conn.request(method, target, headers=sent)
            raw = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise HttpError(0, url, f"{type(exc).__name__}: {exc}") from None
        first = first or raw.headers
        location = raw.headers.get("Location")
        if raw.status in (301, 302, 303, 307, 308) and location and follow != "none":
            relative = not urlsplit(location).netloc
            if follow == "all" or relative:
                raw.close()
                conn.close()
                url = urljoin(url, location)
                if urlsplit(url).netloc != origin:
                    sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
                continue
        return Response(raw.status, raw.headers, url, first, raw, conn)
    raise HttpError(0, url, f"more than {MAX_REDIRECTS} redirects")
