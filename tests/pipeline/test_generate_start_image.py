"""An image-to-video request whose start image is a file in the prompts folder, end to end on
the devstack: registered (image checked and stored in R2 by content), rendered on a fresh pod
(the image uploaded to its ComfyUI through the token proxy), its metadata naming the image."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance
from PIL import Image

from rp_devstack.stack import Devstack
from rp_pipeline.video_requests.model import parse_request
from rp_pipeline.video_requests.start_image import StartImageReader
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    pods_of_run,
    r2_now,
    register_requests,
)

# The smallest video the I2V workflow allows that the stand-in renders quickly.
TINY_I2V = {"width": 160, "height": 96, "frames": 9, "fps": 8}


def test_i2v_with_a_local_start_image_renders_and_records_the_image(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 96), (230, 120, 20)).save(buffer, "PNG")
    image = buffer.getvalue()
    sha = hashlib.sha256(image).hexdigest()
    (prompts_dir / "starts").mkdir()
    (prompts_dir / "starts" / "fox.png").write_bytes(image)
    entry = {
        "prompt": "the fox turns its head",
        "workflow": "wan22_i2v_14b_lightx2v",
        "seed": 5,
        "params": {**TINY_I2V, "input_image": "starts/fox.png"},
    }
    (prompts_dir / "i2v.yaml").write_text(yaml.safe_dump({"requests": [entry]}))
    key = parse_request(entry, StartImageReader(prompts_dir)).key

    register_requests(instance, resources)
    r2 = r2_now()
    assert r2.get_bytes(f"inputs/{sha}.png") == image
    result = generate(instance, resources, [key])
    assert result.success

    md = latest_by_partition(instance)[key]
    assert md["start_image_sha256"] == sha
    assert md["start_image_r2_key"] == f"inputs/{sha}.png"
    assert md["start_image_size_bytes"] == len(image)
    assert (md["width"], md["height"], md["frames"]) == (160, 96, 9)
    assert md["workflow"] == "wan22_i2v_14b_lightx2v"
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert pod["id"] == md["pod_id"]
