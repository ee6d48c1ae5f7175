"""`store copy`: an index moved between backends (SQLite <-> PostgreSQL) without re-embedding.

Each source moves in one transaction of the target, with its chunks, vectors, keyword fields and links,
written by the target's own `put_source` (so its keyword index is its own). A source already in the target
with the same content hash and chunk hashes is skipped: an interrupted copy run again resumes where it
stopped, and a copy run twice changes nothing. Sources the target holds but the origin does not are
removed, so the target ends as a copy. Then the tables a deployment cannot lose are upserted: API keys
(revocations included), conversations and their turns, failures and quarantined sources, the vault root.
Left behind on purpose: the answer cache and sentence vectors (rebuilt on use), job history, monitor
samples and alerts (the old deployment's operations, not the index).

`verify` checks what a person would: equal counts, and for sampled chunks the same ten nearest chunks by
exact cosine search on both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import IndexStore, StoreError

TABLES: dict[str, tuple[str, list[str]]] = {
    # table: (primary key, columns)
    "api_keys": (
        "id",
        ["id", "name", "scopes", "hash", "created_at", "last_used_at", "expires_at", "revoked_at",
         "replaced_by", "lineage"],
    ),
    "conversations": ("id", ["id", "owner", "title", "created_at", "updated_at", "client_id"]),
    "failures": ("path", ["path", "error", "content_hash", "at"]),
    "quarantine": (
        "path",
        ["path", "stage", "error", "content_hash", "attempts", "job_id", "first_at", "last_at"],
    ),
}  # fmt: skip
TURN_COLUMNS = ["conversation_id", "role", "content", "query", "citations", "created_at"]
COUNTED = ("sources", "chunks", "links", "source_tags", "api_keys", "conversations", "conversation_turns")

Progress = Callable[[int, int, str], None]


@dataclass
class CopyReport:
    origin: str
    target: str
    copied: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    verified: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.origin,
            "to": self.target,
            "sources_copied": self.copied,
            "sources_unchanged": self.unchanged,
            "sources_removed": self.removed,
            "chunks_copied": self.chunks,
            "rows": self.rows,
            "seconds": round(self.seconds, 2),
            "verified": self.verified,
        }


def _fingerprints(store: IndexStore) -> dict[str, str]:
    """path -> content hash and every chunk hash in order: equal exactly when a copy would be a no-op."""
    out: dict[str, list[str]] = {}
    for path, content, chunk in store._query(
        "SELECT s.path, s.content_hash, c.hash FROM sources s LEFT JOIN chunks c ON c.source_id = s.id"
        " ORDER BY s.path, c.ordinal, c.id"
    ):
        out.setdefault(path, [content]).append(chunk or "")
    return {p: "|".join(v) for p, v in out.items()}


def copy_store(origin: IndexStore, target: IndexStore, progress: Progress | None = None) -> CopyReport:
    started = time.monotonic()
    report = CopyReport(origin.location, target.location)
    model, dim = origin.get_meta("embedding_model"), origin.get_meta("embedding_dimension")
    if model and dim:
        target.check_embedding_model(model, int(dim))  # refuses a target holding another model's vectors
    have, want = _fingerprints(target), _fingerprints(origin)
    paths = sorted(want)
    for i, path in enumerate(paths, 1):
        if have.get(path) == want[path]:
            report.unchanged += 1
        else:
            record = origin.source_dump(path)
            if record is not None:  # else removed from the origin meanwhile
                target.put_source(record)
                report.copied += 1
                report.chunks += len(record.chunks)
        if progress:
            progress(i, len(paths), path)
    for path in sorted(set(have) - set(want)):
        target.delete_source(path)
        report.removed += 1
    report.rows = _copy_tables(origin, target)
    root = origin.get_meta("vault_root")
    if root:
        target.set_meta("vault_root", root)
    report.seconds = time.monotonic() - started
    return report


def _copy_tables(origin: IndexStore, target: IndexStore) -> dict[str, int]:
    rows: dict[str, int] = {}
    for table, (key, cols) in TABLES.items():
        data = [tuple(r) for r in origin._query(f"SELECT {', '.join(cols)} FROM {table}")]  # nosec B608
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c != key)
        with target._write() as db:
            db.executemany(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"  # nosec B608
                f" ON CONFLICT ({key}) DO UPDATE SET {updates}",
                data,
            )
        rows[table] = len(data)
    # Turns have ids of their own store: a conversation's turns are replaced as a whole, in order.
    turns = origin._query(f"SELECT {', '.join(TURN_COLUMNS)} FROM conversation_turns ORDER BY id")  # nosec B608
    by_conversation: dict[str, list[tuple[Any, ...]]] = {}
    for t in turns:
        by_conversation.setdefault(t[0], []).append(tuple(t))
    with target._write() as db:
        for cid, items in by_conversation.items():
            db.execute("DELETE FROM conversation_turns WHERE conversation_id=?", (cid,))
            db.executemany(
                f"INSERT INTO conversation_turns ({', '.join(TURN_COLUMNS)})"  # nosec B608
                f" VALUES ({', '.join('?' * len(TURN_COLUMNS))})",
                items,
            )
    rows["conversation_turns"] = len(turns)
    return rows


def counts(store: IndexStore) -> dict[str, int]:
    return {t: int(store._query(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in COUNTED}  # nosec B608


def _nearest(
    store: IndexStore, matrix: tuple[np.ndarray, np.ndarray] | None, vec: np.ndarray, k: int
) -> list[tuple[int, float]]:
    if matrix is None:
        return store.exact_vector_search(vec, k)  # type: ignore[attr-defined]
    ids, mat = matrix
    scores = mat @ vec
    top = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in top]


def _same(a: list[tuple[Any, float]], b: list[tuple[Any, float]]) -> bool:
    """The same chunks with the same similarities (to float32 rounding); order among equal scores free."""
    if {key for key, _ in a} != {key for key, _ in b}:
        return False
    return all(
        abs(x - y) < 1e-4
        for (_, x), (_, y) in zip(sorted(a, key=lambda t: -t[1]), sorted(b, key=lambda t: -t[1]), strict=True)
    )


def verify(origin: IndexStore, target: IndexStore, samples: int = 20, k: int = 10) -> dict[str, Any]:
    """Equal counts, and the same k nearest chunks (by source path and ordinal, with their similarities)
    for chunks sampled across the origin."""
    a, b = counts(origin), counts(target)
    result: dict[str, Any] = {"counts": a, "counts_equal": a == b}
    if a != b:
        result["target_counts"] = b
    stores = (origin, target)
    matrices: list[tuple[np.ndarray, np.ndarray] | None] = []
    for s in stores:
        if getattr(s, "native_vectors", False):
            matrices.append(None)
        else:
            ids, _, mat = s.load_vectors()
            matrices.append((ids, mat))
    sql = "SELECT c.id, s.path, c.ordinal FROM chunks c JOIN sources s ON s.id = c.source_id"
    keyed = [{int(r[0]): (r[1], int(r[2])) for r in s._query(sql)} for s in stores]
    probes = origin._query("SELECT id, vector FROM chunks ORDER BY id")
    step = max(1, len(probes) // max(1, samples))
    same = checked = 0
    for row in probes[::step][:samples]:
        vec = origin._vector(row[1])
        found = [
            [(keyed[i].get(cid), score) for cid, score in _nearest(s, matrices[i], vec, k)]
            for i, s in enumerate(stores)
        ]
        checked += 1
        same += _same(found[0], found[1])
    result.update({"nearest_checked": checked, "nearest_identical": same})
    result["ok"] = bool(result["counts_equal"]) and same == checked
    return result


def open_target(spec: str, *, pool_size: int = 4, timeout_s: float = 10.0) -> IndexStore:
    """The store a `--to`/`--from` names: a postgresql:// URL, or an SQLite file (a folder: its
    index.sqlite)."""
    from pathlib import Path

    from .sqlite import Store

    if spec.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(spec, pool_size=pool_size, timeout_s=timeout_s)
    if "://" in spec:
        raise StoreError(
            f"{spec.split('://')[0]}:// is not a store; give a postgresql:// URL or an SQLite file"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "index.sqlite"
    return Store(path)
