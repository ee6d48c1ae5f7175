"""Conversation history and the shared answer cache: their schema and SQL."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import IndexStore


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


def m008_conversation_namespaces(db: sqlite3.Connection) -> None:
    """A conversation id chosen by a client is only a name inside its owner's namespace (`client_id`),
    so no key can claim, block or read an id another key uses; rows keep their internal `id`."""
    db.execute("ALTER TABLE conversations ADD COLUMN client_id TEXT")
    db.execute("UPDATE conversations SET client_id = id")
    db.execute("CREATE UNIQUE INDEX conversations_client ON conversations(owner, client_id)")


class ConversationNotFound(LookupError):
    """No conversation with this id belongs to this owner."""


@dataclass
class Turn:
    role: str
    content: str
    query: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)


# A conversation that exists already (same owner and id) is kept as it is.
_INSERT = (
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, client_id)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def new_conversation(store: IndexStore, owner: str = "", title: str = "") -> str:
    """A new conversation of `owner`; its id (the one the client uses)."""
    cid = uuid.uuid4().hex
    now = time.time()
    with store._write() as db:
        db.execute(_INSERT, (uuid.uuid4().hex, owner, title[:200], now, now, cid))
    return cid


def _row_id(store: IndexStore, cid: str, owner: str) -> str:
    rows = store._query("SELECT id FROM conversations WHERE owner=? AND client_id=?", (owner, cid))
    if not rows:
        raise ConversationNotFound(f"no conversation '{cid}' for this owner")
    return str(rows[0][0])


def ensure_conversation(store: IndexStore, cid: str, owner: str = "") -> None:
    """Create the conversation `cid` of `owner` if it is new. Ids are per owner: another owner's
    conversation of the same id is a different one, never seen from here."""
    now = time.time()
    with store._write() as db:
        db.execute(_INSERT, (uuid.uuid4().hex, owner, "", now, now, cid))


def conversation_turns(store: IndexStore, cid: str, owner: str = "") -> list[Turn]:
    """The turns of a conversation, oldest first."""
    rows = store._query(
        "SELECT role, content, query, citations FROM conversation_turns WHERE conversation_id=? ORDER BY id",
        (_row_id(store, cid, owner),),
    )
    return [Turn(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def add_turns(store: IndexStore, cid: str, turns: list[Turn], keep: int, owner: str = "") -> None:
    """Append turns and keep only the newest `keep` of the conversation."""
    now = time.time()
    cid = _row_id(store, cid, owner)
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


def list_conversations(store: IndexStore, owner: str = "", limit: int = 50) -> list[dict[str, Any]]:
    rows = store._query(
        "SELECT client_id, title, created_at, updated_at FROM conversations WHERE owner=?"
        " ORDER BY updated_at DESC LIMIT ?",
        (owner, limit),
    )
    return [{"id": r[0], "title": r[1], "created_at": r[2], "updated_at": r[3]} for r in rows]


def delete_conversation(store: IndexStore, cid: str, owner: str = "") -> bool:
    with store._write() as db:
        deleted = db.execute("DELETE FROM conversations WHERE client_id=? AND owner=?", (cid, owner))
        return deleted.rowcount > 0


# -- answer cache ---------------------------------------------------------------------------------


# A hit refreshes its entry's place in the least-recently-used order at most this often: a write per hit
# made every cached answer queue for the database's write lock under load.
TOUCH_EVERY = 60.0


def cache_get(store: IndexStore, key: str) -> str | None:
    rows = store._query("SELECT value, used_at FROM answer_cache WHERE key=?", (key,))
    if not rows:
        return None
    now = time.time()
    if now - float(rows[0][1]) > TOUCH_EVERY:
        with store._write() as db:
            db.execute("UPDATE answer_cache SET used_at=? WHERE key=?", (now, key))
    return str(rows[0][0])


def cache_put(store: IndexStore, key: str, value: str, max_entries: int) -> None:
    with store._write() as db:
        db.execute(
            "INSERT INTO answer_cache (key, value, used_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value, used_at=excluded.used_at",
            (key, value, time.time()),
        )
        n = int(db.execute("SELECT COUNT(*) FROM answer_cache").fetchone()[0])
        if n > max_entries:
            db.execute(
                "DELETE FROM answer_cache WHERE key IN"
                " (SELECT key FROM answer_cache ORDER BY used_at LIMIT ?)",
                (n - max_entries,),
            )


def cache_clear(store: IndexStore) -> int:
    with store._write() as db:
        return int(db.execute("DELETE FROM answer_cache").rowcount)


def cache_count(store: IndexStore) -> int:
    return int(store._query("SELECT COUNT(*) FROM answer_cache")[0][0])
