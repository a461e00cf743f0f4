"""Facts about a video file and its poster frame, read with PyAV (no ffprobe binary needed)."""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp")
# Small enough that a data-URI poster stays a few KB in the event log.
THUMBNAIL_WIDTH = 160


@dataclass(frozen=True)
class VideoFacts:
    width: int
    height: int
    frames: int
    fps: float
    duration_s: float
    codec: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_video_key(key: str) -> bool:
    return key.lower().endswith(VIDEO_SUFFIXES)


def probe(path: Path) -> VideoFacts:
    """Stream facts; counts frames by demuxing when the container does not say."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        frames = stream.frames
        if not frames:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frames / fps if fps else 0.0
        return VideoFacts(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=int(frames),
            fps=round(fps, 3),
            duration_s=round(duration, 3),
            codec=stream.codec_context.name,
        )


@dataclass(frozen=True)
class Decoded:
    """How much of a video decodes: every frame, or those before the error."""

    frames: int
    error: str | None = None


def decode_all(path: Path) -> Decoded:
    """Decode every video frame; a broken stream is a result (the error named), not a raise."""
    frames = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                frames += 1
    except (av.FFmpegError, IndexError, ValueError) as exc:
        return Decoded(frames, f"{type(exc).__name__}: {exc}")
    return Decoded(frames)


def poster_image(path: Path) -> Image.Image:
    """The first decodable frame."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image: Image.Image = frame.to_image()
            return image
    raise ValueError(f"{path} has no decodable video frame")


def png_bytes(image: Image.Image, width: int | None = None) -> bytes:
    if width and image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri_png(image: Image.Image, width: int = THUMBNAIL_WIDTH) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, width)).decode()


def poster_markdown(image: Image.Image, caption: str, link: str | None = None) -> str:
    """Markdown the Dagster UI renders inline (a data URI needs no network from the browser)."""
    img = f"![{caption}]({data_uri_png(image)})"
    return f"[{img}]({link})" if link else img
