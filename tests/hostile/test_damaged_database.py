"""A damaged index and a read-only data directory (issue 9, holes 8 and 9).

The read-only directory is made with `chattr +i` (as root) on the data directory, index.sqlite and its
-wal file: nothing can be created in the directory and neither file can be written, even through the
descriptors the running service holds. The -shm file is left alone: SQLite maps it into memory, and an
immutable mapped file kills the process with SIGBUS on the next write to the mapping. (A read-only bind
mount does not reach the service's open descriptors, so it would not test a running service.)
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.security import keys
from obsidian_ai_agent.store import DatabaseDamaged, Store

from .service import bearer, key_for, make_app, service_settings

ROOT = Path(__file__).resolve().parents[2]


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAA_")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "obsidian_ai_agent.cli", "--data-dir", str(data), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str], path: Path) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "--allow-new-database" in lines[0], lines[0]
    return lines[0]


def a_data_dir_with_a_key(tmp_path: Path) -> tuple[Path, str]:
    """A data dir whose first start wrote admin.key, as a running service leaves it."""
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    with Engine(settings) as engine:
        keys.ensure_admin_key(engine.store, settings)
    return data, (data / "admin.key").read_text()


# -- 9: empty and damaged files -------------------------------------------------------------------


def test_a_zero_byte_database_is_refused_in_one_line_by_the_cli_and_serve_and_admin_key_is_kept(
    tmp_path: Path,
) -> None:
    data, admin = a_data_dir_with_a_key(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    (data / "index.sqlite").write_bytes(b"")
    one_line_error(cli(data, "status"), data / "index.sqlite")
    one_line_error(cli(data, "serve", "--no-index", "--port", "1"), data / "index.sqlite")
    # Before: the empty file became a new index and admin.key was overwritten with a new key.
    assert (data / "admin.key").read_text() == admin
    assert (data / "index.sqlite").stat().st_size == 0


def test_allowed_a_new_database_moves_the_damaged_one_aside_and_the_admin_key_keeps_working(
    tmp_path: Path,
) -> None:
    data, admin = a_data_dir_with_a_key(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    (data / "index.sqlite").write_bytes(b"")
    settings = load_settings(data_dir=data, allow_new_database=True)
    with Engine(settings) as engine:
        assert keys.ensure_admin_key(engine.store, settings) is None  # no new key file
        assert keys.verify(engine.store, admin.strip()) is not None
    assert (data / "admin.key").read_text() == admin
    assert [p.name for p in data.glob("index.sqlite.damaged-*")]


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not SQLite, it is a note someone saved over the index\n" * 100)
    with pytest.raises(DatabaseDamaged, match="--allow-new-database") as e:
        Store(path)
    assert str(path) in str(e.value)
    one_line_error(cli(tmp_path, "status"), path)


def corrupt_mid_file(path: Path) -> None:
    """Garbage over the pages of the chunk and full-text tables; the header and meta stay readable."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        roots = [
            r[0]
            for r in db.execute(
                "SELECT rootpage FROM sqlite_master"
                " WHERE name IN ('chunks', 'chunks_fts_data', 'chunks_fts_idx')"
            )
        ]
    with open(path, "r+b") as f:
        for root in roots:
            f.seek((root - 1) * page)
            f.write(os.urandom(page))


def test_garbage_mid_file_makes_search_and_status_answer_503_in_the_error_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    (s.vault / "Trip.md").write_text("# Trip\n\nPack the tent and the stove for the lake trip.\n")
    with Engine(s, embedder=embedder) as engine:
        engine.index(s.vault)
        keys.ensure_admin_key(engine.store, s)
    read = bearer(key_for(s, ["read"]))
    corrupt_mid_file(s.database_path)
    with TestClient(make_app(s, embedder)) as c:
        for method, path, body in (
            ("POST", "/api/search", {"query": "tent stove", "mode": "keyword"}),
            ("GET", "/status", None),
        ):
            r = c.request(method, path, json=body, headers=read)
            assert r.status_code == 503, (path, r.status_code, r.text)  # search was a 500
            error = r.json()["error"]
            assert str(s.database_path) in error["message"], error
    result = cli(s.data_dir, "search", "tent stove", "--mode", "keyword")
    assert "Traceback" not in result.stderr and str(s.database_path) in result.stderr, result.stderr


# -- 8: a read-only data directory ----------------------------------------------------------------


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def test_a_read_only_data_directory_answers_writes_503_reports_it_in_health_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.geteuid() == 0, "this test makes the data directory immutable with chattr, as root"
    s = service_settings(tmp_path, monkeypatch)
    frozen = [s.data_dir, s.database_path, Path(f"{s.database_path}-wal")]
    with TestClient(make_app(s)) as c:
        admin = bearer((s.data_dir / "admin.key").read_text().strip())
        note = {**admin, "Content-Type": "text/markdown"}
        assert c.put("/api/notes/Before.md", content=b"# Before", headers=note).status_code == 202
        assert all(p.exists() for p in frozen)
        try:
            chattr("+i", *frozen)
            r = c.put("/api/notes/During.md", content=b"# During", headers=note)
            assert r.status_code == 503, r.text  # was 500, "an unexpected error"
            error = r.json()["error"]
            assert error["code"] == "data_dir_not_writable"
            assert "the data directory is not writable" in error["message"]
            health = c.get("/api/health/detailed", headers=admin).json()
            assert health["components"]["data_dir"]["state"] == "down"
            assert health["status"] == "down"
            assert c.get("/status", headers=admin).status_code == 200  # reads still work
        finally:
            chattr("-i", *frozen)
        # Writable again: no restart needed.
        assert c.put("/api/notes/After.md", content=b"# After", headers=note).status_code == 202
        health = c.get("/api/health/detailed", headers=admin).json()
        assert health["components"]["data_dir"]["state"] == "ok"
