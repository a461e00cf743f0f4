"""Shared checks for the ComfyUI tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

SMALL = {"width": 160, "height": 96, "frames": 17, "fps": 12}


def mp4_facts(path: Path) -> dict:
    """Decode the whole file: (codec, width, height, fps, decoded frame count)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {
            "codec": stream.codec_context.name,
            "width": stream.width,
            "height": stream.height,
            "fps": Fraction(stream.average_rate) if stream.average_rate else None,
            "frames": frames,
        }


def output_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
