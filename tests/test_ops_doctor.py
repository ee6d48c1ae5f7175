"""`doctor` on a real install (an indexed data dir, keys, a backup): it passes, and each check fails for the
condition it names."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.ops.backup import create_backup, newest_backup
from obsidian_ai_agent.ops.doctor import Report, run_doctor
from obsidian_ai_agent.security.keys import ensure_admin_key

from .openai_server import free_port

SECRET = "sk-doctor-must-never-print-this"


@pytest.fixture
def install(example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A good install: the indexed example vault, an admin key in admin.key, a fresh backup, a free port,
    an hourly backup schedule. Yields the data dir."""
    engine, _ = example
    data = engine.settings.data_dir
    ensure_admin_key(engine.store, engine.settings)
    engine.close()
    monkeypatch.setenv("OAA_DATA_DIR", str(data))
    monkeypatch.setenv("OAA_SERVER__PORT", str(free_port()))
    monkeypatch.setenv("OAA_BACKUP__SCHEDULE", "3600")
    create_backup(load_settings())
    yield data


def doctor(embedder: Any) -> Report:
    return run_doctor(embedder=embedder)


def statuses(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_doctor_passes_on_a_good_install(install: Path, embedder: Any) -> None:
    report = doctor(embedder)
    assert report.ok, [c for c in report.checks if c.status == "fail"]
    got = statuses(report)
    for name in ("python", "packages", "directories", "port", "admin_key_file", "admin_keys", "key_age"):
        assert got[name] == "pass", name
    for name in ("database", "migrations", "embedding_model", "model_loads", "backup_age", "disk"):
        assert got[name] == "pass", name
    assert all(c.reason for c in report.checks)


def test_doctor_on_the_command_line_prints_json_and_never_a_secret(install: Path) -> None:
    env = {**os.environ, "OAA_LLM__PROVIDER": "openai", "OAA_LLM__API_KEY": SECRET}
    env["OAA_LLM__BASE_URL"] = f"http://user:{SECRET}@127.0.0.1:{free_port()}/v1"
    proc = subprocess.run(
        [sys.executable, "-m", "obsidian_ai_agent.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # the LLM server is unreachable
    report = json.loads(proc.stdout)
    failed = [c["name"] for c in report["checks"] if c["status"] == "fail"]
    assert failed == ["llm"] and not report["ok"]
    assert SECRET not in proc.stdout + proc.stderr
    human = subprocess.run(
        [sys.executable, "-m", "obsidian_ai_agent.cli", "doctor"], capture_output=True, text=True, env=env
    )
    assert human.returncode == 1 and "FAIL llm: cannot reach the LLM server" in human.stdout
    assert SECRET not in human.stdout + human.stderr


def world_readable_key(data: Path) -> None:
    (data / "admin.key").chmod(0o644)


def corrupted_index(data: Path) -> None:
    db = data / "index.sqlite"
    with open(db, "r+b") as f:
        size = db.stat().st_size
        for offset in range(4096, size, 4096 * 3):  # every third page's header overwritten
            f.seek(offset)
            f.write(b"\xff" * 64)


def stale_backup(data: Path) -> None:
    newest = newest_backup(load_settings())
    assert newest is not None
    two_days_ago = time.time() - 2 * 86400
    os.utime(newest, (two_days_ago, two_days_ago))


def old_key(data: Path) -> None:
    with sqlite3.connect(data / "index.sqlite") as db:
        db.execute("UPDATE api_keys SET created_at = ?", (time.time() - 100 * 86400,))


def no_admin_key(data: Path) -> None:
    with sqlite3.connect(data / "index.sqlite") as db:
        db.execute("UPDATE api_keys SET revoked_at = ?", (time.time(),))


def unwritable_log_dir(data: Path) -> None:
    os.environ["OAA_LOGGING__FILE"] = str(data / "missing-folder" / "oaa.log")


def _env(**values: str) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        os.environ.update(values)

    return apply


CONDITIONS = {
    "admin_key_file": world_readable_key,
    "database": corrupted_index,
    "backup_age": stale_backup,
    "key_age": old_key,
    "admin_keys": no_admin_key,
    "directories": unwritable_log_dir,
    "llm": lambda data: _env(
        OAA_LLM__PROVIDER="openai", OAA_LLM__BASE_URL=f"http://127.0.0.1:{free_port()}/v1"
    )(data),
    "embedding_model": _env(OAA_EMBEDDING__PROVIDER="openai", OAA_EMBEDDING__MODEL="nomic-embed-text"),
    "secrets": _env(OAA_LLM__API_KEY="changeme"),
    "redis": lambda data: _env(OAA_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")(data),
}


@pytest.mark.parametrize("check", sorted(CONDITIONS))
def test_each_check_fails_for_the_condition_it_names(
    check: str, install: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("OAA_"):
            monkeypatch.setenv(key, os.environ[key])  # restored after the test, whatever the condition sets
    for key in ("OAA_LLM__PROVIDER", "OAA_LLM__BASE_URL", "OAA_LLM__API_KEY", "OAA_EMBEDDING__PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    for key in ("OAA_EMBEDDING__MODEL", "OAA_REDIS_URL", "OAA_LOGGING__FILE"):
        monkeypatch.delenv(key, raising=False)
    CONDITIONS[check](install)
    report = run_doctor(embedder=embedder, only=[check])
    (result,) = report.checks
    assert result.status == "fail", result
    assert result.reason and result.fix and not report.ok
    assert "changeme" not in result.reason


def test_the_port_check_fails_when_something_listens_there(install: Path, embedder: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(os.environ["OAA_SERVER__PORT"])))
        sock.listen()
        (result,) = run_doctor(embedder=embedder, only=["port"]).checks
    assert result.status == "fail" and "cannot bind" in result.reason


def _certificate(tmp: Path, days: float, matching: bool = True) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"cert-{days}.pem", tmp / f"key-{days}.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        (key if matching else other).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize(
    ("days", "matching", "status", "words"),
    [
        (365, True, "pass", "match"),
        (10, True, "warn", "expires in"),
        (-1, True, "fail", "not valid now"),
        (365, False, "fail", "does not match"),
    ],
)
def test_the_tls_check_reads_expiry_and_the_key_pair(
    days: float,
    matching: bool,
    status: str,
    words: str,
    install: Path,
    tmp_path: Path,
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = _certificate(tmp_path, days, matching)
    monkeypatch.setenv("OAA_SERVER__SSL_CERTFILE", str(cert))
    monkeypatch.setenv("OAA_SERVER__SSL_KEYFILE", str(key))
    (result,) = run_doctor(embedder=embedder, only=["tls"]).checks
    assert result.status == status and words in result.reason, result


def test_settings_that_do_not_load_are_one_failed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAA_SEARCH__DEFAULT_MODE", "fuzzy")
    report = run_doctor()
    assert [c.name for c in report.checks] == ["settings"] and not report.ok
    assert "search.default_mode" in report.checks[0].reason
