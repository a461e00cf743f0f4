"""Cheap stand-ins for images and videos, and writers that save them the way ComfyUI does.

Frames are synthetic (a gradient that moves with the frame number, or a solid colour for
`EmptyImage`) so generating 1280x704x121 stays cheap; encoding is real H.264 through PyAV, written
in place frame by frame (ComfyUI does not write atomically, so watchers see growing files).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo


@dataclass(frozen=True)
class Frames:
    """An IMAGE batch: `count` frames of width x height (solid `color` when given)."""

    width: int
    height: int
    count: int
    color: int | None = None
    seed: int = 0

    def frame(self, index: int) -> np.ndarray:
        if self.color is not None:
            rgb = ((self.color >> 16) & 0xFF, (self.color >> 8) & 0xFF, self.color & 0xFF)
            return np.broadcast_to(
                np.array(rgb, dtype=np.uint8), (self.height, self.width, 3)
            ).copy()
        xs = np.arange(self.width, dtype=np.uint16)
        ys = np.arange(self.height, dtype=np.uint16)
        shift = (index * 4 + self.seed) & 0xFF
        red = ((xs[None, :] * 255 // max(self.width - 1, 1) + shift) & 0xFF).astype(np.uint8)
        green = ((ys[:, None] * 255 // max(self.height - 1, 1)) & 0xFF).astype(np.uint8)
        img = np.empty((self.height, self.width, 3), dtype=np.uint8)
        img[:, :, 0] = red
        img[:, :, 1] = green
        img[:, :, 2] = (index * 8 + (self.seed >> 8)) & 0xFF
        return img


@dataclass(frozen=True)
class Latent:
    width: int
    height: int
    length: int
    seed: int = 0

    def decoded_frames(self) -> Frames:
        # WAN VAEs compress time 4x: a latent of length L decodes to ((L-1)//4)*4+1 frames.
        count = ((self.length - 1) // 4) * 4 + 1 if self.length > 1 else 1
        return Frames(self.width, self.height, count, None, self.seed)


@dataclass(frozen=True)
class Video:
    frames: Frames
    fps: float


class OutsideOutputDir(Exception):
    pass


def save_path(output_dir: Path, filename_prefix: str) -> tuple[Path, str, int, str]:
    """ComfyUI's folder_paths.get_save_image_path: (folder, filename, next counter, subfolder)."""
    norm = os.path.normpath(filename_prefix)
    subfolder = os.path.dirname(norm)
    filename = os.path.basename(norm)
    folder = output_dir / subfolder
    if os.path.commonpath((str(output_dir), os.path.abspath(folder))) != str(output_dir):
        raise OutsideOutputDir(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {output_dir}"
        )
    counter = 1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        names = []
    prefix_len = len(filename)
    best = 0
    for name in names:
        head = name[: prefix_len + 1]
        try:
            digits = int(name[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        if os.path.normcase(head[:-1]) == os.path.normcase(filename) and head[-1:] == "_":
            best = max(best, digits)
    counter = best + 1
    return folder, filename, counter, subfolder


def vhs_counter(folder: Path, filename: str) -> int:
    """VideoHelperSuite's counter: max of `<prefix>_NNNNN.*` + 1."""
    pattern = re.compile(re.escape(filename) + r"_(\d+)\D*\..+")
    best = 0
    if folder.is_dir():
        for name in os.listdir(folder):
            match = pattern.fullmatch(name)
            if match:
                best = max(best, int(match.group(1)))
    return best + 1


def write_mp4(path: Path, video: Video, metadata: dict[str, Any] | None = None) -> None:
    """Encode H.264/yuv420p in place, one frame at a time (the file grows while we write)."""
    fps = Fraction(video.fps).limit_denominator(1000)
    container = av.open(str(path), mode="w", format="mp4")
    try:
        for key, value in (metadata or {}).items():
            container.metadata[key] = json.dumps(value) if not isinstance(value, str) else value
        stream = container.add_stream("libx264", rate=fps)
        stream.width = video.frames.width
        stream.height = video.frames.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for index in range(video.frames.count):
            frame = av.VideoFrame.from_ndarray(video.frames.frame(index), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def write_png(
    path: Path, frames: Frames, index: int, metadata: dict[str, Any] | None = None
) -> None:
    """PNG with ComfyUI's `prompt` (and other) text chunks."""
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    Image.fromarray(frames.frame(index)).save(path, pnginfo=info, compress_level=4)
