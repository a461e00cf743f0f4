"""docker/download_models.sh against a real local HTTP server standing in for the model hub.

Each test writes a small manifest (MODELS_MANIFEST) in the script's own format so files of a
megabyte or two exercise the same code paths as the 14 GB weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ModelHub

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "docker" / "download_models.sh"
MIB = 1024 * 1024
REPO = "Org/repo"


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def run_script(
    tmp_path: Path,
    hub: ModelHub,
    manifest: list[str],
    *args: str,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    manifest_file = tmp_path / "manifest.txt"
    manifest_file.write_text("\n".join(manifest) + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MODELS_DIR": str(tmp_path / "models"),
        "HF_ENDPOINT": hub.base_url,
        "CIVITAI_ENDPOINT": hub.base_url,
        "MODELS_MANIFEST": str(manifest_file),
        "WAN_720P": "true",
        "GPU_TIER": "fp8",
        "DOWNLOAD_ATTEMPTS": "3",
        **(extra_env or {}),
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def hf_path(name: str) -> str:
    return f"/{REPO}/resolve/main/files/{name}"


def entry(name: str, min_mb: int = 1, sha: str = "-", tier: str = "any", group: str = "wan720p"):
    return f"{group} {tier} {REPO} files/{name} diffusion_models {min_mb} {sha}"


def test_bash_syntax_is_valid() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_downloads_verifies_and_places_selected_files(tmp_path: Path, model_hub: ModelHub) -> None:
    data = payload(2 * MIB)
    model_hub.add(hf_path("a.safetensors"), data)
    model_hub.add(hf_path("b_fp8.safetensors"), payload(MIB + 5, seed=2))
    model_hub.add(hf_path("b_fp16.safetensors"), payload(MIB + 5, seed=3))
    model_hub.add(hf_path("turbo.pth"), payload(MIB + 5, seed=4))
    manifest = [
        "# comments and blank lines are ignored",
        "",
        entry("a.safetensors", sha=hashlib.sha256(data).hexdigest()),
        entry("b_fp8.safetensors", tier="fp8"),
        entry("b_fp16.safetensors", tier="bf16"),
        entry("turbo.pth", group="turbo"),
    ]

    result = run_script(tmp_path, model_hub, manifest)

    assert result.returncode == 0, result.stderr
    models = tmp_path / "models" / "diffusion_models"
    assert (models / "a.safetensors").read_bytes() == data
    assert (models / "b_fp8.safetensors").exists()
    assert not (models / "b_fp16.safetensors").exists()  # other GPU tier
    assert not (models / "turbo.pth").exists()  # ENABLE_TURBODIFFUSION unset
    assert not list(models.glob("*.part"))


def test_present_verified_file_is_skipped_without_a_request(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    data = payload(MIB + 10)
    model_hub.add(hf_path("a.safetensors"), data)
    manifest = [entry("a.safetensors", sha=hashlib.sha256(data).hexdigest())]
    assert run_script(tmp_path, model_hub, manifest).returncode == 0
    model_hub.requests.clear()

    result = run_script(tmp_path, model_hub, manifest)

    assert result.returncode == 0, result.stderr
    assert model_hub.requests == []
    assert "present  diffusion_models/a.safetensors" in result.stdout


def test_truncated_file_is_caught_and_named(tmp_path: Path, model_hub: ModelHub) -> None:
    # The hub answers 200 with a body far below the expected size (an error page, a cut upload).
    model_hub.add(hf_path("big.safetensors"), payload(300_000))

    result = run_script(tmp_path, model_hub, [entry("big.safetensors", min_mb=2)])

    assert result.returncode != 0
    assert "big.safetensors" in result.stderr
    assert "too small" in result.stderr
    assert not (tmp_path / "models" / "diffusion_models" / "big.safetensors").exists()


def test_interrupted_transfer_is_resumed_with_a_range_request(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    data = payload(3 * MIB)
    path = hf_path("cut.safetensors")
    model_hub.add(path, data, cut_at=MIB + 123)
    manifest = [entry("cut.safetensors", min_mb=2, sha=hashlib.sha256(data).hexdigest())]

    result = run_script(tmp_path, model_hub, manifest)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "diffusion_models" / "cut.safetensors").read_bytes() == data
    ranges = [r.range for r in model_hub.requests_for(path)]
    assert ranges == [None, f"bytes={MIB + 123}-"]


def test_partial_from_an_earlier_pod_is_continued(tmp_path: Path, model_hub: ModelHub) -> None:
    data = payload(2 * MIB)
    path = hf_path("w.safetensors")
    model_hub.add(path, data)
    part = tmp_path / "models" / "diffusion_models" / "w.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:700_000])

    result = run_script(tmp_path, model_hub, [entry("w.safetensors")])

    assert result.returncode == 0, result.stderr
    assert [r.range for r in model_hub.requests_for(path)] == ["bytes=700000-"]
    assert part.with_suffix("").read_bytes() == data


def test_incomplete_file_under_final_name_is_resumed(tmp_path: Path, model_hub: ModelHub) -> None:
    data = payload(2 * MIB)
    path = hf_path("old.safetensors")
    model_hub.add(path, data)
    dest = tmp_path / "models" / "diffusion_models" / "old.safetensors"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data[:MIB])  # a copy an older script left behind, below the floor

    result = run_script(tmp_path, model_hub, [entry("old.safetensors", min_mb=2)])

    assert result.returncode == 0, result.stderr
    assert [r.range for r in model_hub.requests_for(path)] == [f"bytes={MIB}-"]
    assert dest.read_bytes() == data


def test_server_without_range_support_restarts_from_zero(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    data = payload(MIB + 99)
    model_hub.add(hf_path("nr.safetensors"), data, ignore_range=True)
    part = tmp_path / "models" / "diffusion_models" / "nr.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes")

    result = run_script(tmp_path, model_hub, [entry("nr.safetensors")])

    assert result.returncode == 0, result.stderr
    assert part.with_suffix("").read_bytes() == data


def test_sha256_mismatch_is_caught_and_partial_discarded(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    model_hub.add(hf_path("s.safetensors"), payload(MIB + 1))
    wrong = hashlib.sha256(b"something else").hexdigest()

    result = run_script(tmp_path, model_hub, [entry("s.safetensors", sha=wrong)])

    assert result.returncode != 0
    assert "s.safetensors" in result.stderr
    assert "sha256 mismatch" in result.stderr
    assert not list((tmp_path / "models" / "diffusion_models").iterdir())


def test_missing_file_fails_fast_naming_it(tmp_path: Path, model_hub: ModelHub) -> None:
    good = payload(MIB + 1)
    model_hub.add(hf_path("good.safetensors"), good)
    manifest = [entry("gone.safetensors"), entry("good.safetensors")]

    result = run_script(tmp_path, model_hub, manifest)

    assert result.returncode != 0
    assert "HTTP 404" in result.stderr
    assert "1 model(s) failed: diffusion_models/gone.safetensors" in result.stderr
    assert len(model_hub.requests_for(hf_path("gone.safetensors"))) == 1  # no pointless retries
    # One failure does not stop the others from being fetched.
    assert (tmp_path / "models" / "diffusion_models" / "good.safetensors").exists()


def test_civitai_key_is_sent_as_header_and_never_printed(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    model_hub.add("/api/download/models/12345", payload(MIB + 1))
    secret = "civitai-secret-value-0123456789"
    manifest = ["wan720p any civitai:12345 my_lora.safetensors loras 1 -"]

    result = run_script(tmp_path, model_hub, manifest, extra_env={"CIVITAI_API_KEY": secret})

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "loras" / "my_lora.safetensors").exists()
    [request] = model_hub.requests
    assert request.authorization == f"Bearer {secret}"
    assert secret not in result.stdout + result.stderr
    assert "token" not in request.path


def fake_nvidia_smi(tmp_path: Path, mib: int, gpus: int = 2) -> str:
    """nvidia-smi printing `mib` for each of `gpus` GPUs, one line each as the real one does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ni=0\nwhile [ $i -lt {gpus} ]; do echo {mib}; i=$((i + 1)); done\n")
    tool.chmod(0o755)
    # A process forked elsewhere in this test session (devstack threads) may briefly hold the
    # write handle, and exec then fails with "Text file busy"; the script would read that as
    # "no GPU". Wait until the tool runs before handing it over.
    for _ in range(100):
        try:
            subprocess.run([str(tool)], check=True, capture_output=True)
            break
        except OSError:
            time.sleep(0.05)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_auto_tier_reads_the_first_gpu_however_many_lines_follow(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    # More lines than a pipe holds: a reader that stops after the first line makes the writer
    # die of SIGPIPE every time, not only when the timing is unlucky.
    path_env = fake_nvidia_smi(tmp_path, 81920, gpus=20000)
    manifest = [entry("x_fp8.safetensors", tier="fp8"), entry("x_fp16.safetensors", tier="bf16")]

    result = run_script(
        tmp_path, model_hub, manifest, "--list", extra_env={"GPU_TIER": "auto", "PATH": path_env}
    )

    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "\t" in line]
    assert line.split("\t")[0] == "bf16"


