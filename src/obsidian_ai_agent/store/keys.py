"""API key rows: only hashes are stored; the key itself is shown once, when it is made."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import IndexStore


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


def m005_key_lineage(db: sqlite3.Connection) -> None:
    """Every key remembers the first key of its rotation chain (`lineage`): what a key's conversations
    belong to, what `revoke` ends, and how `list` shows every live secret of one key."""
    db.execute("ALTER TABLE api_keys ADD COLUMN lineage TEXT")
    db.execute("UPDATE api_keys SET lineage = id")
    rows = db.execute("SELECT id, replaced_by FROM api_keys ORDER BY created_at").fetchall()
    lineage = {r[0]: r[0] for r in rows}
    for key_id, replaced_by in rows:  # oldest first, so a chain's root reaches its last link
        if replaced_by in lineage:
            lineage[replaced_by] = lineage[key_id]
    db.executemany("UPDATE api_keys SET lineage=? WHERE id=?", [(v, k) for k, v in lineage.items()])
    db.execute("CREATE INDEX api_keys_lineage ON api_keys(lineage)")


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
    lineage: str
    """The id of the first key of this key's rotation chain (its own id when never rotated)."""

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active()}


# Keys that work (not revoked, not past their rotation grace) and may hold the admin scope: the scopes are
# a JSON list, so a LIKE on its text narrows (on every backend) and `_holds_admin` decides.
_MAYBE_ADMIN = (
    "SELECT scopes FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
    " AND scopes LIKE ?"
)
_ADMIN_PATTERN = '%"admin"%'


def _holds_admin(rows: Iterable[Any]) -> bool:
    """Whether one of these `scopes` rows lists the admin scope."""
    for r in rows:
        try:
            scopes = json.loads(r[0])
        except ValueError:
            continue
        if isinstance(scopes, list) and "admin" in scopes:
            return True
    return False


_COLUMNS = "id, name, scopes, created_at, last_used_at, expires_at, revoked_at, replaced_by, lineage"


def _row(r: sqlite3.Row | tuple[Any, ...]) -> KeyRow:
    return KeyRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7], r[8] or r[0])


class KeyStore:
    def __init__(self, store: IndexStore) -> None:
        self.store = store

    def insert(
        self, key_id: str, name: str, scopes: list[str], digest: str, *, only_if_no_admin: bool = False
    ) -> bool:
        """Add a key; with `only_if_no_admin`, only when no active key holds the admin scope (one writer
        wins)."""
        with self.store._write() as db:
            if only_if_no_admin and _holds_admin(
                db.execute(_MAYBE_ADMIN, (time.time(), _ADMIN_PATTERN)).fetchall()
            ):
                return False
            db.execute(
                "INSERT INTO api_keys (id, name, scopes, hash, created_at, lineage)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, json.dumps(scopes), digest, time.time(), key_id),
            )
        return True

    def get(self, key_id: str) -> KeyRow | None:
        rows = self.store._query(f"SELECT {_COLUMNS} FROM api_keys WHERE id=?", (key_id,))  # nosec B608
        return _row(rows[0]) if rows else None

    def get_with_digest(self, key_id: str) -> tuple[KeyRow, str] | None:
        """The row and its stored hash, in one query (every authenticated request asks)."""
        rows = self.store._query(f"SELECT {_COLUMNS}, hash FROM api_keys WHERE id=?", (key_id,))  # nosec B608
        return (_row(rows[0]), str(rows[0][9])) if rows else None

    def list(self) -> list[KeyRow]:
        return [_row(r) for r in self.store._query(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")]  # nosec B608

    def count(self) -> int:
        return int(self.store._query("SELECT COUNT(*) FROM api_keys")[0][0])

    def has_active_admin(self) -> bool:
        """Whether some key that still works holds the admin scope."""
        return _holds_admin(self.store._query(_MAYBE_ADMIN, (time.time(), _ADMIN_PATTERN)))

    def touch(self, key_id: str, when: float) -> None:
        with self.store._write() as db:
            db.execute("UPDATE api_keys SET last_used_at=? WHERE id=?", (when, key_id))

    def rotate(self, lineage: str, key_id: str, digest: str, expires_at: float) -> str | None:
        """In one transaction: add `key_id` to the chain `lineage` and retire the chain's newest live key
        (it works until `expires_at`, its replacement is the new key). Older keys of the chain keep the
        expiry they had. Returns the retired key's id, or None when the chain has no live key."""
        now = time.time()
        with self.store._write() as db:
            head = db.execute(
                "SELECT id, name, scopes FROM api_keys WHERE lineage=? AND replaced_by IS NULL"
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
                " ORDER BY created_at DESC LIMIT 1",
                (lineage, now),
            ).fetchone()
            if head is None:
                return None
            db.execute(
                "INSERT INTO api_keys (id, name, scopes, hash, created_at, lineage)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, head[1], head[2], digest, now, lineage),
            )
            db.execute(
                "UPDATE api_keys SET expires_at=?, replaced_by=? WHERE id=?", (expires_at, key_id, head[0])
            )
            return str(head[0])

    def revoke(self, key_id: str) -> None:
        """Revoke the key and every other secret of its rotation chain."""
        with self.store._write() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE revoked_at IS NULL"
                " AND lineage = (SELECT COALESCE(lineage, id) FROM api_keys WHERE id=?)",
                (time.time(), key_id),
            )
