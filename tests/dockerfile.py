"""Reading a Dockerfile the way the tests check it: its instructions, one per logical line."""

from __future__ import annotations

from pathlib import Path


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined; comment and blank lines are
    dropped, also inside a continuation (Docker skips them there too)."""
    joined: list[str] = []
    buffer = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        joined.append(buffer + line)
        buffer = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]
