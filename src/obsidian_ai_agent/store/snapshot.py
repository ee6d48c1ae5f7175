"""Copies and checks of an index file as a whole: the SQL that backups, restores and `doctor` need.

A copy is taken with SQLite's online backup API in one step: the source connection reads one consistent
snapshot (WAL lets writers go on meanwhile), so a copy taken while a reindex writes is a state the index
was really in, never half of a transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .migrations import MIGRATIONS

COUNTED = ("sources", "chunks", "api_keys", "jobs")
"""The tables whose row counts a backup's manifest records and a restore checks."""


@dataclass
class DatabaseFacts:
    """What an index file says about itself."""

    schema_version: int
    embedding_model: str | None
    embedding_dimension: int | None
    counts: dict[str, int] = field(default_factory=dict)


def latest_schema_version() -> int:
    """The schema version this program's migrations build."""
    return len(MIGRATIONS)


def _reader(path: Path) -> sqlite3.Connection:
    # Not `mode=ro`: a read-only open of a WAL file fails when its -shm cannot be made.
    if not path.is_file():
        raise sqlite3.OperationalError(f"{path} does not exist")
    db = sqlite3.connect(str(path), timeout=30.0)
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA query_only=ON")
    return db


def copy_database(source: Path, target: Path) -> None:
    """Copy the index at `source` to `target` (a new file, mode 0600) as one consistent snapshot."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = _reader(source)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)  # pages=-1: the whole file in one step, under one read snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
    finally:
        src.close()
    with open(target, "rb") as f:
        os.fsync(f.fileno())


def read_facts(path: Path) -> DatabaseFacts:
    """Schema version, embedding model and row counts of an index file (read only)."""
    db = _reader(path)
    try:
        meta: dict[str, str] = {}
        with contextlib.suppress(sqlite3.OperationalError):  # no meta table: not an index yet
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        counts = {}
        for table in COUNTED:
            try:
                counts[table] = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # nosec B608
            except sqlite3.OperationalError:  # a table an older schema does not have yet
                counts[table] = 0
        dim = meta.get("embedding_dimension")
        return DatabaseFacts(
            schema_version=int(meta.get("schema_version") or 0),
            embedding_model=meta.get("embedding_model"),
            embedding_dimension=int(dim) if dim else None,
            counts=counts,
        )
    finally:
        db.close()


def check_database(path: Path, *, quick: bool = False) -> str | None:
    """Why the index file is damaged (`PRAGMA integrity_check` or `quick_check`, then FTS5's own
    integrity check of the keyword index against its content), or None when both pass."""
    try:
        db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    except sqlite3.Error as e:
        return f"cannot open {path}: {e}"
    try:
        db.execute("PRAGMA busy_timeout=30000")
        pragma = "quick_check" if quick else "integrity_check"
        rows = [r[0] for r in db.execute(f"PRAGMA {pragma}").fetchall()]
        if rows != ["ok"]:
            return f"{pragma}: {'; '.join(str(r) for r in rows[:3])}"
        try:
            db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')")
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                return f"FTS5 integrity-check: {e}"
        except sqlite3.DatabaseError as e:
            return f"FTS5 integrity-check: {e}"
        return None
    except sqlite3.DatabaseError as e:
        return f"{path} is not a usable SQLite database: {e}"
    finally:
        db.close()


def copy_before_migration(path: Path) -> Path | None:
    """Before an existing index is migrated: a copy `<file>.pre-migration-v<old version>` made with the
    backup API, so an upgrade can be undone. Returns the copy, or None when no migration is due."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        db = _reader(path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None  # no meta table yet, or a damaged file: the store's own open deals with it
    version = int(row[0]) if row else 0
    if not 0 < version < latest_schema_version():
        return None
    target = path.with_name(f"{path.name}.pre-migration-v{version}")
    if target.exists():
        return target
    partial = path.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        copy_database(path, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
