"""Start images onto pods: before a prompt with a start image is queued on a pod, the image is
uploaded to that pod's ComfyUI (through its token proxy) and the LoadImage node is given the
name ComfyUI answered.

The bytes come from R2 (where request registration stored them, content-addressed) once per
process and image; each pod's client uploads an image once. The upload is named by content, so
even a warm pod that already holds the image from an earlier run has nothing written again.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from typing import Any

from rp_pipeline.fleet.state import PlannedVideo
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.video_requests.start_image import StartImage, load_stored

# Downloaded images kept for the other pods of the run; at most this many bytes (LRU).
CACHE_BYTES = 256 * 1024 * 1024

_lock = threading.Lock()
_downloaded: OrderedDict[str, bytes] = OrderedDict()  # sha256 -> bytes
# Per client (so per pod and per thread driving it): sha256 -> the name ComfyUI answered.
_uploaded: weakref.WeakKeyDictionary[ComfyUIClient, dict[str, str]] = weakref.WeakKeyDictionary()


def ensure_start_image(comfy: ComfyUIClient, r2: Any, video: PlannedVideo) -> dict[str, Any]:
    """The API JSON to queue for `video` on `comfy`'s pod: as planned, with its start image
    (if any) uploaded there first. Raises ComfyUIError if the pod refuses the upload,
    StartImageError if the image in R2 is missing or not what the request names."""
    facts = video.request.get("start_image")
    if not facts:
        return video.api_json
    image = StartImage.from_dict(facts)
    with _lock:
        name = _uploaded.get(comfy, {}).get(image.sha256)
    if name is None:
        name = comfy.upload_image(_image_bytes(r2, image), image.suffix)
        with _lock:
            _uploaded.setdefault(comfy, {})[image.sha256] = name
    if name == image.upload_name:
        return video.api_json
    # ComfyUI found another file under the planned name (not ours) and renamed the upload.
    api = copy.deepcopy(video.api_json)
    for node in api.values():
        inputs = node.get("inputs") or {}
        if node.get("class_type") == "LoadImage" and inputs.get("image") == image.upload_name:
            inputs["image"] = name
    return api


def _image_bytes(r2: Any, image: StartImage) -> bytes:
    with _lock:
        data = _downloaded.get(image.sha256)
        if data is not None:
            _downloaded.move_to_end(image.sha256)
            return data
    data = load_stored(r2, image)
    with _lock:
        _downloaded[image.sha256] = data
        while sum(len(v) for v in _downloaded.values()) > CACHE_BYTES and len(_downloaded) > 1:
            _downloaded.popitem(last=False)
    return data
