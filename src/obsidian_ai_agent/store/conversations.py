"""Conversation history and the shared answer cache: their schema and SQL."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sqlite import Store


def m003_conversations(db: sqlite3.Connection) -> None:
    """Schema for conversations, their turns, and cached answers."""
    db.execute(
        "CREATE TABLE conversations ("
        " id TEXT PRIMARY KEY,"
        " owner TEXT NOT NULL DEFAULT '',"
        " title TEXT NOT NULL DEFAULT '',"
        " created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX conversations_owner ON conversations(owner, updated_at)")
    db.execute(
        "CREATE TABLE conversation_turns ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
        " role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),"
        " content TEXT NOT NULL,"
        " query TEXT,"
        " citations TEXT NOT NULL DEFAULT '[]',"
        " created_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX conversation_turns_conv ON conversation_turns(conversation_id, id)")
    # Keys already carry the index generation, so entries of an older index are simply never asked for;
    # `used_at` orders the least recently used out when the table is over its size.
    db.execute(
        "CREATE TABLE answer_cache ( key TEXT PRIMARY KEY, value TEXT NOT NULL, used_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX answer_cache_used ON answer_cache(used_at)")


class ConversationNotFound(LookupError):
    """No conversation with this id belongs to this owner."""


@dataclass
class Turn:
    role: str
    content: str
    query: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)


def new_conversation(store: Store, owner: str = "", title: str = "") -> str:
    cid = uuid.uuid4().hex
    now = time.time()
    with store._write() as db:
        db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", (cid, owner, title[:200], now, now))
    return cid


def ensure_conversation(store: Store, cid: str, owner: str = "") -> None:
    """Create the conversation under this id if it is new; refuse one that belongs to another owner."""
    now = time.time()
    with store._write() as db:
        row = db.execute("SELECT owner FROM conversations WHERE id=?", (cid,)).fetchone()
        if row is None:
            db.execute("INSERT INTO conversations VALUES (?, ?, '', ?, ?)", (cid, owner, now, now))
        elif row[0] != owner:
            raise ConversationNotFound(f"no conversation '{cid}' for this owner")


def conversation_turns(store: Store, cid: str, owner: str = "") -> list[Turn]:
    """The turns of a conversation, oldest first."""
    if not store._query("SELECT 1 FROM conversations WHERE id=? AND owner=?", (cid, owner)):
        raise ConversationNotFound(f"no conversation '{cid}' for this owner")
    rows = store._query(
        "SELECT role, content, query, citations FROM conversation_turns WHERE conversation_id=? ORDER BY id",
        (cid,),
    )
    return [Turn(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def add_turns(store: Store, cid: str, turns: list[Turn], keep: int) -> None:
    """Append turns and keep only the newest `keep` of the conversation."""
    now = time.time()
    with store._write() as db:
        db.executemany(
            "INSERT INTO conversation_turns (conversation_id, role, content, query, citations, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (cid, t.role, t.content, t.query, json.dumps(t.citations, ensure_ascii=False), now)
                for t in turns
            ],
        )
        db.execute(
            "DELETE FROM conversation_turns WHERE conversation_id=? AND id NOT IN"
            " (SELECT id FROM conversation_turns WHERE conversation_id=? ORDER BY id DESC LIMIT ?)",
            (cid, cid, keep),
        )
        db.execute(
            "UPDATE conversations SET updated_at=?, title=CASE WHEN title='' THEN ? ELSE title END"
            " WHERE id=?",
            (now, (turns[0].content if turns else "")[:200], cid),
        )


def list_conversations(store: Store, owner: str = "", limit: int = 50) -> list[dict[str, Any]]:
    rows = store._query(
        "SELECT id, title, created_at, updated_at FROM conversations WHERE owner=?"
        " ORDER BY updated_at DESC LIMIT ?",
        (owner, limit),
    )
    return [{"id": r[0], "title": r[1], "created_at": r[2], "updated_at": r[3]} for r in rows]


def delete_conversation(store: Store, cid: str, owner: str = "") -> bool:
    with store._write() as db:
        return db.execute("DELETE FROM conversations WHERE id=? AND owner=?", (cid, owner)).rowcount > 0


# -- answer cache ---------------------------------------------------------------------------------


def cache_get(store: Store, key: str) -> str | None:
    rows = store._query("SELECT value FROM answer_cache WHERE key=?", (key,))
    if not rows:
        return None
    with store._write() as db:
        db.execute("UPDATE answer_cache SET used_at=? WHERE key=?", (time.time(), key))
    return str(rows[0][0])


def cache_put(store: Store, key: str, value: str, max_entries: int) -> None:
    with store._write() as db:
        db.execute("INSERT OR REPLACE INTO answer_cache VALUES (?, ?, ?)", (key, value, time.time()))
        n = int(db.execute("SELECT COUNT(*) FROM answer_cache").fetchone()[0])
        if n > max_entries:
            db.execute(
                "DELETE FROM answer_cache WHERE key IN"
                " (SELECT key FROM answer_cache ORDER BY used_at LIMIT ?)",
                (n - max_entries,),
            )


def cache_clear(store: Store) -> int:
    with store._write() as db:
        return int(db.execute("DELETE FROM answer_cache").rowcount)


def cache_count(store: Store) -> int:
    return int(store._query("SELECT COUNT(*) FROM answer_cache")[0][0])
