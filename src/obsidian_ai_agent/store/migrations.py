"""Numbered schema migrations, applied in order at open; `meta.schema_version` records the last one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .schema import run_script

Migration = Callable[[sqlite3.Connection], None]


def m001_initial(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            title TEXT NOT NULL,
            name_key TEXT NOT NULL,
            aliases TEXT NOT NULL DEFAULT '[]',
            tags TEXT NOT NULL DEFAULT '[]',
            frontmatter TEXT NOT NULL DEFAULT '{}',
            warnings TEXT NOT NULL DEFAULT '[]',
            content_hash TEXT NOT NULL,
            size INTEGER,
            mtime_ns INTEGER,
            indexed_at REAL NOT NULL,
            generation INTEGER NOT NULL
        );
        CREATE INDEX sources_name_key ON sources(name_key);
        CREATE TABLE source_tags (
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (source_id, tag)
        );
        CREATE INDEX source_tags_tag ON source_tags(tag);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            hash TEXT NOT NULL,
            text TEXT NOT NULL,
            heading_path TEXT NOT NULL DEFAULT '[]',
            start_line INTEGER,
            end_line INTEGER,
            page INTEGER,
            vector BLOB NOT NULL,
            generation INTEGER NOT NULL
        );
        CREATE INDEX chunks_source ON chunks(source_id, ordinal);
        CREATE INDEX chunks_hash ON chunks(hash);
        CREATE INDEX chunks_generation ON chunks(generation);
        -- Chunk ids are never reused (AUTOINCREMENT), so a process holding a vector matrix catches up by
        -- reading chunks newer than its generation and the removals recorded here.
        CREATE TABLE chunk_removals (
            chunk_id INTEGER PRIMARY KEY,
            generation INTEGER NOT NULL
        );
        CREATE INDEX chunk_removals_generation ON chunk_removals(generation);
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            title, aliases, headings, tags, body,
            tokenize = 'porter unicode61 remove_diacritics 2'
        );
        CREATE TABLE links (
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            target TEXT NOT NULL,
            target_key TEXT NOT NULL,
            heading TEXT,
            block TEXT,
            alias TEXT,
            embed INTEGER NOT NULL DEFAULT 0,
            line INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX links_source ON links(source_id);
        CREATE INDEX links_target_key ON links(target_key);
        CREATE TABLE failures (
            path TEXT PRIMARY KEY,
            error TEXT NOT NULL,
            content_hash TEXT,
            at REAL NOT NULL
        )
        """,
    )


def m007_chunk_section_starts(db: sqlite3.Connection) -> None:
    """Where each section a chunk of merged tiny sections starts: [[offset, line, heading path], ...],
    so a citation can name the most specific heading (`notes.heading_at`)."""
    db.execute("ALTER TABLE chunks ADD COLUMN section_starts TEXT NOT NULL DEFAULT '[]'")


from .conversations import m003_conversations, m008_conversation_namespaces  # noqa: E402
from .jobs import m002_jobs  # noqa: E402
from .keys import m004_api_keys, m005_key_lineage  # noqa: E402
from .monitoring import m010_monitoring  # noqa: E402
from .ratelimits import m006_rate_limit_hits  # noqa: E402
from .unitvectors import m009_unit_vectors  # noqa: E402

# Append only: a migration's place in this list is its number.
MIGRATIONS: list[Migration] = [
    m001_initial,
    m002_jobs,
    m003_conversations,
    m004_api_keys,
    m005_key_lineage,
    m006_rate_limit_hits,
    m007_chunk_section_starts,
    m008_conversation_namespaces,
    m009_unit_vectors,
    m010_monitoring,
]
