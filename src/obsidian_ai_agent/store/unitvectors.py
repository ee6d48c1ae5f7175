"""Vectors of answer units (sentences, list items, headings) kept in the index database, so every worker
of a host, and the service after a restart, reuses what one of them embedded for an answer."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .sqlite import Store


def m009_unit_vectors(db: sqlite3.Connection) -> None:
    """Schema for unit vectors: float16, by a digest of the model, its cut and the text."""
    db.execute("CREATE TABLE unit_vectors (digest TEXT PRIMARY KEY, vector BLOB NOT NULL)")


def digest(namespace: str, text: str) -> str:
    return hashlib.sha256(f"{namespace}\0{text}".encode()).hexdigest()[:32]


def load(store: Store, digests: list[str]) -> dict[str, np.ndarray]:
    """The stored vectors among `digests` (float32)."""
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(digests), 500):
        part = digests[i : i + 500]
        marks = ",".join("?" * len(part))
        for row in store._query(f"SELECT digest, vector FROM unit_vectors WHERE digest IN ({marks})", part):  # nosec B608
            out[row[0]] = np.frombuffer(row[1], dtype=np.float16).astype(np.float32)
    return out


def save(store: Store, items: dict[str, np.ndarray], max_entries: int) -> None:
    """Keep `items`, then the newest `max_entries` rows (oldest written go first)."""
    if not items:
        return
    with store._write() as db:
        db.executemany(
            "INSERT OR IGNORE INTO unit_vectors (digest, vector) VALUES (?, ?)",
            [(d, np.asarray(v, dtype=np.float16).tobytes()) for d, v in items.items()],
        )
        over = int(db.execute("SELECT COUNT(*) FROM unit_vectors").fetchone()[0]) - max_entries
        if over > 0:
            db.execute(
                "DELETE FROM unit_vectors WHERE rowid IN"
                " (SELECT rowid FROM unit_vectors ORDER BY rowid LIMIT ?)",
                (over,),
            )


def clear(store: Store) -> int:
    """Forget every kept vector (they are embedded again when next needed); how many there were."""
    with store._write() as db:
        return int(db.execute("DELETE FROM unit_vectors").rowcount)
