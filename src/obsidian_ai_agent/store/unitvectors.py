"""Vectors of answer units (sentences, list items, headings) kept in the index database, so every worker
of a host, and the service after a restart, reuses what one of them embedded for an answer."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .base import IndexStore


def m009_unit_vectors(db: sqlite3.Connection) -> None:
    """Schema for unit vectors: float16, by a digest of the model, its cut and the text."""
    db.execute("CREATE TABLE unit_vectors (digest TEXT PRIMARY KEY, vector BLOB NOT NULL)")


def _written_order(store: IndexStore) -> str:
    """The column that orders rows as they were written: SQLite's rowid; PostgreSQL has none, so its table
    has an identity `id` instead (see pg_schema.py)."""
    return "id" if store.backend == "postgres" else "rowid"


def digest(namespace: str, text: str) -> str:
    return hashlib.sha256(f"{namespace}\0{text}".encode()).hexdigest()[:32]


def load(store: IndexStore, digests: list[str]) -> dict[str, np.ndarray]:
    """The stored vectors among `digests` (float32)."""
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(digests), 500):
        part = digests[i : i + 500]
        where, param = store.any_of("digest", part)
        for row in store._query(f"SELECT digest, vector FROM unit_vectors WHERE {where}", (param,)):  # nosec B608
            out[row[0]] = np.frombuffer(row[1], dtype=np.float16).astype(np.float32)
    return out


def save(store: IndexStore, items: dict[str, np.ndarray], max_entries: int) -> None:
    """Keep `items`, then the newest `max_entries` rows (oldest written go first)."""
    if not items:
        return
    order = _written_order(store)
    with store._write() as db:
        db.executemany(
            "INSERT INTO unit_vectors (digest, vector) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(d, np.asarray(v, dtype=np.float16).tobytes()) for d, v in items.items()],
        )
        over = int(db.execute("SELECT COUNT(*) FROM unit_vectors").fetchone()[0]) - max_entries
        if over > 0:
            db.execute(
                f"DELETE FROM unit_vectors WHERE {order} IN"  # nosec B608
                f" (SELECT {order} FROM unit_vectors ORDER BY {order} LIMIT ?)",
                (over,),
            )


PREPARED = "unit_vectors_prepared"
"""Meta key: the highest chunk id whose units were embedded ahead of questions (new chunks get higher)."""


def clear(store: IndexStore) -> int:
    """Forget every kept vector (they are embedded again when next needed); how many there were."""
    with store._write() as db:
        n = int(db.execute("DELETE FROM unit_vectors").rowcount)
    store.set_meta(PREPARED, "0")
    return n


def count(store: IndexStore) -> int:
    return int(store._query("SELECT COUNT(*) FROM unit_vectors")[0][0])


def chunk_ids_after(store: IndexStore, after: int, limit: int) -> list[int]:
    """The next `limit` chunk ids above `after`, in order: a walk over the index that resumes."""
    rows = store._query("SELECT id FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    return [int(r[0]) for r in rows]
