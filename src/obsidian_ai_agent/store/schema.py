"""What a migration uses to run its SQL (kept apart from the list of migrations, which imports them)."""

from __future__ import annotations

import sqlite3


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: `executescript` would commit the migration's transaction halfway."""
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)
