"""docker/download_models.sh against a real local HTTP server standing in for the model hub.

Each test writes a small manifest (MODELS_MANIFEST) in the script's own format so files of a
megabyte or two exercise the same code paths as the 14 GB weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
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


def script_env(
    tmp_path: Path, hub: ModelHub, manifest_file: Path, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MODELS_DIR": str(tmp_path / "models"),
        "HF_ENDPOINT": hub.base_url,
        "CIVITAI_ENDPOINT": hub.base_url,
        "MODELS_MANIFEST": str(manifest_file),
        "WAN_720P": "true",
        "GPU_TIER": "fp8",
        "DOWNLOAD_ATTEMPTS": "3",
        "DOWNLOAD_CHUNK_MB": "1",
        "RP_MODELS_PYTHON": sys.executable,
        **(extra_env or {}),
    }


def run_script(
    tmp_path: Path,
    hub: ModelHub,
    manifest: list[str],
    *args: str,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    manifest_file = tmp_path / "manifest.txt"
    manifest_file.write_text("\n".join(manifest) + "\n")
    env = script_env(tmp_path, hub, manifest_file, extra_env)
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
    assert not (models / "turbo.pth").exists()  # a group no flag selects
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
    gets = [r for r in model_hub.served_ranges(path) if r != "bytes=0-0"]
    # The range holding the cut is asked for once whole, then only from where it was cut.
    assert gets.count(f"bytes={MIB}-{2 * MIB - 1}") == 1
    assert gets.count(f"bytes={MIB + 123}-{2 * MIB - 1}") == 1
    assert sorted(gets) == sorted(
        [f"bytes=0-{MIB - 1}", f"bytes={MIB}-{2 * MIB - 1}", f"bytes={MIB + 123}-{2 * MIB - 1}",
         f"bytes={2 * MIB}-{3 * MIB - 1}"]
    )  # fmt: skip


def test_large_file_is_fetched_as_parallel_ranges_and_assembled(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    data = payload(6 * MIB + 7, seed=9)
    path = hf_path("big.safetensors")
    model_hub.add(path, data, chunk_delay=0.01)

    result = run_script(
        tmp_path, model_hub, [entry("big.safetensors")], extra_env={"DOWNLOAD_STREAMS": "4"}
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "diffusion_models" / "big.safetensors").read_bytes() == data
    gets = set(model_hub.served_ranges(path)) - {"bytes=0-0"}
    assert len(gets) == 7  # six whole MiB and the 7-byte tail, each once
    assert model_hub.max_in_flight >= 2
    assert not list((tmp_path / "models" / "diffusion_models").glob("*.part*"))


def test_several_files_download_at_once(tmp_path: Path, model_hub: ModelHub) -> None:
    names = [f"f{i}.safetensors" for i in range(3)]
    for i, name in enumerate(names):
        model_hub.add(hf_path(name), payload(MIB + 1, seed=i), chunk_delay=0.02)

    result = run_script(
        tmp_path, model_hub, [entry(n) for n in names], extra_env={"DOWNLOAD_CHUNK_MB": "8"}
    )

    assert result.returncode == 0, result.stderr
    assert model_hub.max_in_flight >= 2  # one range per file, still more than one stream
    for i, name in enumerate(names):
        assert (tmp_path / "models" / "diffusion_models" / name).read_bytes() == payload(
            MIB + 1, seed=i
        )


@pytest.mark.parametrize("signals", [1, 5])
def test_stopped_download_resumes_from_its_part_record(
    tmp_path: Path, model_hub: ModelHub, signals: int
) -> None:
    """A pod stop signals the download (start.sh: its process group, then the process): any
    number of stop signals back to back end it once, with every part's progress kept."""
    data = payload(4 * MIB, seed=5)
    path = hf_path("stop.safetensors")
    model_hub.add(path, data, chunk_delay=0.02)
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(entry("stop.safetensors", sha=hashlib.sha256(data).hexdigest()) + "\n")
    models = tmp_path / "models"
    env = script_env(tmp_path, model_hub, manifest, {"DOWNLOAD_STREAMS": "2"})
    record = models / "diffusion_models" / "stop.safetensors.part.json"
    process = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        # Stop the "pod" once two ranges are complete and the rest are under way.
        while time.monotonic() < deadline:
            done = []
            if record.exists():
                with contextlib.suppress(ValueError):
                    done = [
                        c for c in json.loads(record.read_text())["chunks"] if c[2] == c[1] - c[0]
                    ]
            if len(done) >= 2:
                break
            time.sleep(0.05)
        for _ in range(signals):
            process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "partial files kept for the next start" in out
    chunks = json.loads(record.read_text())["chunks"]
    kept = sum(c[2] for c in chunks)
    assert kept >= 2 * MIB
    model_hub.requests.clear()
    model_hub.files[path].chunk_delay = 0

    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert (models / "diffusion_models" / "stop.safetensors").read_bytes() == data
    fetched = 0
    for r in model_hub.served_ranges(path):
        assert r is not None
        first, _, last = r.removeprefix("bytes=").partition("-")
        fetched += int(last) - int(first) + 1
    assert fetched <= 4 * MIB - kept + 1  # only what the first run had not written (+ probe)
    assert not record.exists()


