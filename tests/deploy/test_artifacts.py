"""The deployment files, checked without a Docker engine or a cluster: deploy/compose.yaml
(`docker compose config` where that CLI exists, the Compose Specification schema otherwise,
and its wiring), deploy/Dockerfile.dagster, and the Helm values for dagster/dagster."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rp_pipeline.tools.service import PG_ENV_NAMES, SIZING_ENV_DEFAULTS, render_instance
from tests.dockerfile import instructions

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile.dagster"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
# What only the code location (and its runs) may hold.
CODE_SECRETS = {"RUNPOD_API_KEY", "R2_ENDPOINT", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"}
SECRETS = CODE_SECRETS | {"DAGSTER_PG_PASSWORD"}
DAGSTER_SERVICES = ("code-server", "webserver", "daemon")
RENDER_PREFIX = ["--template", "/opt/dagster/app/deploy/dagster.yaml", "--pg-wait-s", "60", "--"]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def docker_compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


def test_compose_file_is_valid(tmp_path: Path) -> None:
    if docker_compose_available():
        env_file = tmp_path / "compose.env"
        env_file.write_text("".join(f"{name}=placeholder\n" for name in (*SECRETS, "RP_IMAGE")))
        argv = ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env_file)]
        result = subprocess.run(
            [*argv, "config", "--quiet"], capture_output=True, text=True, check=False
        )
    else:
        # No compose CLI here: the Compose Specification schema (bundled with check-jsonschema).
        checker = Path(sys.executable).with_name("check-jsonschema")
        result = subprocess.run(
            [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wires_postgres_code_server_webserver_and_daemon() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *DAGSTER_SERVICES}
    assert services["postgres"]["healthcheck"]["test"]
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    for name in DAGSTER_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile.dagster"}
        assert (
            COMPOSE.parent / service["build"]["context"] / "deploy/Dockerfile.dagster"
        ).is_file()
        assert service["command"][: len(RENDER_PREFIX)] == RENDER_PREFIX, name
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        env = service["environment"]
        # Everything the instance template and the start check read is provided.
        assert set(PG_ENV_NAMES) <= set(env), name
        assert env["DAGSTER_PG_HOST"] == "postgres"
    code = services["code-server"]["command"][len(RENDER_PREFIX) :]
    assert code[:3] == ["dagster", "api", "grpc"]
    assert code[code.index("--module-name") + 1] == "rp_pipeline.definitions"
    assert entry["grpc_server"]["host"] == "code-server"
    assert str(entry["grpc_server"]["port"]) == code[code.index("--port") + 1]
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == "/opt/dagster/app/deploy/workspace.yaml"
        # Sensors and runs execute in the code server: the credentials stay there.
        assert not CODE_SECRETS & set(services[name]["environment"]), name
    assert set(services["code-server"]["environment"]) >= CODE_SECRETS


def test_compose_holds_no_secret_value() -> None:
    """Secrets are only ever `${NAME:?...}` interpolations from the operator's env file."""
    for name, service in compose()["services"].items():
        for key, value in service.get("environment", {}).items():
            if key in SECRETS or key == "POSTGRES_PASSWORD":
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), (name, key, value)
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY / "compose.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {name: example[name] for name in SECRETS - {"R2_ENDPOINT"}} == dict.fromkeys(
        SECRETS - {"R2_ENDPOINT"}, ""
    )


def test_compose_sizing_reaches_the_instance_template(tmp_path: Path) -> None:
    env = compose()["x-dagster-env"]
    sizing = {name for name in SIZING_ENV_DEFAULTS if name in env}
    assert {"RP_MAX_PODS", "RP_MAX_CONCURRENT_RUNS", "RP_RUN_MAX_RUNTIME_S"} <= sizing
    rendered = yaml.safe_load(render_instance(DEPLOY / "dagster.yaml", tmp_path, {}).read_text())
    assert rendered["concurrency"]["pools"]["default_limit"] == 1


