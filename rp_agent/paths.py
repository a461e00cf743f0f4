"""Which files the agent syncs, and how a file name becomes a valid object key.

Names come from the filesystem as `str` with surrogate escapes (bytes that are not UTF-8).
Object keys and SQLite text must be valid UTF-8, so undecodable bytes are percent-encoded;
every other character (unicode included) is kept as is.
"""

from __future__ import annotations

import os

DEFAULT_EXTENSIONS = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "webp",
        "gif",
        "mp4",
        "webm",
        "mov",
        "mkv",
        "wav",
        "mp3",
        "flac",
        "ogg",
        "m4a",
    ]
)
# Writers put partial content under these names and rename when done.
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


def parse_extensions(text: str) -> frozenset[str]:
    """`"png, .MP4 wav"` -> {"png", "mp4", "wav"}; `"*"` means every extension."""
    items = {item.strip().lstrip(".").lower() for item in text.replace(",", " ").split()}
    items.discard("")
    if not items:
        raise ValueError("the extension list is empty (use '*' to sync every file)")
    return frozenset(items)


def is_candidate(relative_path: str, extensions: frozenset[str]) -> bool:
    """True for a file the agent should upload: right extension, not hidden, not partial."""
    parts = relative_path.replace(os.sep, "/").split("/")
    if any(part.startswith(".") for part in parts):
        return False  # dot-files and anything inside dot-directories
    name = parts[-1].lower()
    if not name or name.endswith(TEMP_SUFFIXES):
        return False
    if "*" in extensions:
        return True
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext in extensions


def key_safe(relative_path: str) -> str:
    """Replace surrogate-escaped (undecodable) bytes with %XX so the result is valid UTF-8."""
    out: list[str] = []
    for char in relative_path.replace(os.sep, "/"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"%{code - 0xDC00:02X}")
        else:
            out.append(char)
    return "".join(out)


def relative_to(watch_dir: str, path: str) -> str | None:
    """Path relative to the watch dir, or None when it lies outside it."""
    rel = os.path.relpath(path, watch_dir)
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        return None
    return rel
