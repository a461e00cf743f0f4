"""The stand-in's node catalogue: a trimmed copy of a real ComfyUI `/object_info` answer.

`object_info.json` beside this module was cut from the recording of ComfyUI 0.3.64
(`object_info_full.body.json` of the recorded transcripts, see COMFYUI_REAL_DIR) down to the nodes our shipped WAN 2.2
workflows and the recorded fixtures use, plus a hand-written `VHS_VideoCombine` (a custom node).
Model-file combos are empty in the recording (no weights were installed); the stand-in fills
them from a configurable "installed models" table so the shipped workflows validate by default
and a pod with missing models can be simulated.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

_CATALOGUE_PATH = Path(__file__).with_name("object_info.json")

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

# Which combo input lists which model folder (as ComfyUI's folder_paths does).
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
}

# VAELoader always offers these on top of the files (ComfyUI adds pixel_space itself).
_VAE_BUILTINS = ["pixel_space"]


def load_base_catalogue() -> dict[str, Any]:
    with _CATALOGUE_PATH.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _set_combo_options(spec: list[Any], options: list[str]) -> None:
    """Replace the option list of a combo input spec in either of ComfyUI's two spellings."""
    if spec and isinstance(spec[0], list):
        spec[0] = list(options)
    elif spec and spec[0] == "COMBO":
        spec[1]["options"] = list(options)


def build_catalogue(models: dict[str, list[str]], input_files: list[str]) -> dict[str, Any]:
    """The `/object_info` body for the given installed models and input-dir files."""
    catalogue = copy.deepcopy(load_base_catalogue())
    for (node, name), folder in MODEL_INPUTS.items():
        info = catalogue.get(node)
        if info is None:
            continue
        options = sorted(models.get(folder, []))
        if node == "VAELoader":
            options = options + _VAE_BUILTINS
        spec = info["input"]["required"].get(name)
        if spec is not None:
            _set_combo_options(spec, options)
    load_image = catalogue.get("LoadImage")
    if load_image is not None:
        _set_combo_options(load_image["input"]["required"]["image"], sorted(input_files))
    return catalogue


def combo_options(spec: list[Any]) -> list[Any] | None:
    """The options of a combo input spec, or None when the input is not a combo."""
    if spec and isinstance(spec[0], list):
        return list(spec[0])
    if spec and spec[0] == "COMBO":
        return list(spec[1].get("options", []))
    return None
