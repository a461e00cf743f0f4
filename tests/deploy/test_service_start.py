"""Bad PostgreSQL settings stop the daemon and the code server at start with ONE line that
names what to fix, and never the password (real processes, real PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rp_devstack.ports import free_port
from tests.deploy.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
SERVICES = {
    "daemon": [str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
    "code server": [
        str(BIN / "dagster"),
        "api",
        "grpc",
        "--module-name",
        "rp_pipeline.definitions",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ],
}


def start(service: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rp_pipeline.tools.service", "--template", str(TEMPLATE), "--"]
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(home), "RP_ENV": "devstack"}
    return subprocess.run(
        argv + SERVICES[service],
        env=full_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bad_settings(cluster: PostgresCluster, good: dict[str, str]) -> dict[str, tuple[dict, str]]:
    """case -> (env overrides, what the one line must say)."""
    where = f"PostgreSQL at {good['DAGSTER_PG_HOST']}"
    return {
        "wrong password": (
            {"DAGSTER_PG_PASSWORD": "not-the-password-3141"},
            f"{where}:{cluster.port} refused user 'dagster': check DAGSTER_PG_USERNAME and "
            "DAGSTER_PG_PASSWORD",
        ),
        "missing database": (
            {"DAGSTER_PG_DB": "no_such_db"},
            f"{where}:{cluster.port} has no database 'no_such_db': create it (createdb "
            "no_such_db) or fix DAGSTER_PG_DB",
        ),
        "unreachable server": (
            {"DAGSTER_PG_PORT": str(unused_port := free_port())},
            f"cannot reach {where}:{unused_port}: check DAGSTER_PG_HOST and DAGSTER_PG_PORT and "
            "that the server is up",
        ),
        "a URL where the host goes": (
            {"DAGSTER_PG_HOST": "postgresql://dagster@db:5432/dagster"},
            "cannot resolve 'postgresql://dagster@db:5432/dagster': check DAGSTER_PG_HOST",
        ),
        "password not set": (
            {"DAGSTER_PG_PASSWORD": ""},
            "DAGSTER_PG_PASSWORD not set: the instance keeps runs, events and schedules in "
            "PostgreSQL (see docs/DEPLOYMENT.md)",
        ),
    }


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_bad_postgres_settings_fail_at_start_with_one_line(
    service: str, postgres: PostgresCluster, pg_env: dict[str, str], tmp_path: Path
) -> None:
    program = Path(SERVICES[service][0]).name
    for case, (overrides, expected) in bad_settings(postgres, pg_env).items():
        result = start(service, {**pg_env, **overrides}, tmp_path / case.replace(" ", "-"))
        output = result.stdout + result.stderr
        assert result.returncode == 2, f"{case}: exit {result.returncode}: {output[-2000:]}"
        assert result.stdout == "", case
        assert result.stderr == f"{program}: not started: {expected}\n", case
        for secret in {pg_env["DAGSTER_PG_PASSWORD"], overrides.get("DAGSTER_PG_PASSWORD")}:
            if secret:
                assert secret not in output, case


def test_good_settings_render_the_instance_and_exec_the_command(
    postgres: PostgresCluster, pg_env: dict[str, str], tmp_path: Path
) -> None:
    """With the right settings the entry point writes dagster.yaml and becomes the command."""
    argv = [sys.executable, "-m", "rp_pipeline.tools.service", "--template", str(TEMPLATE), "--"]
    result = subprocess.run(
        [*argv, sys.executable, "-c", "import os; print(os.environ['DAGSTER_HOME'])"],
        env={**os.environ, **pg_env, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)
    assert (tmp_path / "dagster.yaml").is_file()
