"""Verified-file markers, so a warm volume is not re-hashed (80 GB) on every boot.

`$MODELS_DIR/.verified.json` maps each file's path under MODELS_DIR to the size, mtime (ns) and
digest it had when its digest was last checked. A file whose size and mtime still match is
trusted without reading it; one that changed underneath is hashed again against the recorded
digest. Written atomically (temp file + rename) under the volume's download lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MARKER_FILE = ".verified.json"
BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Digest:
    """`algo` is sha256 (pinned, CivitAI, or a Hugging Face LFS file's ETag) or git-sha1 (the
    ETag of a small file stored in git itself: sha1 of "blob <size>\\0" + content)."""

    algo: str
    value: str
    origin: str  # "manifest", "hub", "civitai" or "marker": named in mismatch messages


def file_digest(path: Path, algo: str) -> str:
    if algo == "git-sha1":
        hasher = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    else:
        hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


class Markers:
    def __init__(self, models_dir: Path) -> None:
        self.path = models_dir / MARKER_FILE
        self._lock = threading.Lock()
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            loaded = {}
        self.entries: dict[str, dict[str, object]] = loaded if isinstance(loaded, dict) else {}

    def recorded_digest(self, relpath: str) -> Digest | None:
        entry = self.entries.get(relpath)
        if not isinstance(entry, dict):
            return None
        return Digest(str(entry.get("algo", "sha256")), str(entry.get("digest", "")), "marker")

    def matches(self, relpath: str, file: Path) -> bool:
        """True when `file` has the size and mtime it had when it was verified."""
        entry = self.entries.get(relpath)
        try:
            stat = file.stat()
        except OSError:
            return False
        return (
            isinstance(entry, dict)
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
        )

    def record(self, relpath: str, file: Path, digest: Digest | None) -> None:
        stat = file.stat()
        with self._lock:
            self.entries[relpath] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "algo": digest.algo if digest else None,
                "digest": digest.value if digest else None,
                "verified_at": time.time(),
            }
            self._save()

    def forget(self, relpath: str) -> None:
        with self._lock:
            if self.entries.pop(relpath, None) is not None:
                self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f"{MARKER_FILE}.tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
