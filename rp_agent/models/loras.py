"""The LoRAs a run asks for (env RP_LORAS), put into `$MODELS_DIR/loras/` before ComfyUI starts.

RP_LORAS is JSON written by the pipeline's launcher, one item per distinct LoRA of the run:

    [{"name": "x.safetensors", "source": "hf", "location": "https://huggingface.co/o/r/resolve/<rev>/x.safetensors", "sha256": "..."},
     {"name": "civitai_123.safetensors", "source": "civitai", "location": "https://civitai.com/api/download/models/123"},
     {"name": "y.safetensors", "source": "r2", "location": "loras/y.safetensors"},
     {"name": "z.safetensors", "source": "file"}]

- hf, civitai, url: through the model downloader (parallel ranges, resume, verified markers),
  checked against the given sha256, else the hub's (Hugging Face X-Linked-Etag, CivitAI's
  model-version digest). HF_ENDPOINT / CIVITAI_ENDPOINT replace the host as for the weights;
  CIVITAI_API_KEY / HF_TOKEN go into the Authorization header only.
- r2: from the pod's own bucket (R2_* env, the agent's credentials), checked against the given
  sha256, else the `sha256` object metadata rp-agent's uploads carry.
- file: must already be on the volume; only checked (and hashed) here.

Once per volume: a file whose verified marker still matches is not fetched or hashed again.
Every LoRA's sha256 (as verified, or computed when no digest was published) goes into the boot
status file's `loras` section, which the agent ships to R2 for the run's metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rp_agent.models.manifest import Entry, ManifestError
from rp_agent.models.markers import Digest, Markers, file_digest

LORAS_ENV = "RP_LORAS"
SUBDIR = "loras"
SOURCES = ("hf", "civitai", "url", "r2", "file")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,150}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CIVITAI_RE = re.compile(r"/api/download/models/(\d+)/?$")
BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class LoraWant:
    name: str
    source: str
    location: str
    sha256: str | None

    @property
    def relpath(self) -> str:
        return f"{SUBDIR}/{self.name}"

    def entry(self) -> Entry:
        """The downloader's form of an hf / civitai / url LoRA (no size floor: LoRAs are small)."""
        if self.source == "civitai":
            match = _CIVITAI_RE.search(urlsplit(self.location).path)
            assert match is not None  # checked in parse_wants
            source = f"civitai:{match.group(1)}"
        elif self.source == "hf":
            source = "hf-path:" + urlsplit(self.location).path.lstrip("/")
        else:
            source = self.location
        return Entry("lora", "any", source, self.name, SUBDIR, 0, self.sha256)


def parse_wants(text: str | None) -> list[LoraWant]:
    """RP_LORAS, checked; ManifestError (one line naming the item) when it is unusable."""
    if not text or not text.strip():
        return []
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{LORAS_ENV} is not JSON ({exc})") from None
    if not isinstance(items, list):
        raise ManifestError(f"{LORAS_ENV} must be a JSON list of LoRAs")
    wants = []
    for index, item in enumerate(items):
        where = f"{LORAS_ENV}[{index}]"
        if not isinstance(item, dict):
            raise ManifestError(f"{where} must be an object with name and source")
        name, source = str(item.get("name") or ""), item.get("source")
        location, sha = str(item.get("location") or ""), item.get("sha256")
        if not _NAME_RE.match(name):
            raise ManifestError(f"{where}: name {name!r} is not a plain file name")
        if source not in SOURCES:
            raise ManifestError(f"{where}: source must be one of {', '.join(SOURCES)}")
        if source != "file" and not location:
            raise ManifestError(f"{where}: a {source} LoRA needs its location")
        if source == "civitai" and not _CIVITAI_RE.search(urlsplit(location).path):
            raise ManifestError(f"{where}: {location!r} is not a CivitAI download URL")
        if source == "r2" and (location.startswith("/") or ".." in location.split("/")):
            raise ManifestError(f"{where}: {location!r} is not a key inside the bucket")
        if sha is not None and not _SHA256_RE.match(str(sha).lower()):
            raise ManifestError(f"{where}: sha256 must be 64 hex digits")
        wants.append(LoraWant(name, str(source), location, str(sha).lower() if sha else None))
    return wants


