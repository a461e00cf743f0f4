"""deploy/dagster.yaml rendered from env and loaded by Dagster against a real PostgreSQL:
storage, queue limits, pool size, monitoring and retries are what the environment says, the
driver is psycopg2 by name, and the file holds no secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from dagster import DagsterInstance, QueuedRunCoordinator
from dagster_postgres import PostgresRunStorage

from rp_pipeline.tools.service import ServiceConfigError, render_instance

pytestmark = pytest.mark.postgres

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


@pytest.fixture
def instance_env(pg_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        **pg_env,
        "RP_MAX_PODS": "3",
        "RP_MAX_CONCURRENT_RUNS": "7",
        "RP_RUN_MAX_RUNTIME_S": "900",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_rendered_instance_runs_on_postgres_with_the_limits_from_env(
    instance_env: dict[str, str], tmp_path: Path
) -> None:
    written = render_instance(TEMPLATE, tmp_path, os.environ)
    text = written.read_text()
    assert instance_env["DAGSTER_PG_PASSWORD"] not in text
    config = yaml.safe_load(text)
    assert config["concurrency"]["pools"]["default_limit"] == 3
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "rp/pod-runs", "limit": 3}
    ]

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert instance.get_runs() == []  # tables created, queries answered
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 7
        assert [(limit["key"], limit["limit"]) for limit in queue.tag_concurrency_limits] == [
            ("rp/pod-runs", 3)
        ]
        assert instance.global_op_concurrency_default_limit == 3
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 900
        assert instance.run_retries_enabled


def test_bare_postgresql_scheme_needs_psycopg3_which_is_not_installed(
    pg_env: dict[str, str],
) -> None:
    """Why the template names the driver: SQLAlchemy's default for postgresql:// is psycopg
    (v3), dagster-postgres installs psycopg2. If psycopg ever ships, this test says so."""
    url = sqlalchemy.URL.create(
        "postgresql",
        username=pg_env["DAGSTER_PG_USERNAME"],
        password=pg_env["DAGSTER_PG_PASSWORD"],
        host=pg_env["DAGSTER_PG_HOST"],
        port=int(pg_env["DAGSTER_PG_PORT"]),
        database=pg_env["DAGSTER_PG_DB"],
    )
    with pytest.raises(ModuleNotFoundError, match="psycopg"):
        sqlalchemy.create_engine(url)
    engine = sqlalchemy.create_engine(url.set(drivername="postgresql+psycopg2"))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("name", "value", "names"),
    [
        ("RP_MAX_PODS", "two", "RP_MAX_PODS"),
        ("RP_MAX_PODS", "0", "RP_MAX_PODS"),
        ("RP_RUN_MAX_RUNTIME_S", "-5", "RP_RUN_MAX_RUNTIME_S"),
    ],
)
def test_bad_sizing_is_refused_naming_the_variable(
    tmp_path: Path, name: str, value: str, names: str
) -> None:
    with pytest.raises(ServiceConfigError, match=names):
        render_instance(TEMPLATE, tmp_path, {name: value})
    assert not (tmp_path / "dagster.yaml").exists()