@pytest.mark.parametrize(("gpu_mib", "tier"), [(81920, "bf16"), (49140, "fp8"), (None, "fp8")])
def test_auto_tier_follows_gpu_memory(
    tmp_path: Path, model_hub: ModelHub, gpu_mib: int | None, tier: str
) -> None:
    path_env = fake_nvidia_smi(tmp_path, gpu_mib) if gpu_mib else "/usr/bin:/bin"
    manifest = [entry("x_fp8.safetensors", tier="fp8"), entry("x_fp16.safetensors", tier="bf16")]

    result = run_script(
        tmp_path, model_hub, manifest, "--list", extra_env={"GPU_TIER": "auto", "PATH": path_env}
    )

    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "\t" in line]
    assert line.split("\t")[0] == tier
    wanted = "x_fp16" if tier == "bf16" else "x_fp8"
    assert wanted in line
    assert model_hub.requests == []


def test_unknown_gpu_tier_is_rejected(tmp_path: Path, model_hub: ModelHub) -> None:
    result = run_script(tmp_path, model_hub, [], extra_env={"GPU_TIER": "fp4"})
    assert result.returncode != 0
    assert "GPU_TIER must be auto, fp8 or bf16" in result.stderr


def real_plan(**env: str) -> dict[str, str]:
    """The built-in manifest's plan: destination file name -> URL."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "--list"],
        env={"PATH": os.environ["PATH"], "MODELS_DIR": "/m", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    return {Path(dest).name: url for _, dest, url in rows}


def template_models(template_file: str) -> dict[str, str]:
    templates = pytest.importorskip("comfyui_workflow_templates_json")
    path = Path(templates.__file__).parent / "templates" / template_file
    found: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "url" in node and "name" in node:
                found[node["name"]] = node["url"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(path.read_text()))
    return found


@pytest.mark.parametrize(
    "template",
    ["video_wan2_2_14B_t2v.json", "video_wan2_2_14B_i2v.json", "video_wan2_2_5B_ti2v.json"],
)
def test_real_manifest_has_every_model_of_the_official_wan22_templates(template: str) -> None:
    plan = real_plan(WAN_720P="true", GPU_TIER="fp8")
    for name, url in template_models(template).items():
        assert plan.get(name) == url, f"{name} from {template} missing or with another URL"


def test_real_manifest_selects_by_flag_and_tier() -> None:
    assert real_plan() == {}  # nothing enabled: nothing to download
    bf16 = real_plan(WAN_720P="true", ENABLE_TURBODIFFUSION="true", GPU_TIER="bf16")
    assert "wan2.2_t2v_high_noise_14B_fp16.safetensors" in bf16
    assert "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors" not in bf16
    assert "TurboWan2.2-I2V-A14B-high-720P.pth" in bf16
    fp8 = real_plan(ENABLE_TURBODIFFUSION="true", GPU_TIER="fp8")
    assert fp8 == {
        name: f"https://huggingface.co/TurboDiffusion/TurboWan2.2-I2V-A14B-720P/resolve/main/{name}"
        for name in (
            "TurboWan2.2-I2V-A14B-high-720P-quant.pth",
            "TurboWan2.2-I2V-A14B-low-720P-quant.pth",
        )
    }


def shipped_workflow_model_names() -> set[str]:
    """Model file names referenced by the workflows this repo ships (API format JSON)."""
    names: set[str] = set()
    for path in (REPO_ROOT / "rp_pipeline" / "workflows").rglob("*.json"):
        graph = json.loads(path.read_text())
        nodes = graph.values() if isinstance(graph, dict) else []
        for node in nodes:
            inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
            for key in ("unet_name", "clip_name", "vae_name", "lora_name", "ckpt_name"):
                value = inputs.get(key)
                if isinstance(value, str):
                    names.add(value)
    return names


def test_shipped_workflows_only_use_models_the_image_downloads() -> None:
    names = shipped_workflow_model_names()
    if not names:
        pytest.skip("no API-format workflows with model loaders in rp_pipeline/workflows yet")
    plan = real_plan(WAN_720P="true", GPU_TIER="fp8")
    assert sorted(names - plan.keys()) == []


@pytest.mark.parametrize(
    ("size", "min_mb", "sha", "ok", "reason"),
    [
        (MIB, 1, None, True, ""),
        (MIB - 1, 1, None, False, "too small"),
        (MIB, 1, "right", True, ""),
        (MIB, 1, "0" * 64, False, "sha256 mismatch"),
    ],
)
def test_verify_download_function(
    tmp_path: Path, size: int, min_mb: int, sha: str | None, ok: bool, reason: str
) -> None:
    data = payload(size)
    target = tmp_path / "f.bin"
    target.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest().upper() if sha == "right" else sha
    args = [str(target), str(min_mb)] + ([digest] if digest else [])
    result = subprocess.run(
        ["bash", "-c", f'source "{SCRIPT}" && verify_download "$@"', "verify", *args],
        capture_output=True,
        text=True,
    )
    assert (result.returncode == 0) is ok
    assert reason in result.stdout


def test_verify_download_reports_a_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", f'source "{SCRIPT}" && verify_download "$1" 1', "v", str(tmp_path / "no")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "missing" in result.stdout


def test_second_downloader_on_a_volume_waits_for_the_first(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    import fcntl

    model_hub.add(hf_path("a.safetensors"), payload(MIB + 1))
    models = tmp_path / "models"
    models.mkdir()
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(entry("a.safetensors") + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "MODELS_DIR": str(models),
        "HF_ENDPOINT": model_hub.base_url,
        "MODELS_MANIFEST": str(manifest),
        "WAN_720P": "true",
        "GPU_TIER": "fp8",
    }
    held = open(models / ".download.lock", "w")  # noqa: SIM115 (released mid-test)
    fcntl.flock(held, fcntl.LOCK_EX)  # "another pod" holds the volume's download lock
    process = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_lines = [process.stdout.readline() for _ in range(2)]
        assert "another pod is downloading to this volume" in first_lines[1]
        assert model_hub.requests == []  # nothing fetched while the lock is held
        fcntl.flock(held, fcntl.LOCK_UN)
        process.wait(timeout=60)
    finally:
        held.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert (models / "diffusion_models" / "a.safetensors").exists()