def _verified_sha256(markers: Markers, want: LoraWant, dest: Path) -> str:
    """The sha256 of a file in place: the marker's when it still matches, else computed."""
    recorded = markers.recorded_digest(want.relpath)
    if markers.matches(want.relpath, dest) and recorded and recorded.algo == "sha256":
        return recorded.value
    digest = file_digest(dest, "sha256")
    markers.record(want.relpath, dest, Digest("sha256", digest, "marker"))
    return digest


def check_in_place(markers: Markers, want: LoraWant, dest: Path) -> dict[str, Any]:
    """A LoRA already in `dest` (downloaded just now, or a `file` one): its status line."""
    if not dest.exists():
        raise FileNotFoundError(
            f"{want.relpath} is not on the volume (a 'file' LoRA must be put there first)"
        )
    sha = _verified_sha256(markers, want, dest)
    if want.sha256 and sha != want.sha256:
        raise ValueError(f"{want.relpath}: sha256 mismatch: got {sha}, expected {want.sha256}")
    return {"sha256": sha, "size_bytes": dest.stat().st_size}


def fetch_from_r2(
    client: Any, bucket: str, want: LoraWant, dest: Path, markers: Markers
) -> dict[str, Any]:
    """One R2 object into `dest`, checked against the given sha256, else its `sha256` metadata."""
    recorded = markers.recorded_digest(want.relpath)
    fresh = dest.exists() and markers.matches(want.relpath, dest)
    if fresh and recorded and recorded.value and want.sha256 in (None, recorded.value):
        return {"sha256": recorded.value, "size_bytes": dest.stat().st_size, "cached": True}
    resp = client.get_object(Bucket=bucket, Key=want.location)
    expected = want.sha256 or str(resp.get("Metadata", {}).get("sha256", "")).lower() or None
    part = dest.with_name(dest.name + ".part")
    hasher = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "wb") as handle:
            body = resp["Body"]
            while block := body.read(BLOCK):
                hasher.update(block)
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        got = hasher.hexdigest()
        if expected and got != expected:
            raise ValueError(
                f"{want.relpath}: sha256 mismatch: got {got}, expected {expected} "
                f"(from the {'request' if want.sha256 else 'object metadata'}); not kept"
            )
        os.replace(part, dest)
    finally:
        with contextlib.suppress(OSError):
            part.unlink()
    markers.record(want.relpath, dest, Digest("sha256", got, "r2"))
    return {"sha256": got, "size_bytes": dest.stat().st_size}


def downloadable(wants: list[LoraWant]) -> list[Entry]:
    """The model downloader's entries for the hf / civitai / url LoRAs."""
    return [w.entry() for w in wants if w.source in ("hf", "civitai", "url")]


def settle_loras(
    wants: list[LoraWant],
    models_dir: Path,
    env: Mapping[str, str],
    failed: set[str],
    err: Callable[[str], None],
) -> list[dict[str, Any]]:
    """After the downloader ran (`failed`: the paths it could not get): the r2 LoRAs fetched,
    every LoRA checked in place; one status dict per LoRA (state ok or failed)."""
    markers = Markers(models_dir)
    results = []
    r2_client = None
    for want in wants:
        dest = models_dir / want.relpath
        status: dict[str, Any] = {"name": want.name, "source": want.source}
        if want.source != "file":
            status["location"] = want.location
        try:
            if want.relpath in failed:
                raise RuntimeError("download failed (see the line above)")
            if want.source == "r2":
                if r2_client is None:
                    r2_client = _r2_client(env)
                status |= fetch_from_r2(r2_client, env["R2_BUCKET"], want, dest, markers)
            else:
                status |= check_in_place(markers, want, dest)
            status["state"] = "ok"
        except Exception as exc:  # one LoRA's failure is its line, never the others'
            message = str(exc) or type(exc).__name__
            err(f"LoRA {want.name}: {message}")
            status |= {"state": "failed", "error": message}
        status.pop("cached", None)
        results.append(status)
    return results


def _r2_client(env: Mapping[str, str]) -> Any:
    from rp_agent.r2 import R2Settings, make_r2_client

    return make_r2_client(R2Settings.from_env(dict(env)))
