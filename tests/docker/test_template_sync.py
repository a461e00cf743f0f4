"""RunPod template as code: docker/runpod-template.yaml validated by load_template, and
`rp-launch template sync` creating then updating it on the RunPod API emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rp_pipeline.tools.template import TemplateError, load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "docker" / "runpod-template.yaml"


def template_file(tmp_path: Path, **changes: object) -> Path:
    """The shipped template with <owner> filled in and `changes` applied (None deletes)."""
    data = yaml.safe_load(SHIPPED.read_text())
    data["image"] = data["image"].replace("<owner>", "acme")
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_template_refuses_the_owner_placeholder() -> None:
    with pytest.raises(TemplateError, match="replace <owner>"):
        load_template(SHIPPED)


def test_shipped_template_matches_the_prd(tmp_path: Path) -> None:
    spec = load_template(template_file(tmp_path))

    assert spec["name"] == "hearmeman-extended-r2"
    assert spec["imageName"] == "ghcr.io/acme/runpod-dagster:latest"
    assert spec["containerDiskInGb"] == 20
    assert spec["volumeInGb"] == 100
    assert spec["volumeMountPath"] == "/workspace"
    assert spec["ports"] == "8188/http,8888/http,22/tcp"
    env = {e["key"]: e["value"] for e in spec["env"]}
    assert env["ENABLE_R2_SYNC"] == "true"
    assert env["R2_BUCKET"] == "runpod"
    assert env["WAN_720P"] == "true"
    # No shipped workflow loads TurboWan2.2 weights: the template does not ask for them.
    assert env["ENABLE_TURBODIFFUSION"] == "false"
    assert env["GPU_TIER"] == "auto"
    assert env["R2_ACCESS_KEY_ID"] == "{{ RUNPOD_SECRET_R2_ACCESS_KEY_ID }}"
    assert env["R2_SECRET_ACCESS_KEY"] == "{{ RUNPOD_SECRET_R2_SECRET_ACCESS_KEY }}"
    assert env["R2_ENDPOINT"].startswith("{{ RUNPOD_SECRET_")


def test_pasted_secret_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    pasted = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    env = {"R2_BUCKET": "runpod", "R2_SECRET_ACCESS_KEY": pasted, "CIVITAI_API_KEY": "abc123"}

    with pytest.raises(TemplateError) as caught:
        load_template(template_file(tmp_path, env=env))

    message = str(caught.value)
    assert "env R2_SECRET_ACCESS_KEY holds a plaintext value" in message
    assert "env CIVITAI_API_KEY holds a plaintext value" in message
    assert "RUNPOD_SECRET_" in message
    assert pasted not in message and "abc123" not in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ports": ["8188", "22/tcp"]}, "port '8188' must look like 8188/http"),
        ({"ports": ["70000/http"]}, "out of range"),
        ({"ports": ["8188/http", "8188/tcp"]}, "port 8188 is listed twice"),
        ({"ports": ["8188/udp"]}, "must look like"),
        ({"name": None}, "missing field 'name'"),
        ({"container_disk_gb": "20GB"}, "container_disk_gb must be a positive whole number"),
        ({"volume_mount_path": "workspace"}, "absolute path"),
        ({"volumes_gb": 5}, "unknown field 'volumes_gb'"),
        ({"env": {"lower_case": "x"}}, "UPPER_SNAKE_CASE"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, changes: dict, expected: str) -> None:
    with pytest.raises(TemplateError, match=expected):
        load_template(template_file(tmp_path, **changes))


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        load_template(template_file(tmp_path, name=None, ports=["x"], volume_gb=0))
    message = str(caught.value)
    assert "missing field 'name'" in message
    assert "port 'x'" in message
    assert "volume_gb" in message


def test_yaml_booleans_become_lowercase_text(tmp_path: Path) -> None:
    spec = load_template(template_file(tmp_path, env={"ENABLE_R2_SYNC": True, "WAN_720P": False}))
    assert {e["key"]: e["value"] for e in spec["env"]} == {
        "ENABLE_R2_SYNC": "true",
        "WAN_720P": "false",
    }


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from rp_pipeline.tools.launch import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_template_sync_creates_then_updates_on_the_emulator(
    tmp_path: Path, runpod_emulator, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_emulator.api_key)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_emulator.base_url)
    path = template_file(tmp_path)

    code, out, err = run_cli(["template", "sync", "--file", str(path), "--json"], capsys)

    assert code == 0, err
    created = json.loads(out)
    assert created["action"] == "created"
    [stored] = runpod_emulator.templates()
    assert stored["id"] == created["id"]
    assert stored["imageName"] == "ghcr.io/acme/runpod-dagster:latest"
    assert stored["containerDiskInGb"] == 20 and stored["volumeInGb"] == 100
    assert stored["ports"] == "8188/http,8888/http,22/tcp"
    stored_env = {e["key"]: e["value"] for e in stored["env"]}
    assert stored_env["R2_SECRET_ACCESS_KEY"] == "{{ RUNPOD_SECRET_R2_SECRET_ACCESS_KEY }}"

    path = template_file(tmp_path, image="ghcr.io/acme/runpod-dagster:v1.2.0")
    code, out, err = run_cli(["template", "sync", "--file", str(path), "--json"], capsys)

    assert code == 0, err
    updated = json.loads(out)
    assert updated["action"] == "updated" and updated["id"] == created["id"]
    [stored] = runpod_emulator.templates()  # updated in place, not duplicated
    assert stored["imageName"] == "ghcr.io/acme/runpod-dagster:v1.2.0"

    # Without --json it says which setting makes runs use it.
    code, out, err = run_cli(["template", "sync", "--file", str(path)], capsys)
    assert code == 0, err
    assert f"export RUNPOD_TEMPLATE_ID={created['id']}" in out


def test_template_sync_rejects_a_pasted_key_before_any_api_call(
    tmp_path: Path, runpod_emulator, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_emulator.api_key)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_emulator.base_url)
    path = template_file(tmp_path, env={"R2_ACCESS_KEY_ID": "AKIAPASTEDVALUE"})

    code, _, err = run_cli(["template", "sync", "--file", str(path)], capsys)

    assert code != 0
    assert "R2_ACCESS_KEY_ID holds a plaintext value" in err
    assert "AKIAPASTEDVALUE" not in err
    assert "Traceback" not in err
    assert runpod_emulator.templates() == []
