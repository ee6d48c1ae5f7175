"""Rate-limit counters in the index database, so that every worker of one host counts against one budget
without Redis: a moving window kept as one row per counted request."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


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
