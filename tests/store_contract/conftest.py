"""The store's contract: every test here runs on both backends, SQLite and PostgreSQL (see
tests/postgres_server.py for the server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from obsidian_ai_agent.store import IndexStore, Store
from tests.postgres_server import pg_server, pg_url  # noqa: F401

DIMENSION = 384


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_backend(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> IndexStore:
    if backend == "sqlite":
        return Store(tmp_path / "index.sqlite")
    from obsidian_ai_agent.store.postgres import PostgresStore

    return PostgresStore(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[IndexStore]:
    """An empty index on the backend, with the embedding model recorded (384 dimensions)."""
    s = open_backend(backend, tmp_path, request)
    s.check_embedding_model("all-MiniLM-L6-v2", DIMENSION)
    yield s
    s.close()
