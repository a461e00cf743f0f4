"""Start a Dagster service (webserver, daemon, code server) on the team instance.

    python -m rp_pipeline.tools.service --template deploy/dagster.yaml -- dagster-daemon run

1. with --template, renders `$DAGSTER_HOME/dagster.yaml` from it: `${NAME}` placeholders take
   the sizing knobs below from the environment (Dagster reads plain integers there, not env
   vars); the PostgreSQL credentials stay `{env: DAGSTER_PG_...}` references, so the file holds
   no secret. Without it the instance file is someone else's (the Helm chart mounts its own);
2. connects to PostgreSQL once with the same driver Dagster will use (psycopg2) and, if that
   fails, prints ONE line naming what to fix (never the password) and exits 2;
3. replaces itself with the service command (same pid: signals reach the service directly).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rp_pipeline.settings import process_environment

# Sizing knobs rendered into dagster.yaml, with their defaults.
SIZING_ENV_DEFAULTS = {
    "RP_MAX_PODS": "1",
    "RP_MAX_CONCURRENT_RUNS": "10",
    "RP_RUN_START_TIMEOUT_S": "300",
    "RP_RUN_CANCEL_TIMEOUT_S": "180",
    "RP_RUN_MAX_RUNTIME_S": "14400",
    "RP_RUN_MONITOR_INTERVAL_S": "30",
}
# Where the instance finds PostgreSQL; the password is a secret and is only ever an env reference.
PG_ENV_NAMES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
)
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
EXIT_CONFIG = 2


class ServiceConfigError(Exception):
    """A setup problem, said in one line that names what to fix."""


def sizing(env: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for name, default in SIZING_ENV_DEFAULTS.items():
        raw = (env.get(name) or default).strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ServiceConfigError(f"{name} must be a whole number >= 1, got {raw!r}")
        values[name] = raw
    return values


def render_instance(template: Path, dagster_home: Path, env: Mapping[str, str]) -> Path:
    """Write `dagster_home/dagster.yaml` from `template`; the path written."""
    try:
        text = template.read_text()
    except OSError as exc:
        raise ServiceConfigError(
            f"cannot read the instance template {template}: {exc.strerror}"
        ) from None
    values = sizing(env)
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise ServiceConfigError(f"{template} has placeholders with no value: {', '.join(unknown)}")
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    target.write_text(PLACEHOLDER.sub(lambda m: values[m.group(1)], text))
    return target


def pg_settings(env: Mapping[str, str]) -> dict[str, str]:
    missing = [name for name in PG_ENV_NAMES if not env.get(name)]
    if missing:
        raise ServiceConfigError(
            f"{', '.join(missing)} not set: the instance keeps runs, events and schedules in "
            "PostgreSQL (see docs/DEPLOYMENT.md)"
        )
    port = env["DAGSTER_PG_PORT"]
    if not port.isdigit():
        raise ServiceConfigError(f"DAGSTER_PG_PORT must be a port number, got {port!r}")
    return {name: env[name] for name in PG_ENV_NAMES}


def explain_pg_error(message: str, pg: Mapping[str, str]) -> tuple[str, bool]:
    """(one line naming what to fix, whether waiting could help) for a psycopg2 error text."""
    where = f"PostgreSQL at {pg['DAGSTER_PG_HOST']}:{pg['DAGSTER_PG_PORT']}"
    user, db = pg["DAGSTER_PG_USERNAME"], pg["DAGSTER_PG_DB"]
    lowered = message.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"{where} refused user {user!r}: check DAGSTER_PG_USERNAME and DAGSTER_PG_PASSWORD",
            False,
        )
    if "role" in lowered and "does not exist" in lowered:
        return (f"{where} has no user {user!r}: check DAGSTER_PG_USERNAME", False)
    if "database" in lowered and "does not exist" in lowered:
        return (
            f"{where} has no database {db!r}: create it (createdb {db}) or fix DAGSTER_PG_DB",
            False,
        )
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return (f"cannot resolve {pg['DAGSTER_PG_HOST']!r}: check DAGSTER_PG_HOST", False)
    if "permission denied" in lowered:
        return (
            f"{where}: user {user!r} may not use database {db!r}: grant it CONNECT and CREATE",
            False,
        )
    # Refused, timed out, server starting up: the server may just not be up yet.
    return (
        f"cannot reach {where}: check DAGSTER_PG_HOST and DAGSTER_PG_PORT and that the server is up",
        True,
    )


def check_postgres(env: Mapping[str, str], wait_s: float = 0.0) -> None:
    """Connect once as Dagster will; ServiceConfigError naming what to fix otherwise."""
    import psycopg2  # the driver dagster-postgres installs; the instance names it explicitly

    pg = pg_settings(env)
    give_up = time.monotonic() + wait_s
    while True:
        try:
            psycopg2.connect(
                host=pg["DAGSTER_PG_HOST"],
                port=int(pg["DAGSTER_PG_PORT"]),
                dbname=pg["DAGSTER_PG_DB"],
                user=pg["DAGSTER_PG_USERNAME"],
                password=pg["DAGSTER_PG_PASSWORD"],
                connect_timeout=5,
            ).close()
            return
        except psycopg2.Error as exc:
            line, transient = explain_pg_error(str(exc), pg)
            if not transient or time.monotonic() >= give_up:
                raise ServiceConfigError(line) from None
            time.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rp_pipeline.tools.service",
        description="Render dagster.yaml, check PostgreSQL, then run a Dagster service.",
    )
    parser.add_argument(
        "--template", type=Path, help="render $DAGSTER_HOME/dagster.yaml from this file first"
    )
    parser.add_argument(
        "--pg-wait-s",
        type=float,
        default=0.0,
        help="keep retrying an unreachable server this long (containers starting together)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the service command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    name = Path(command[0]).name if command else "service"
    try:
        if not command:
            raise ServiceConfigError("no service command given after --")
        environment = process_environment()
        home = environment.get("DAGSTER_HOME")
        if not home:
            raise ServiceConfigError("DAGSTER_HOME not set: the directory for dagster.yaml")
        if args.template is not None:
            render_instance(args.template, Path(home), environment)
        check_postgres(environment, wait_s=args.pg_wait_s)
    except ServiceConfigError as exc:
        print(f"{name}: not started: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
