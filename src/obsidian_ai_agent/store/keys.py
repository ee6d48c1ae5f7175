"""API key rows: only hashes are stored; the key itself is shown once, when it is made."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sqlite import Store


def m004_api_keys(db: sqlite3.Connection) -> None:
    """Schema for API keys."""
    db.execute(
        "CREATE TABLE api_keys ("
        " id TEXT PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " scopes TEXT NOT NULL,"
        " hash TEXT NOT NULL,"
        " created_at REAL NOT NULL,"
        " last_used_at REAL,"
        " expires_at REAL,"
        " revoked_at REAL,"
        " replaced_by TEXT)"
    )


@dataclass
class KeyRow:
    id: str
    name: str
    scopes: list[str]
    created_at: float
    last_used_at: float | None
    expires_at: float | None
    """Set when the key was rotated: it works until then, beside its replacement."""
    revoked_at: float | None
    replaced_by: str | None

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active()}


_COLUMNS = "id, name, scopes, created_at, last_used_at, expires_at, revoked_at, replaced_by"


def _row(r: sqlite3.Row | tuple[Any, ...]) -> KeyRow:
    return KeyRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7])


class KeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def insert(
        self, key_id: str, name: str, scopes: list[str], digest: str, *, only_if_none: bool = False
    ) -> bool:
        """Add a key; with `only_if_none`, only when the table has no key at all (one writer wins)."""
        with self.store._write() as db:
            if only_if_none and db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone():
                return False
            db.execute(
                "INSERT INTO api_keys (id, name, scopes, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, name, json.dumps(scopes), digest, time.time()),
            )
        return True

    def get(self, key_id: str) -> KeyRow | None:
        rows = self.store._query(f"SELECT {_COLUMNS} FROM api_keys WHERE id=?", (key_id,))
        return _row(rows[0]) if rows else None

    def get_with_digest(self, key_id: str) -> tuple[KeyRow, str] | None:
        """The row and its stored hash, in one query (every authenticated request asks)."""
        rows = self.store._query(f"SELECT {_COLUMNS}, hash FROM api_keys WHERE id=?", (key_id,))
        return (_row(rows[0]), str(rows[0][8])) if rows else None

    def list(self) -> list[KeyRow]:
        return [_row(r) for r in self.store._query(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")]

    def count(self) -> int:
        return int(self.store._query("SELECT COUNT(*) FROM api_keys")[0][0])

    def touch(self, key_id: str, when: float) -> None:
        with self.store._write() as db:
            db.execute("UPDATE api_keys SET last_used_at=? WHERE id=?", (when, key_id))

    def retire(self, key_id: str, expires_at: float, replaced_by: str) -> None:
        with self.store._write() as db:
            db.execute(
                "UPDATE api_keys SET expires_at=?, replaced_by=? WHERE id=?",
                (expires_at, replaced_by, key_id),
            )

    def revoke(self, key_id: str) -> None:
        with self.store._write() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (time.time(), key_id)
            )
