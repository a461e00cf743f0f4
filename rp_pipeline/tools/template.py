"""The RunPod pod template as code: `docker/runpod-template.yaml` -> RunPod's saveTemplate.

`load_template` validates the file and returns the API payload; `sync_template` creates the
template, or updates the one with the same name. Validation exists mainly to stop a pasted
credential from reaching RunPod in plain text: any env var whose name looks secret must be a
RunPod secret reference (`{{ RUNPOD_SECRET_name }}`). Error messages name the variable and
never repeat its value.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Protocol

import yaml

from rp_pipeline.integrations.runpod.errors import RunPodError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("name", "image", "container_disk_gb", "volume_gb", "volume_mount_path", "ports")
OPTIONAL_KEYS = ("env", "docker_args", "readme", "start_ssh", "container_registry_auth_id")
PORT_RE = re.compile(r"^(\d{1,5})/(http|tcp)$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
SECRET_NAME_RE = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE")
SECRET_REF_RE = re.compile(r"^\{\{\s*RUNPOD_SECRET_[A-Za-z0-9_.-]+\s*\}\}$")
# Names that match SECRET_NAME_RE but are public by nature.
NOT_SECRET = frozenset({"PUBLIC_KEY"})

Q_TEMPLATES = "query { myself { podTemplates { id name } } }"


class TemplateError(RunPodError):
    """The template file is unusable; the message says what to change."""


class TemplateClient(Protocol):
    """What sync needs from `rp_pipeline.integrations.runpod.resource.RunPodClient`."""

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]: ...


def load_template(path: str | Path) -> dict[str, Any]:
    """Read and validate a template file; returns the saveTemplate input (no `id`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"template {path} must be a mapping of fields")
    problems = _problems(raw)
    if problems:
        raise TemplateError(f"template {path} is invalid: " + "; ".join(problems))
    return {
        "name": raw["name"],
        "imageName": raw["image"],
        "containerDiskInGb": raw["container_disk_gb"],
        "volumeInGb": raw["volume_gb"],
        "volumeMountPath": raw["volume_mount_path"],
        "ports": ",".join(raw["ports"]),
        "env": [{"key": k, "value": _env_value(v)} for k, v in (raw.get("env") or {}).items()],
        "dockerArgs": raw.get("docker_args") or "",
        "readme": raw.get("readme") or "",
        # The fields the runpod SDK's own saveTemplate mutation sends, nothing more.
        "isServerless": False,
        "isPublic": False,
        "startSsh": bool(raw.get("start_ssh", True)),
        "containerRegistryAuthId": raw.get("container_registry_auth_id") or "",
    }


def sync_template(client: TemplateClient, path: str | Path) -> dict[str, Any]:
    """Create the template, or update the existing one with the same name.

    Returns a summary (id, name, image, ports, action) without env values.
    """
    spec = load_template(path)
    existing = _find_template_id(client, spec["name"])
    if existing:
        spec["id"] = existing
    saved = client.save_template(spec)
    action = "updated" if existing else "created"
    log.info("template %s %s (id %s)", saved.get("name"), action, saved.get("id"))
    return {
        "id": saved.get("id"),
        "name": saved.get("name"),
        "imageName": saved.get("imageName"),
        "ports": saved.get("ports"),
        "env_keys": sorted(e["key"] for e in saved.get("env") or []),
        "action": action,
    }


def _problems(raw: dict[str, Any]) -> list[str]:
    problems = [f"missing field {key!r}" for key in REQUIRED_KEYS if key not in raw]
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    problems += [f"unknown field {key!r}" for key in unknown]
    if "name" in raw and not (isinstance(raw["name"], str) and raw["name"].strip()):
        problems.append("name must be a non-empty string")
    if "image" in raw:
        problems += _image_problems(raw["image"])
    for key in ("container_disk_gb", "volume_gb"):
        value = raw.get(key)
        if key in raw and not (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            problems.append(f"{key} must be a positive whole number of GB")
    mount = raw.get("volume_mount_path")
    if "volume_mount_path" in raw and not (isinstance(mount, str) and mount.startswith("/")):
        problems.append("volume_mount_path must be an absolute path")
    if "ports" in raw:
        problems += _port_problems(raw["ports"])
    problems += _env_problems(raw.get("env") or {})
    return problems


def _image_problems(image: object) -> list[str]:
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        return ["image must be an image reference such as ghcr.io/me/runpod-dagster:latest"]
    if "<" in image or ">" in image:
        return [
            f"image {image!r} still has a placeholder: replace <owner> with your GitHub "
            "user or organisation (lowercase)"
        ]
    return []


def _port_problems(ports: object) -> list[str]:
    if not isinstance(ports, list) or not ports:
        return ['ports must be a list such as ["8188/http", "22/tcp"]']
    problems: list[str] = []
    seen: set[int] = set()
    for port in ports:
        match = PORT_RE.match(port) if isinstance(port, str) else None
        if not match:
            problems.append(f"port {port!r} must look like 8188/http or 22/tcp")
            continue
        number = int(match.group(1))
        if not 1 <= number <= 65535:
            problems.append(f"port {port!r} is out of range")
        if number in seen:
            problems.append(f"port {number} is listed twice")
        seen.add(number)
    return problems


def _env_problems(env: object) -> list[str]:
    if not isinstance(env, dict):
        return ["env must be a mapping of NAME: value"]
    problems: list[str] = []
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME_RE.match(name):
            problems.append(f"env name {name!r} must be UPPER_SNAKE_CASE")
            continue
        if not isinstance(value, str | int | float | bool):
            problems.append(f"env {name} must be a single value")
            continue
        if _looks_secret(name) and not _is_secret_reference(value):
            # Never echo the value: it may be the very key we are protecting.
            problems.append(
                f"env {name} holds a plaintext value: store it as a RunPod secret "
                f'(console > Settings > Secrets) and write "{{{{ RUNPOD_SECRET_<name> }}}}"'
            )
    return problems


def _looks_secret(name: str) -> bool:
    return name not in NOT_SECRET and bool(SECRET_NAME_RE.search(name))


def _is_secret_reference(value: object) -> bool:
    return value == "" or (isinstance(value, str) and bool(SECRET_REF_RE.match(value)))


def _env_value(value: object) -> str:
    # YAML reads `true` as a bool; the container sees the lowercase text the scripts test for.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _find_template_id(client: TemplateClient, name: str) -> str | None:
    """The id of the account's template called `name`, if any.

    Prefers a `list_templates()` on the client; otherwise asks the GraphQL backend directly
    (`myself { podTemplates }`, which both RunPod and the devstack emulator answer).
    """
    lister = getattr(client, "list_templates", None)
    if callable(lister):
        templates = lister()
    else:
        post = getattr(getattr(client, "backend", None), "_post", None)
        if not callable(post):
            return None
        templates = post(Q_TEMPLATES)["myself"]["podTemplates"] or []
    for template in templates:
        if template.get("name") == name:
            return str(template["id"])
    return None