def test_hub_digest_mismatch_deletes_the_part_and_names_both_digests(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    # Right size, wrong bytes: only the digest can tell.
    data = payload(2 * MIB, seed=7)
    advertised = hashlib.sha256(b"the published file").hexdigest()
    model_hub.add(hf_path("w.safetensors"), data, etag=advertised)

    result = run_script(tmp_path, model_hub, [entry("w.safetensors")])

    assert result.returncode != 0
    assert "diffusion_models/w.safetensors" in result.stderr
    assert f"got {hashlib.sha256(data).hexdigest()}" in result.stderr
    assert f"expected {advertised} (from the hub)" in result.stderr
    assert not list((tmp_path / "models" / "diffusion_models").iterdir())


def test_hub_digest_is_read_from_a_head_like_huggingface_hub(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    data = payload(MIB + 3, seed=8)
    path = hf_path("h.safetensors")
    model_hub.add(path, data)
    secret = "hf_secret_token_value_0123456789"

    result = run_script(
        tmp_path, model_hub, [entry("h.safetensors")], extra_env={"HF_TOKEN": secret}
    )

    assert result.returncode == 0, result.stderr
    [head] = model_hub.requests_for(path, "HEAD")
    assert head.path == path  # not followed to the CDN: the 302 carries X-Linked-Etag
    marker = json.loads((tmp_path / "models" / ".verified.json").read_text())
    assert marker["diffusion_models/h.safetensors"]["digest"] == hashlib.sha256(data).hexdigest()
    # The token goes to the hub only, never to the CDN on another host, never into the log.
    for request in model_hub.requests:
        on_hub = request.host == f"127.0.0.1:{model_hub.port}"
        assert request.authorization == (f"Bearer {secret}" if on_hub else None)
    assert any(r.host.startswith("localhost") for r in model_hub.requests)
    assert secret not in result.stdout + result.stderr


def test_marker_skips_hashing_and_a_changed_file_is_verified_again(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    data = payload(MIB + 10, seed=3)
    model_hub.add(hf_path("m.safetensors"), data)
    manifest = [entry("m.safetensors")]
    assert run_script(tmp_path, model_hub, manifest).returncode == 0
    target = tmp_path / "models" / "diffusion_models" / "m.safetensors"
    model_hub.requests.clear()

    warm = run_script(tmp_path, model_hub, manifest)
    assert warm.returncode == 0, warm.stderr
    assert "checking" not in warm.stdout  # size and mtime match the marker: not read
    assert model_hub.requests == []

    os.utime(target, (1, 1))  # same bytes, another mtime: hashed against the marker, no request
    touched = run_script(tmp_path, model_hub, manifest)
    assert touched.returncode == 0, touched.stderr
    assert "checking diffusion_models/m.safetensors" in touched.stdout
    assert model_hub.requests == []

    damaged = bytearray(data)
    damaged[100] ^= 0xFF
    target.write_bytes(bytes(damaged))  # same size, other bytes: caught and fetched again
    repaired = run_script(tmp_path, model_hub, manifest)
    assert repaired.returncode == 0, repaired.stderr
    assert "sha256 mismatch" in repaired.stderr
    assert target.read_bytes() == data


def test_progress_lines_and_boot_status_file(tmp_path: Path, model_hub: ModelHub) -> None:
    data = payload(3 * MIB, seed=4)
    model_hub.add(hf_path("p.safetensors"), data, chunk_delay=0.05)
    status = tmp_path / "state" / "boot.json"

    result = run_script(
        tmp_path,
        model_hub,
        [entry("p.safetensors")],
        extra_env={"PROGRESS_INTERVAL_S": "0.2", "RP_BOOT_STATUS": str(status)},
    )

    assert result.returncode == 0, result.stderr
    total = re.compile(
        r"^\[models\] downloading \d+\.\d/0\.0 GB, \d+\.\d MB/s, (\d+ s|\d+ min|\?) left, 0/1 files$"
    )
    per_file = re.compile(
        r"^\[models\] file diffusion_models/p\.safetensors \d+\.\d/0\.0 GB, \d+\.\d MB/s, .* left$"
    )
    lines = result.stdout.splitlines()
    assert sum(bool(total.match(line)) for line in lines) >= 2
    assert any(per_file.match(line) for line in lines)
    doc = json.loads(status.read_text())
    assert doc["phases"]["models_started"] <= doc["phases"]["models_verified"]
    models = doc["models"]
    assert models["state"] == "verified"
    assert models["bytes_done"] == models["bytes_total"] == len(data)
    assert models["files_total"] == models["files_done"] == 1


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
    # The size probe, then the file's two 1 MiB ranges.
    served = model_hub.served_ranges("/api/download/models/12345")
    assert served[0] == "bytes=0-0"
    assert sorted(served[1:]) == sorted([f"bytes=0-{MIB - 1}", f"bytes={MIB}-{MIB}"])
    for request in model_hub.requests:
        assert request.authorization == f"Bearer {secret}"
        assert "token" not in request.path
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("published_matches", [True, False])
def test_civitai_file_is_checked_against_the_model_versions_digest(
    tmp_path: Path, model_hub: ModelHub, published_matches: bool
) -> None:
    data = payload(MIB + 1, seed=6)
    model_hub.add("/api/download/models/777", data)
    published = hashlib.sha256(data if published_matches else b"other").hexdigest().upper()
    model_hub.json_docs["/api/v1/model-versions/777"] = json.dumps(
        {"id": 777, "files": [{"primary": True, "hashes": {"SHA256": published}}]}
    ).encode()
    manifest = ["wan720p any civitai:777 lora.safetensors loras 1 -"]

    result = run_script(tmp_path, model_hub, manifest)

    target = tmp_path / "models" / "loras" / "lora.safetensors"
    if published_matches:
        assert result.returncode == 0, result.stderr
        assert target.read_bytes() == data
    else:
        assert result.returncode != 0
        assert f"expected {published.lower()} (from the civitai)" in result.stderr
        assert not target.exists()


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
        env={
            "PATH": os.environ["PATH"],
            "MODELS_DIR": "/m",
            "RP_MODELS_PYTHON": sys.executable,
            **env,
        },
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
    bf16 = real_plan(WAN_720P="true", GPU_TIER="bf16")
    assert "wan2.2_t2v_high_noise_14B_fp16.safetensors" in bf16
    assert "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors" not in bf16


def test_turbodiffusion_flag_downloads_nothing_no_workflow_loads(tmp_path: Path) -> None:
    """No shipped workflow loads TurboWan2.2 weights, so the flag fetches none of its ~29 GB
    and says why instead."""
    assert real_plan(ENABLE_TURBODIFFUSION="true", GPU_TIER="fp8") == {}
    assert real_plan(WAN_720P="true", ENABLE_TURBODIFFUSION="true", GPU_TIER="bf16") == real_plan(
        WAN_720P="true", GPU_TIER="bf16"
    )
    result = subprocess.run(
        ["bash", str(SCRIPT), "--list"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RP_MODELS_PYTHON": sys.executable,
             "MODELS_DIR": str(tmp_path / "m"), "ENABLE_TURBODIFFUSION": "true", "GPU_TIER": "fp8"},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "no shipped workflow loads TurboWan2.2" in result.stdout
    assert ".pth" not in result.stdout
    assert not any("turbo" in name.lower() for name in shipped_workflow_model_names())


def shipped_workflow_model_names() -> set[str]:
    """Model file names referenced by the workflows this repo ships (API format JSON)."""
    names: set[str] = set()
    for path in (REPO_ROOT / "workflows").glob("*.json"):
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
    assert names, "the shipped workflows name no model file: did workflows/ move?"
    plan = real_plan(WAN_720P="true", GPU_TIER="fp8")
    assert sorted(names - plan.keys()) == []


@pytest.mark.parametrize("algo", ["sha256", "git-sha1"])
def test_file_digest_matches_the_reference_tools(tmp_path: Path, algo: str) -> None:
    from rp_agent.models.markers import file_digest

    data = payload(3 * MIB + 5)
    target = tmp_path / "f.bin"
    target.write_bytes(data)
    if algo == "sha256":
        expected = hashlib.sha256(data).hexdigest()
    else:  # what git (and so the hub's ETag of a non-LFS file) says
        expected = subprocess.run(
            ["git", "hash-object", str(target)], capture_output=True, text=True, check=True
        ).stdout.strip()
    assert file_digest(target, algo) == expected


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
        "RP_MODELS_PYTHON": sys.executable,
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


def test_unreachable_hub_keeps_a_file_already_in_place(tmp_path: Path, model_hub: ModelHub) -> None:
    # A volume filled by an earlier version (no markers), booted while the hub is down.
    target = tmp_path / "models" / "diffusion_models" / "old.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload(MIB + 1))
    manifest = [entry("old.safetensors")]

    result = run_script(
        tmp_path, model_hub, manifest, extra_env={"HF_ENDPOINT": "http://127.0.0.1:9"}
    )

    assert result.returncode == 0, result.stderr
    assert "the hub cannot be reached; using the file in place" in result.stderr
    assert target.read_bytes() == payload(MIB + 1)
    assert not (tmp_path / "models" / ".verified.json").exists()  # checked for real next time


def test_a_part_recorded_for_another_version_is_not_resumed(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    # The hub's file changed since a previous start left its part: keep none of those bytes.
    data = payload(2 * MIB, seed=11)
    model_hub.add(hf_path("v.safetensors"), data)
    folder = tmp_path / "models" / "diffusion_models"
    folder.mkdir(parents=True)
    (folder / "v.safetensors.part").write_bytes(payload(2 * MIB, seed=12))
    (folder / "v.safetensors.part.json").write_text(
        json.dumps({"version": 1, "url": "x", "size": 2 * MIB, "digest": "0" * 64,
                    "chunks": [[0, MIB, MIB], [MIB, 2 * MIB, MIB]]})
    )  # fmt: skip

    result = run_script(tmp_path, model_hub, [entry("v.safetensors")])

    assert result.returncode == 0, result.stderr
    assert (folder / "v.safetensors").read_bytes() == data
    assert sorted(
        r for r in model_hub.served_ranges(hf_path("v.safetensors")) if r != "bytes=0-0"
    ) == [
        f"bytes=0-{MIB - 1}",
        f"bytes={MIB}-{2 * MIB - 1}",
    ]


def test_a_hub_that_keeps_failing_the_head_fails_the_file(
    tmp_path: Path, model_hub: ModelHub
) -> None:
    model_hub.add(hf_path("e.safetensors"), payload(MIB + 1), status=503)

    result = run_script(
        tmp_path, model_hub, [entry("e.safetensors")], extra_env={"DOWNLOAD_ATTEMPTS": "2"}
    )

    assert result.returncode != 0
    assert "diffusion_models/e.safetensors (HTTP 503 from" in result.stderr
    assert len(model_hub.requests_for(hf_path("e.safetensors"), "HEAD")) == 2
    assert not (tmp_path / "models" / "diffusion_models" / "e.safetensors").exists()
