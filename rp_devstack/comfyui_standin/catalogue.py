"""The stand-in's node catalogue: what a real ComfyUI answers on `/object_info`.

Layers, later ones replacing earlier entries of the same node class:
1. `object_info.json` beside this module: the whole `/object_info` answer of a bare ComfyUI 0.3.64
   (495 core nodes, recorded byte for byte), so every core node validates as on the real server.
2. `custom_nodes.json` beside it: custom nodes the stand-in plays as installed (a hand-written
   `VHS_VideoCombine`, VideoHelperSuite's video writer).
3. Snapshot files named by `COMFYUI_STANDIN_CATALOGUE` (several joined with the path separator,
   `:`) or given to `ComfyStandin(catalogues=...)`: the `/object_info` answer of a ComfyUI with
   more custom nodes installed, saved as JSON (`curl .../object_info > snapshot.json`). Their
   nodes validate like core ones and run generically (see `executor`).

Model-file combos are empty in the recording (no weights were installed); the stand-in fills
them from a configurable "installed models" table so the shipped workflows validate by default
and a pod with missing models can be simulated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

CORE_CATALOGUE = Path(__file__).with_name("object_info.json")
CUSTOM_NODES = Path(__file__).with_name("custom_nodes.json")
CATALOGUE_ENV = "COMFYUI_STANDIN_CATALOGUE"
# What every node entry of an `/object_info` answer has; a snapshot without them is refused.
_NODE_KEYS = ("input", "output", "name")

# Model files the stand-in "has" by default: exactly what the shipped workflows load.
DEFAULT_MODELS: dict[str, list[str]] = {
    "diffusion_models": [
        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
        "wan2.2_ti2v_5B_fp16.safetensors",
    ],
    "text_encoders": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors"],
    "vae": ["wan_2.1_vae.safetensors", "wan2.2_vae.safetensors"],
    "loras": [
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    ],
    "clip_vision": ["clip_vision_h.safetensors"],
    "upscale_models": ["tiny_esrgan_x2_random.safetensors"],
    "checkpoints": [],
}

# The folder names `GET /models` lists (recorded order).
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
]

# The models folder of a local pod whose files the stand-in lists on top of DEFAULT_MODELS.
MODELS_DIR_ENV = "COMFYUI_STANDIN_MODELS_DIR"
# ComfyUI's folder_paths.supported_pt_extensions: other files in a model folder are not listed.
MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
)

# Which combo input lists which model folder (as ComfyUI's folder_paths does).
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LoraLoader", "lora_name"): "loras",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
}

# Nodes whose `image` lists the image files of input/ and checks only that the file exists.
IMAGE_INPUT_NODES = ("LoadImage", "LoadImageMask")

# VAELoader always offers these on top of the files (ComfyUI adds pixel_space itself).
_VAE_BUILTINS = ["pixel_space"]


class CatalogueError(ValueError):
    """A catalogue snapshot that cannot be used; the message says which file and why."""


def snapshot_paths_from_env() -> list[Path]:
    """The snapshot files `COMFYUI_STANDIN_CATALOGUE` names (none when unset)."""
    value = os.environ.get(CATALOGUE_ENV, "")
    return [Path(part) for part in value.split(os.pathsep) if part.strip()]


def read_snapshot(path: Path) -> dict[str, Any]:
    """One `/object_info` answer saved as JSON: {node class: node info}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(
            f"catalogue snapshot {path}: cannot read it ({exc.strerror})"
        ) from None
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"catalogue snapshot {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CatalogueError(
            f"catalogue snapshot {path}: expected an /object_info answer (an object of nodes)"
        )
    for name, info in data.items():
        missing = [k for k in _NODE_KEYS if not isinstance(info, dict) or k not in info]
        if missing:
            raise CatalogueError(
                f"catalogue snapshot {path}: node {name!r} lacks {', '.join(missing)}; "
                "save the whole GET /object_info answer of a running ComfyUI"
            )
    return data


@cache
def _merged(paths: tuple[Path, ...]) -> dict[str, Any]:
    catalogue: dict[str, Any] = {}
    for path in paths:
        catalogue.update(read_snapshot(path))
    return catalogue


def load_base_catalogue(snapshots: Sequence[Path] = ()) -> dict[str, Any]:
    """Core nodes, the stand-in's custom nodes, then `snapshots` over them. Read once per set
    of files; callers must not modify the answer (`build_catalogue` copies what it changes)."""
    return _merged((CORE_CATALOGUE, CUSTOM_NODES, *(Path(p).resolve() for p in snapshots)))


def _set_combo_options(spec: list[Any], options: list[str]) -> None:
    """Replace the option list of a combo input spec in either of ComfyUI's two spellings."""
    if spec and isinstance(spec[0], list):
        spec[0] = list(options)
    elif spec and spec[0] == "COMBO":
        spec[1]["options"] = list(options)


def build_catalogue(
    models: dict[str, list[str]], input_files: list[str], snapshots: Sequence[Path] = ()
) -> dict[str, Any]:
    """The `/object_info` body for the given installed models, input-dir files and extra
    snapshots. Entries with file lists are copied before they are filled in."""
    catalogue = dict(load_base_catalogue(snapshots))
    for (node, name), folder in MODEL_INPUTS.items():
        info = catalogue.get(node)
        if info is None or name not in info["input"].get("required", {}):
            continue
        options = sorted(models.get(folder, []))
        if node == "VAELoader":
            options = options + _VAE_BUILTINS
        info = catalogue[node] = json.loads(json.dumps(info))
        _set_combo_options(info["input"]["required"][name], options)
    for node in IMAGE_INPUT_NODES:
        info = catalogue.get(node)
        if info is not None:
            info = catalogue[node] = json.loads(json.dumps(info))
            _set_combo_options(info["input"]["required"]["image"], sorted(input_files))
    return catalogue


def combo_options(spec: list[Any]) -> list[Any] | None:
    """The options of a combo input spec, or None when the input is not a combo."""
    if spec and isinstance(spec[0], list):
        return list(spec[0])
    if spec and spec[0] == "COMBO":
        return list(spec[1].get("options", []))
    return None
