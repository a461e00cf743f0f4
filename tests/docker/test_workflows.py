"""What the GitHub workflows must do, beyond being schema-valid (scripts/lint-extra.sh checks
the schema): the image build's triggers, tags, cache and build args, and CI's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # PyYAML reads the key `on` as True (YAML 1.1 boolean).
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    [job] = workflow["jobs"].values()
    return job["steps"]


def step_using(workflow: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in steps(workflow) if s.get("uses", "").startswith(action + "@")]
    return step


def test_image_build_triggers_on_main_and_version_tags() -> None:
    on = load("docker-build.yml")["on"]
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"] == ["v*"]


def test_image_build_pushes_to_ghcr_with_the_workflow_token() -> None:
    workflow = load("docker-build.yml")
    assert workflow["permissions"]["packages"] == "write"
    login = step_using(workflow, "docker/login-action")["with"]
    assert login["registry"] == "ghcr.io"
    assert login["password"] == "${{ secrets.GITHUB_TOKEN }}"
    step_using(workflow, "docker/setup-buildx-action")


def test_image_tags_latest_on_main_semver_on_tags_and_sha() -> None:
    tags = step_using(load("docker-build.yml"), "docker/metadata-action")["with"]["tags"]
    lines = [line.strip() for line in tags.splitlines() if line.strip()]
    assert "type=raw,value=latest,enable={{is_default_branch}}" in lines
    assert "type=semver,pattern={{version}}" in lines
    assert "type=sha" in lines


def test_image_build_context_platform_cache_and_oci_args() -> None:
    build = step_using(load("docker-build.yml"), "docker/build-push-action")["with"]
    assert build["context"] == "."
    assert build["file"] == "docker/Dockerfile"
    assert build["platforms"] == "linux/amd64"
    assert build["push"] is True
    assert build["cache-from"] == "type=gha"
    assert build["cache-to"].startswith("type=gha")
    args = dict(line.strip().split("=", 1) for line in build["build-args"].splitlines() if line)
    assert {"VERSION", "REVISION", "CREATED", "SOURCE"} <= args.keys()
    assert args["REVISION"] == "${{ github.sha }}"


def test_ci_installs_system_packages_uv_and_runs_make_lint_and_test() -> None:
    workflow = load("ci.yml")
    commands = "\n".join(s.get("run", "") for s in steps(workflow))
    for package in ("ffmpeg", "inotify-tools", "chromium", "chromium-driver"):
        assert package in commands.split()
    step_using(workflow, "astral-sh/setup-uv")
    step_using(workflow, "actions/checkout")
    runs = [s.get("run") for s in steps(workflow)]
    assert runs.index("make lint") < runs.index("make test")
