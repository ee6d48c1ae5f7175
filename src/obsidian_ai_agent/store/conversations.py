"""Conversation history rows (filled in by the answers work)."""

from __future__ import annotations

import sqlite3


def m003_conversations(db: sqlite3.Connection) -> None:
    """Schema for conversations and their turns."""
