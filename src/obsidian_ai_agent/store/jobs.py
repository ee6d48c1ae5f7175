"""Job rows: the durable queue's SQL (filled in by the jobs work)."""

from __future__ import annotations

import sqlite3


def m002_jobs(db: sqlite3.Connection) -> None:
    """Schema for jobs, job stages and quarantined sources."""
