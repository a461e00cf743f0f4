"""A throwaway PostgreSQL cluster: Debian's initdb + pg_ctl, a free loopback port, the socket
and the data in a temp dir, password authentication on; stopped and deleted afterwards.

initdb refuses to run as root, so as root the cluster belongs to `nobody` (its files, its
server process); otherwise to the current user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg2

from rp_devstack.ports import free_port

SUPERUSER = "dagster"
NO_POSTGRES = "PostgreSQL server binaries not found: apt-get install postgresql (Debian)"


def postgres_bin_dir() -> Path | None:
    """Newest /usr/lib/postgresql/<version>/bin with initdb, else initdb's dir on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


class PostgresCluster:
    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.host = "127.0.0.1"
        self._as_nobody = os.geteuid() == 0
        # `nobody` must reach the directory: the test session's own temp dir is private to
        # root, so then the cluster lives directly under /tmp (and stop() removes it).
        self.root = Path(tempfile.mkdtemp(prefix="rp-pg-", dir="/tmp" if self._as_nobody else None))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._started = False

    def _run(self, argv: list[str]) -> None:
        if self._as_nobody:
            argv = ["runuser", "-u", "nobody", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[-1]).name} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> PostgresCluster:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError(NO_POSTGRES)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_nobody:
            nobody = pwd.getpwnam("nobody")
            for path in (self.root, pwfile):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        try:
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
            pwfile.unlink()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses={self.host} "
                "-c fsync=off -c full_page_writes=off -c max_connections=200"
            )
            self._run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self

    def connect(self, dbname: str = "postgres"):  # type: ignore[no-untyped-def]
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=dbname,
            connect_timeout=10,
        )

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def env(self, dbname: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables for one database of this cluster."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": dbname,
            "DAGSTER_PG_USERNAME": SUPERUSER,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)

    def stop(self) -> None:
        bin_dir = postgres_bin_dir()
        if self._started and bin_dir is not None:
            self._started = False
            try:
                self._run(
                    [str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)
