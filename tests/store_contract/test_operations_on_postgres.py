"""The operator's tools on a PostgreSQL index: doctor checks the server, backup says what to use
instead, and the database password never shows in status, checks, errors or logs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.observability.logs import secret_values
from obsidian_ai_agent.ops import doctor
from obsidian_ai_agent.ops.backup import BackupError, create_backup
from obsidian_ai_agent.store import StoreUnavailable
from obsidian_ai_agent.store.postgres import PostgresStore, redact_url

PASSWORD = "s3cret-Pw-17"


@pytest.fixture
def secret_url(pg_url: str) -> str:
    """The test database's URL as a role with a password (the embedded server trusts local sockets, so the
    password is carried, as a real deployment's is, without being checked)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = 'team'"
        ).fetchone():  # roles are per server
            conn.execute(f"CREATE ROLE team LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    parts = urlsplit(pg_url)
    host = parts.netloc.split("@", 1)[1]
    return urlunsplit((parts.scheme, f"team:{PASSWORD}@{host}", parts.path, parts.query, ""))


def test_doctor_checks_the_server_and_backup_points_to_pg_dump_without_showing_the_password(
    secret_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAA_DATABASE_URL", secret_url)
    settings = load_settings(data_dir=tmp_path)
    assert PASSWORD in secret_values(settings)  # the log redactor knows it
    with Engine(settings) as engine:
        engine.store.check_embedding_model("all-MiniLM-L6-v2", 384)
        status = engine.status()
    assert status["database"] == redact_url(secret_url) and PASSWORD not in str(status)
    report = doctor.run_doctor(data_dir=tmp_path, only=["database", "migrations", "backup_age"]).to_dict()
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["database"]["status"] == "pass" and "PostgreSQL 18" in by_name["database"]["reason"]
    assert by_name["migrations"]["status"] == "pass"
    assert by_name["backup_age"]["status"] == "skip" and "pg_dump" in by_name["backup_age"]["reason"]
    assert PASSWORD not in str(report)
    with pytest.raises(BackupError, match="pg_dump"):
        create_backup(settings)


def test_an_unreachable_server_is_a_clear_store_unavailable_without_the_password(secret_url: str) -> None:
    parts = urlsplit(secret_url)
    gone = urlunsplit((parts.scheme, parts.netloc, parts.path, "host=/nonexistent-socket-dir", ""))
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(gone, timeout_s=2)
    text = str(caught.value)
    assert "cannot be reached" in text and "check that it runs" in text and PASSWORD not in text
    assert "team:***@" in text


def test_a_bad_database_url_is_refused_at_start_naming_the_setting(tmp_path: Path) -> None:
    from obsidian_ai_agent.config import ConfigError

    with pytest.raises(ConfigError, match=r"database\.url"):
        load_settings(data_dir=tmp_path, database={"url": "mysql://db/x"})