def test_dagster_image_installs_the_code_location_with_postgres_and_starts_through_the_check() -> (
    None
):
    steps = instructions(DOCKERFILE)
    copied = [src for kind, args in steps if kind == "COPY" for src in args.split()[:-1]]
    for src in copied:
        assert (REPO_ROOT / src).exists(), src
    ignore = (DEPLOY / "Dockerfile.dagster.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {src.rstrip("/") for src in copied} <= allowed
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    assert "--extra pipeline --extra postgres" in runs
    assert "--require-hashes" in runs
    (entrypoint,) = [args for kind, args in steps if kind == "ENTRYPOINT"]
    assert entrypoint == '["python", "-m", "rp_pipeline.tools.service"]'
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert not any(secret in env for secret in SECRETS)
    assert "RP_PROMPTS_DIR=/opt/dagster/app/prompts" in env
    # The installed package lives in the venv: the workflows (and their node catalogue) are
    # copied beside the prompts and named, or every request would name an unknown workflow.
    assert "RP_WORKFLOWS_DIR=/opt/dagster/app/workflows" in env
    assert "workflows/" in copied


def helm_values() -> dict[str, Any]:
    return dict(yaml.safe_load(HELM_VALUES.read_text()))


def test_helm_values_run_this_code_location_as_a_user_deployment() -> None:
    values = helm_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "rp_pipeline.definitions"
    assert {"repository", "tag"} <= set(deployment["image"])
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert values["dagsterDaemon"]["runRetries"]["enabled"] is True
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["DAGSTER_PG_HOST"] == pg["postgresqlHost"]
    assert env["DAGSTER_PG_DB"] == pg["postgresqlDatabase"]
    assert env["DAGSTER_PG_USERNAME"] == pg["postgresqlUsername"]
    assert int(env["DAGSTER_PG_PORT"]) == pg["service"]["port"]
    assert env["RP_ENV"] == "production"


def test_helm_limits_mirror_the_instance_template(tmp_path: Path) -> None:
    values = helm_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    max_pods = {item["name"]: item["value"] for item in deployment["env"]}["RP_MAX_PODS"]
    rendered = yaml.safe_load(
        render_instance(DEPLOY / "dagster.yaml", tmp_path, {"RP_MAX_PODS": max_pods}).read_text()
    )
    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]
    assert runs["maxConcurrentRuns"] == rendered["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == rendered["concurrency"]["runs"]["tag_concurrency_limits"]
    assert pools["defaultLimit"] == rendered["concurrency"]["pools"]["default_limit"]
    assert pools["granularity"] == rendered["concurrency"]["pools"]["granularity"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["startTimeoutSeconds"] == rendered["run_monitoring"]["start_timeout_seconds"]
    assert (
        monitoring["cancelTimeoutSeconds"] == rendered["run_monitoring"]["cancel_timeout_seconds"]
    )


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for n, value in enumerate(node) for item in walk(value, f"{path}[{n}]")]
    return [(path, node)]


def test_helm_values_hold_no_secret_literal() -> None:
    """Secrets come from Kubernetes secrets named in the values, never from the values."""
    values = helm_values()
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    leaves = walk(values)
    named_like_secrets = [
        path
        for path, value in leaves
        if isinstance(value, str) and re.search(r"password|secret_?key|api_?key|token", path, re.I)
    ]
    assert named_like_secrets == []
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert not SECRETS & {item["name"] for item in deployment["env"]}
    assert [s["name"] for s in deployment["envSecrets"]] == ["runpod-dagster"]


@pytest.mark.parametrize("path", [COMPOSE, HELM_VALUES, DEPLOY / "compose.env.example"])
def test_no_credential_shaped_string(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"(?i)(rpa_[A-Z0-9]{20,}|[0-9a-f]{32,}|AKIA[0-9A-Z]{16})", text)


def test_docs_example_is_the_rendered_template(tmp_path: Path) -> None:
    example = yaml.safe_load((REPO_ROOT / "docs" / "dagster.yaml.example").read_text())
    rendered = yaml.safe_load(render_instance(DEPLOY / "dagster.yaml", tmp_path, {}).read_text())
    assert example == rendered
