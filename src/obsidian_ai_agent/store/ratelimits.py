"""Rate-limit counters in the index database, so that every worker of one host counts against one budget
without Redis: a moving window kept as one row per counted request. `SharedCounters` keeps them in the
SQLite file on a connection of its own; `StoreCounters` through a store, which on PostgreSQL means in the
server every replica shares."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import IndexStore

# The class half of the two-key advisory locks that make one identity's charges one at a time on
# PostgreSQL (the other half is a hash of the identity). Two-key locks never collide with the store's
# one-key write lock.
_PG_LOCK_CLASS = 0x6F6172  # "oar"


def m006_rate_limit_hits(db: sqlite3.Connection) -> None:
    """Schema for rate-limit counters shared by the workers of one host."""
    db.execute("CREATE TABLE rate_limit_hits (identity TEXT NOT NULL, at REAL NOT NULL)")
    db.execute("CREATE INDEX rate_limit_hits_identity ON rate_limit_hits(identity, at)")


class SharedCounters:
    """Moving-window counters on a connection of their own: a charge never waits behind this process's
    searches or index writes on the store's lock, only (briefly) on SQLite's write lock."""

    PRUNE_EVERY = 60.0

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pruned = 0.0

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA synchronous=NORMAL")
            self._db = db
        return self._db

    def hit(self, identity: str, amount: int, window: float, horizon: float) -> tuple[bool, int, float]:
        """Count one request of `identity` if fewer than `amount` fell in the last `window` seconds:
        (allowed, remaining, Unix time at which one more request fits). Rows older than `horizon`
        seconds (the longest window configured) are pruned now and then."""
        now = time.time()
        with self._lock:
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    if now - self._pruned >= self.PRUNE_EVERY:
                        db.execute("DELETE FROM rate_limit_hits WHERE at <= ?", (now - horizon,))
                        self._pruned = now
                    db.execute(
                        "DELETE FROM rate_limit_hits WHERE identity=? AND at <= ?", (identity, now - window)
                    )
                    count, oldest = db.execute(
                        "SELECT COUNT(*), MIN(at) FROM rate_limit_hits WHERE identity=?", (identity,)
                    ).fetchone()
                    allowed = count < amount
                    if allowed:
                        db.execute("INSERT INTO rate_limit_hits VALUES (?, ?)", (identity, now))
                        count += 1
                        oldest = now if oldest is None else oldest
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                from .sqlite import StoreError  # sqlite.py imports the migrations, which import this

                self.close()
                raise StoreError(f"rate-limit counters in {self.path}: {e}") from e
        return allowed, amount - count, float(oldest) + window

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None


class StoreCounters:
    """The same moving-window counters through a store's `rate_limit_hits` table: on PostgreSQL every
    replica counts against one budget. A charge does not queue for the store's write lock (an index write
    may hold it for long): on PostgreSQL the charges of one identity take a lock of their own, and pruning
    skips rows another charge holds. `source` is the store, or what opens it on first use (so a server that
    is down at start only costs the sharing until it answers)."""

    PRUNE_EVERY = 60.0

    def __init__(self, source: IndexStore | Callable[[], IndexStore]) -> None:
        self._store: IndexStore | None = source if isinstance(source, IndexStore) else None
        self._open: Callable[[], IndexStore] | None = None if isinstance(source, IndexStore) else source
        self._lock = threading.Lock()
        self._pruned = 0.0

    @property
    def store(self) -> IndexStore:
        with self._lock:
            if self._store is None:
                assert self._open is not None
                self._store = self._open()
            return self._store

    def hit(self, identity: str, amount: int, window: float, horizon: float) -> tuple[bool, int, float]:
        """As `SharedCounters.hit`."""
        store = self.store
        postgres = store.backend == "postgres"
        now = time.time()
        with store._write(serial=False) as db:
            if postgres:
                db.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK_CLASS}, hashtext(?))", (identity,))
            db.execute("DELETE FROM rate_limit_hits WHERE identity=? AND at <= ?", (identity, now - window))
            count, oldest = db.execute(
                "SELECT COUNT(*), MIN(at) FROM rate_limit_hits WHERE identity=?", (identity,)
            ).fetchone()
            count = int(count)
            allowed = count < amount
            if allowed:
                db.execute("INSERT INTO rate_limit_hits (identity, at) VALUES (?, ?)", (identity, now))
                count += 1
                oldest = now if oldest is None else oldest
            if now - self._pruned >= self.PRUNE_EVERY:
                self._pruned = now
                self._prune(db, now - horizon, postgres)
        return allowed, amount - count, float(oldest) + window

    @staticmethod
    def _prune(db: Any, before: float, postgres: bool) -> None:
        if postgres:  # rows another charge is deleting are left to it: never wait, never deadlock
            db.execute(
                "DELETE FROM rate_limit_hits WHERE ctid IN"
                " (SELECT ctid FROM rate_limit_hits WHERE at <= ? FOR UPDATE SKIP LOCKED)",
                (before,),
            )
        else:
            db.execute("DELETE FROM rate_limit_hits WHERE at <= ?", (before,))

    def close(self) -> None:
        """The store belongs to whoever gave it; one this object opened is closed."""
        with self._lock:
            if self._open is not None and self._store is not None:
                self._store.close()
                self._store = None
