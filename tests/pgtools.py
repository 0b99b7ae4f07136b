"""PostgreSQL for tests: throw-away databases on the shared server, and a server of our own.

The shared server (127.0.0.1:5432) is used by everyone's tests at once: tests here only
create and drop databases of their own there. A test that needs PostgreSQL to go down
starts its own server on another port, in a temporary directory, and stops that one.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get(
    "WANSERVE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _admin_url(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{database}"


@contextmanager
def fresh_database(server_url: str = POSTGRES_URL) -> Iterator[str]:
    """An empty database of its own on the server; yields its URL and drops it after."""
    name = f"wanserve_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield _admin_url(server_url, name)
    finally:  # a failed test too: nothing is left on the shared server
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@contextmanager
def throwaway_schema(server_url: str = POSTGRES_URL) -> Iterator[str]:
    """A URL whose connections use a fresh schema of the test database; dropped after.

    Cheaper than `fresh_database` for tests that only need their own tables.
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{server_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def terminate_backends(database_url: str, admin_url: str = POSTGRES_URL) -> int:
    """Kill every session connected to the database of `database_url`; how many there were."""
    database = database_url.rsplit("/", 1)[1].split("?")[0]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).scalar_one()
        return int(killed)
    finally:
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no PostgreSQL {name} on this machine")
    return found[-1]


class OwnPostgres:
    """A PostgreSQL server of the test's own, on a free port, that a test may stop."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="wanserve-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        # initdb refuses to run as root: the server runs as the postgres user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._run(
            _bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as, *command], check=True, capture_output=True, timeout=120, cwd=self.root
        )

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")  # not our pipes: the server outlives pg_ctl
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            log,
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop it at once, as a crash or a restart would (connections are cut)."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop it if it runs, and delete its files."""
        subprocess.run(
            [*self._as, _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
