"""A throwaway PostgreSQL cluster for the deployment tests (one per session, a fresh database
per test), and the helpers to render deploy/dagster.yaml against it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest

from tests.deploy.postgres import PostgresCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    # A password with characters that need URL quoting: the instance must not mangle it.
    cluster = PostgresCluster(password=f"pw-{secrets.token_hex(8)}@:/%")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_env(postgres: PostgresCluster) -> dict[str, str]:
    """DAGSTER_PG_* for a brand-new database of the session's cluster."""
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name)
    return postgres.env(name)
