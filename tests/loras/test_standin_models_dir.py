"""The stand-in lists a pod's model files as ComfyUI's folder_paths does: files under
<models>/<folder>/ (subfolders as `sub/name`), only model extensions (no `.part` of a download
in progress), read at each request, so a LoRA fetched at boot validates."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from rp_devstack.comfyui_standin.catalogue import MODELS_DIR_ENV
from rp_devstack.comfyui_standin.standin import ComfyStandin


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_files_in_the_models_dir_become_combo_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    (models / "loras" / "team").mkdir(parents=True)
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    standin = ComfyStandin(tmp_path / "out", input_dir=tmp_path / "in", temp_dir=tmp_path / "tmp")
    base = standin.start()
    try:
        assert "mine.safetensors" not in get(f"{base}/models/loras")  # type: ignore[operator]
        (models / "loras" / "mine.safetensors").write_bytes(b"x")
        (models / "loras" / "team" / "style.safetensors").write_bytes(b"x")
        (models / "loras" / "big.safetensors.part").write_bytes(b"x")
        (models / "loras" / "notes.txt").write_text("x")
        listed = get(f"{base}/models/loras")
        assert isinstance(listed, list)
        assert {"mine.safetensors", "team/style.safetensors"} <= set(listed)
        assert not any(name.endswith((".part", ".txt")) for name in listed)
        info = get(f"{base}/object_info/LoraLoaderModelOnly")
        options = info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0]  # type: ignore[index]
        assert "mine.safetensors" in options
        # the built-in names stay (the shipped workflows' lightx2v LoRAs)
        assert any("lightx2v" in name for name in options)
    finally:
        standin.stop()
