"""Which model files a pod needs, and where each comes from.

One manifest entry per line, whitespace separated:
    GROUP  TIER  SOURCE  PATH_IN_SOURCE  SUBDIR  MIN_MB  SHA256
GROUP  wan720p (WAN_720P=true); lora for the run's LoRAs (rp_agent.models.loras)
TIER   any, fp8 or bf16: an fp8/bf16 entry is fetched only on that GPU tier
SOURCE a Hugging Face repo id; civitai:<model version id>; hf-path:<repo>/resolve/<rev>/<file>
       (a Hugging Face file at a pinned revision); or an http(s) URL. For the last three
       PATH_IN_SOURCE is the file name to save as.
MIN_MB a floor just under the published size: catches truncated and HTML error bodies early
SHA256 the pinned digest, or "-": the hub's own digest is used then (Hugging Face: the LFS
       object's sha256 from a HEAD on the resolve URL; CivitAI: the model version's files).
File names and URLs are those of the official ComfyUI WAN 2.2 templates
(comfyui-workflow-templates): exactly the files the shipped workflows load.

No TurboWan2.2 weights: no shipped workflow loads them, because no maintained ComfyUI node
package runs TurboDiffusion's checkpoints (docs/custom-nodes-and-loras.md says what would be
needed). ENABLE_TURBODIFFUSION is still read, and only says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

BUILTIN_MANIFEST = """\
wan720p any  Comfy-Org/Wan_2.1_ComfyUI_repackaged  split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors  text_encoders  6000  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/vae/wan_2.1_vae.safetensors  vae  200  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/vae/wan2.2_vae.safetensors  vae  1200  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors  diffusion_models  9000  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors  loras  500  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors  loras  500  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors  loras  500  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors  loras  500  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors  diffusion_models  26000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors  diffusion_models  26000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors  diffusion_models  26000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors  diffusion_models  26000  -
"""

# Weights at least this large (GiB of GPU memory) run unquantized on the bf16 tier.
BF16_MIN_GPU_GIB = 70
GROUP_FLAGS = {"wan720p": "WAN_720P"}
TURBO_FLAG = "ENABLE_TURBODIFFUSION"
TURBO_NOTE = (
    "ENABLE_TURBODIFFUSION=true: nothing to download; no shipped workflow loads TurboWan2.2 "
    "weights (no maintained ComfyUI node package runs them; see docs/custom-nodes-and-loras.md)"
)


class ManifestError(ValueError):
    """A manifest line or setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Entry:
    group: str
    tier: str
    source: str
    path: str
    subdir: str
    min_mb: int
    sha256: str | None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def relpath(self) -> str:
        """Where the file lives under MODELS_DIR, e.g. `vae/wan2.2_vae.safetensors`."""
        return f"{self.subdir}/{self.name}"

    @property
    def kind(self) -> str:
        if self.source.startswith("civitai:"):
            return "civitai"
        if self.source.startswith(("http://", "https://")):
            return "url"
        return "hf"

    def url(self, env: Mapping[str, str]) -> str:
        if self.kind == "civitai":
            base = env.get("CIVITAI_ENDPOINT") or "https://civitai.com"
            return f"{base.rstrip('/')}/api/download/models/{self.source.removeprefix('civitai:')}"
        if self.kind == "url":
            return self.source
        base = env.get("HF_ENDPOINT") or "https://huggingface.co"
        if self.source.startswith("hf-path:"):
            return f"{base.rstrip('/')}/{self.source.removeprefix('hf-path:').lstrip('/')}"
        return f"{base.rstrip('/')}/{self.source}/resolve/main/{self.path}"


def parse_manifest(text: str) -> list[Entry]:
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 6:
            fields.append("-")
        if len(fields) != 7 or not fields[5].isdigit():
            raise ManifestError(
                f"manifest line {number} needs GROUP TIER SOURCE PATH SUBDIR MIN_MB [SHA256]: {line!r}"
            )
        group, tier, source, path, subdir, min_mb, sha = fields
        digest = None if sha == "-" else sha.lower()
        if digest is not None and (
            len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest)
        ):
            raise ManifestError(f"manifest line {number}: SHA256 must be 64 hex digits or '-'")
        entries.append(Entry(group, tier, source, path, subdir, int(min_mb), digest))
    return entries


def load_manifest(env: Mapping[str, str]) -> list[Entry]:
    path = env.get("MODELS_MANIFEST")
    if not path:
        return parse_manifest(BUILTIN_MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_manifest(handle.read())
    except OSError as exc:
        raise ManifestError(f"MODELS_MANIFEST {path}: {exc.strerror}") from None


def first_gpu_mib() -> int | None:
    """Memory of the first GPU per nvidia-smi (reading every line it prints), or None."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.splitlines()
    digits = "".join(c for c in lines[0] if c.isdigit()) if lines else ""
    return int(digits) if digits else None


def resolve_tier(env: Mapping[str, str]) -> str:
    """fp8 or bf16. An explicit GPU_TIER wins; auto reads the first GPU's memory and falls back
    to fp8 (the smaller download that fits every supported GPU) when it cannot."""
    tier = env.get("GPU_TIER") or "auto"
    if tier in ("fp8", "bf16"):
        return tier
    if tier != "auto":
        raise ManifestError(f"GPU_TIER must be auto, fp8 or bf16 (got '{tier}')")
    mib = first_gpu_mib()
    return "bf16" if mib is not None and mib >= BF16_MIN_GPU_GIB * 1024 else "fp8"


def select(entries: list[Entry], tier: str, env: Mapping[str, str]) -> list[Entry]:
    enabled = {group for group, flag in GROUP_FLAGS.items() if env.get(flag, "false") == "true"}
    return [e for e in entries if e.group in enabled and e.tier in ("any", tier)]
