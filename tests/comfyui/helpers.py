"""Shared checks for the ComfyUI tests."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import requests

from rp_pipeline.integrations.comfyui.client import ComfyUIClient

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


def wait_until_running(client: ComfyUIClient, prompt_id: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(item[1] == prompt_id for item in client.queue()["queue_running"]):
            return
        time.sleep(0.02)
    raise AssertionError(f"{prompt_id} never started")


def history_entry(base_url: str, prompt_id: str, timeout: float = 30) -> dict:
    """The finished prompt's `/history` entry (polled over plain HTTP)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        entry = requests.get(f"{base_url}/history/{prompt_id}", timeout=10).json()
        if entry:
            return dict(entry[prompt_id])
        time.sleep(0.05)
    raise AssertionError(f"{prompt_id} never finished")
