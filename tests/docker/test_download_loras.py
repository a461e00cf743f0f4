"""RP_LORAS: the run's LoRAs put into models/loras/ by download_models.sh (rp_agent.models),
from a local hub (Hugging Face / CivitAI behaviour, tests/docker/conftest.py) and a local S3
standing in for R2; sha256 checked and written to the boot status file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rp_agent.models.loras import parse_wants

if TYPE_CHECKING:
    from conftest import ModelHub

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "docker" / "download_models.sh"
HF_FILE = "/owner/style/resolve/0123abcd/wan_style.safetensors"


def body(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // 32 + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(
    tmp_path: Path, hub: ModelHub, loras: list[dict[str, Any]], extra: dict[str, str] | None = None
):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MODELS_DIR": str(tmp_path / "models"),
        "HF_ENDPOINT": hub.base_url,
        "CIVITAI_ENDPOINT": hub.base_url,
        "DOWNLOAD_ATTEMPTS": "2",
        "DOWNLOAD_CHUNK_MB": "1",
        "RP_MODELS_PYTHON": sys.executable,
        "RP_BOOT_STATUS": str(tmp_path / "boot.json"),
        "RP_LORAS": json.dumps(loras),
        **(extra or {}),
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )


def boot_loras(tmp_path: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((tmp_path / "boot.json").read_text())
    return {item["name"]: item for item in doc["loras"]}


def test_hf_civitai_r2_and_file_loras_land_verified_once_per_volume(
    tmp_path: Path, model_hub: ModelHub, r2_settings: Any, r2_client: Any
) -> None:
    hf, civ, r2, local = body(3 << 20, 1), body(200_000, 2), body(300_000, 3), body(1000, 4)
    model_hub.add(HF_FILE, hf)
    model_hub.add("/api/download/models/4242", civ)
    model_hub.json_docs["/api/v1/model-versions/4242"] = json.dumps(
        {"files": [{"primary": True, "hashes": {"SHA256": sha(civ).upper()}}]}
    ).encode()
    r2_client.put_object(
        Bucket=r2_settings.bucket, Key="loras/team/r2_style.safetensors", Body=r2,
        Metadata={"sha256": sha(r2)},
    )  # fmt: skip
    (tmp_path / "models" / "loras").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "mine.safetensors").write_bytes(local)
    loras = [
        {"name": "wan_style.safetensors", "source": "hf",
         "location": "https://huggingface.co" + HF_FILE},
        {"name": "civitai_4242.safetensors", "source": "civitai",
         "location": "https://civitai.com/api/download/models/4242"},
        {"name": "r2_style.safetensors", "source": "r2",
         "location": "loras/team/r2_style.safetensors"},
        {"name": "mine.safetensors", "source": "file", "sha256": sha(local)},
    ]  # fmt: skip
    r2_env = {
        "R2_ENDPOINT": r2_settings.endpoint, "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
        "CIVITAI_API_KEY": "civ-secret-123",
    }  # fmt: skip
    result = run(tmp_path, model_hub, loras, r2_env)
    assert result.returncode == 0, result.stderr
    assert "civ-secret-123" not in result.stdout + result.stderr
    folder = tmp_path / "models" / "loras"
    for name, data in [("wan_style.safetensors", hf), ("civitai_4242.safetensors", civ),
                       ("r2_style.safetensors", r2), ("mine.safetensors", local)]:  # fmt: skip
        assert (folder / name).read_bytes() == data
        assert boot_loras(tmp_path)[name]["sha256"] == sha(data)
        assert boot_loras(tmp_path)[name]["state"] == "ok"
    assert (
        boot_loras(tmp_path)["r2_style.safetensors"]["location"]
        == "loras/team/r2_style.safetensors"
    )
    assert (
        model_hub.requests_for("/api/download/models/4242")[0].authorization
        == "Bearer civ-secret-123"
    )
    assert not list(folder.glob("*.part*"))
    # A second boot on the same volume fetches nothing again.
    requests_before = len(model_hub.requests)
    r2_client.delete_object(Bucket=r2_settings.bucket, Key="loras/team/r2_style.safetensors")
    again = run(tmp_path, model_hub, loras, r2_env)
    assert again.returncode == 0, again.stderr
    assert len(model_hub.requests) == requests_before
    assert boot_loras(tmp_path)["r2_style.safetensors"]["sha256"] == sha(r2)


def test_a_wrong_digest_fails_that_lora_only_and_keeps_no_file(
    tmp_path: Path, model_hub: ModelHub, r2_settings: Any, r2_client: Any
) -> None:
    good, bad = body(100_000, 5), body(100_000, 6)
    model_hub.add("/files/good.safetensors", good)
    model_hub.add(HF_FILE, bad, etag="0" * 64)  # the hub publishes another digest
    r2_client.put_object(Bucket=r2_settings.bucket, Key="l/x.safetensors", Body=good)
    loras = [
        {
            "name": "good.safetensors",
            "source": "url",
            "location": model_hub.base_url + "/files/good.safetensors",
        },
        {
            "name": "wan_style.safetensors",
            "source": "hf",
            "location": "https://huggingface.co" + HF_FILE,
        },
        {
            "name": "x.safetensors",
            "source": "r2",
            "location": "l/x.safetensors",
            "sha256": "1" * 64,
        },
        {"name": "absent.safetensors", "source": "file"},
    ]
    r2_env = {
        "R2_ENDPOINT": r2_settings.endpoint, "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
    }  # fmt: skip
    result = run(tmp_path, model_hub, loras, r2_env)
    assert result.returncode == 1
    status = boot_loras(tmp_path)
    assert status["good.safetensors"]["state"] == "ok"
    assert status["good.safetensors"]["sha256"] == sha(good)  # computed: a plain URL has none
    for name in ("wan_style.safetensors", "x.safetensors", "absent.safetensors"):
        assert status[name]["state"] == "failed", name
        assert f"LoRA {name}:" in result.stderr
        assert not (tmp_path / "models" / "loras" / name).exists()
    assert "sha256 mismatch" in status["x.safetensors"]["error"]
    assert "not on the volume" in status["absent.safetensors"]["error"]


def test_bad_rp_loras_is_one_line_and_exit_2_and_the_weights_still_come(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    weights = body(100_000, 9)
    model_hub.add("/Org/repo/resolve/main/w.safetensors", weights)
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("wan720p any Org/repo w.safetensors vae 0 -\n")
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RP_MODELS_PYTHON": sys.executable,
             "MODELS_DIR": str(tmp_path / "models"), "RP_LORAS": "[1]", "WAN_720P": "true",
             "MODELS_MANIFEST": str(manifest), "HF_ENDPOINT": model_hub.base_url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert (tmp_path / "models" / "vae" / "w.safetensors").read_bytes() == weights
    assert result.stderr.strip() == (
        "[models] ERROR: RP_LORAS[0] must be an object with name and source; no LoRA fetched"
    )
    for value, expected in [
        ("not json", "RP_LORAS is not JSON"),
        ('[{"name": "../x", "source": "file"}]', "RP_LORAS[0]: name"),
        ('[{"name": "a.safetensors", "source": "ftp", "location": "x"}]', "source must be"),
    ]:
        result = subprocess.run(
            ["bash", str(SCRIPT), "--list"],
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RP_MODELS_PYTHON": sys.executable,
                 "MODELS_DIR": str(tmp_path / "m"), "RP_LORAS": value},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
    assert parse_wants("") == []
