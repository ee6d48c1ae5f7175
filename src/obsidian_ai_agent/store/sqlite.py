"""The SQLite store: the only code that speaks SQL. One file, WAL mode, foreign keys on."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..notes.model import ParsedSource
from .migrations import MIGRATIONS
from .snapshot import copy_before_migration


class StoreError(Exception):
    """The store cannot be used as asked."""


class DatabaseDamaged(StoreError, sqlite3.DatabaseError):
    """The index file is not a usable SQLite database (empty, truncated, or garbage inside)."""


class DataDirNotWritable(StoreError, sqlite3.OperationalError):
    """A write failed because the data directory (or the index file) cannot be written."""


WHAT_TO_DO = (
    "restore it from a backup, or move it away and rebuild the index with `obsidian-ai-agent index`; "
    "or start with --allow-new-database (OAA_ALLOW_NEW_DATABASE=true), which moves it aside and starts "
    "a new, empty index"
)
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_UNWRITABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM", "SQLITE_AUTH")


def _make_private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)


class ModelMismatchError(StoreError):
    """The index was built with another embedding model; its vectors must not be mixed with new ones."""


def name_key(path_or_target: str) -> str:
    """How Obsidian resolves `[[Name]]`: by file name, case-insensitively, without `.md`."""
    name = PurePosixPath(path_or_target).name
    if name.lower().endswith(".md"):
        name = name[:-3]
    return name.lower()


@dataclass(frozen=True)
class SourceState:
    id: int
    path: str
    kind: str
    content_hash: str
    size: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class ChunkRow:
    id: int
    source_id: int
    path: str
    kind: str
    title: str
    text: str
    heading_path: list[str]
    start_line: int | None
    end_line: int | None
    page: int | None
    section_starts: list[list[Any]] = field(default_factory=list)  # see notes.heading_at


@dataclass(frozen=True)
class SourceInfo:
    id: int
    path: str
    kind: str
    title: str
    aliases: list[str]
    tags: list[str]


class _Reader:
    """A thread's read connection, closed when the thread's locals go."""

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __del__(self) -> None:
        with suppress(sqlite3.Error):
            self.db.close()


class Store:
    """Named operations on the index database. Safe to share between threads: writes go one at a time
    through one connection; reads run on a connection per thread, side by side (WAL), so a search never
    waits behind a write queued on another process's write lock. A read inside a write transaction uses
    the writing connection, and sees the transaction's rows."""

    def __init__(self, path: Path, *, allow_new: bool = False) -> None:
        """Open (or create) the index at `path`. An existing file that is empty or not a database is
        refused with DatabaseDamaged, never taken as a new index, unless `allow_new`: then it is moved
        aside (`<name>.damaged-<time>`) and a new index is made in its place."""
        self.path = Path(path)
        _make_private_dir(self.path.parent)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        try:
            self._open()
        except DatabaseDamaged as e:
            if not allow_new:
                raise
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            import logging

            logging.getLogger(__name__).warning(
                "%s; moved it to %s and started a new, empty index (--allow-new-database)", e, aside
            )
            self._open()

    def _open(self) -> None:
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise DatabaseDamaged(
                f"the index database {self.path} is empty (0 bytes), not an index; {WHAT_TO_DO}"
            )
        if not self.path.exists():
            # SQLite gives its -wal and -shm files the database file's mode: make that 0600 first.
            with suppress(FileExistsError):  # another worker made it meanwhile
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
            self._db.execute("SELECT COUNT(*) FROM sources").fetchone()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise self._translate(e) from e

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for reader in list(self._readers):
                reader.db.close()

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read connection; None when none can be opened (then reads share the writer's).
        It is closed when its thread ends (request threads come and go) or the store closes."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            if getattr(self._local, "no_reader", False):
                return None
            try:
                db = sqlite3.connect(
                    str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA busy_timeout=30000")
                db.execute("PRAGMA query_only=ON")
            except sqlite3.Error:
                self._local.no_reader = True
                return None
            reader = self._local.reader = _Reader(db)
            with self._lock:
                self._readers.add(reader)
        return reader.db

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _translate(self, e: sqlite3.DatabaseError) -> sqlite3.DatabaseError:
        """A damaged file or an unwritable data directory as its own error, with what to do; any other
        error unchanged."""
        if isinstance(e, StoreError):
            return e
        name = getattr(e, "sqlite_errorname", "") or ""
        text = str(e)
        if name.startswith(_DAMAGED) or "malformed" in text or "not a database" in text:
            return DatabaseDamaged(f"the index database {self.path} is damaged ({text}); {WHAT_TO_DO}")
        if name.startswith(_UNWRITABLE) or "readonly" in text:
            problem = self.unwritable()
            if problem:
                return DataDirNotWritable(
                    f"the data directory is not writable: {problem}; the index can be searched but not "
                    "changed until it is writable again (check the mount, permissions and `lsattr`)"
                )
        return e

    def unwritable(self) -> str | None:
        """Why the data directory or the index file cannot be written now, or None when both can."""
        folder = self.path.parent
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            return f"cannot create a file in {folder} ({e.strerror or e})"
        for p in (self.path, Path(f"{self.path}-wal")):
            try:
                if p.exists():
                    with open(p, "r+b"):
                        pass
            except OSError as e:
                return f"cannot write {p} ({e.strerror or e})"
        return None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so concurrent writers queue instead of deadlocking."""
        with self._lock:
            self._local.writing = getattr(self._local, "writing", 0) + 1
            try:
                with self._transaction() as db:
                    yield db
            finally:
                self._local.writing -= 1

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            translated = self._translate(e)
            if translated is e:
                raise
            if self._db.in_transaction:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise translated from e

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        reader = None if getattr(self._local, "writing", 0) else self._reader()
        if reader is not None:
            return self._fetch(reader, sql, params)
        with self._lock:
            return self._fetch(self._db, sql, params)

    def _fetch(self, db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        try:
            cur = db.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return cur.fetchall()
        except sqlite3.DatabaseError as e:
            translated = self._translate(e)
            if translated is e:
                raise
            raise translated from e

    def _migrate(self) -> None:
        copy_before_migration(self.path)  # an older index is copied aside before it is changed
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this program knows "
                    f"({len(MIGRATIONS)}); upgrade obsidian-ai-agent"
                )
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(db)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(number),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('index_generation', '0')")

    # -- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def schema_version(self) -> int:
        return int(self.get_meta("schema_version") or 0)

    @property
    def generation(self) -> int:
        return int(self.get_meta("index_generation") or 0)

    def check_embedding_model(self, model_id: str, dimension: int) -> None:
        """Record the model on first use; refuse an index built with another model."""
        with self._write() as db:
            rows = dict(
                db.execute(
                    "SELECT key, value FROM meta WHERE key IN ('embedding_model', 'embedding_dimension')"
                ).fetchall()
            )
            if not rows:
                db.execute("INSERT INTO meta VALUES ('embedding_model', ?)", (model_id,))
                db.execute("INSERT INTO meta VALUES ('embedding_dimension', ?)", (str(dimension),))
                return
            had_model, had_dim = rows.get("embedding_model"), int(rows.get("embedding_dimension", "0"))
            if had_model != model_id or had_dim != dimension:
                raise ModelMismatchError(
                    f"the index at {self.path} was built with embedding model '{had_model}' "
                    f"(dimension {had_dim}), but the configured model is '{model_id}' "
                    f"(dimension {dimension}); "
                    "vectors of different models cannot be mixed. Set the embedding model back, or index "
                    "into a new data directory (--data-dir) with the new model."
                )

    def _bump_generation(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='index_generation'")
        return int(db.execute("SELECT value FROM meta WHERE key='index_generation'").fetchone()[0])

    # -- sources --------------------------------------------------------------------------------

    def source_states(self, kinds: Iterable[str] = ("note", "pdf")) -> dict[str, SourceState]:
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = self._query(
            f"SELECT id, path, kind, content_hash, size, mtime_ns FROM sources WHERE kind IN ({marks})",  # nosec B608
            kinds,
        )
        return {r["path"]: SourceState(*r) for r in rows}

    def touch_source(self, path: str, size: int, mtime_ns: int) -> None:
        """Record a new stat for a source whose content did not change (no generation bump)."""
        with self._write() as db:
            db.execute("UPDATE sources SET size=?, mtime_ns=? WHERE path=?", (size, mtime_ns, path))

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors already in the store for these chunk hashes, so unchanged text is never re-embedded."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            for h, blob in self._query(
                f"SELECT hash, vector FROM chunks WHERE hash IN ({marks}) GROUP BY hash",  # nosec B608
                part,
            ):
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def vectors_by_text(self, path: str) -> dict[tuple[str, str], np.ndarray]:
        """A source's vectors keyed by (heading path, text): how a moved note keeps its vectors."""
        rows = self._query(
            "SELECT c.heading_path, c.text, c.vector FROM chunks c JOIN sources s ON s.id=c.source_id "
            "WHERE s.path=?",
            (path,),
        )
        return {(r[0], r[1]): np.frombuffer(r[2], dtype=np.float32) for r in rows}

    def replace_source(
        self,
        parsed: ParsedSource,
        vectors: dict[str, np.ndarray],
        *,
        size: int | None = None,
        mtime_ns: int | None = None,
        replaces: str | None = None,
    ) -> int:
        """Write a source with its chunks, vectors, keyword fields and links in one transaction.

        `vectors` maps chunk hash -> vector and must cover every chunk. `replaces` names another path
        removed in the same transaction (a moved note). Returns the new index generation.
        """
        missing = [c.hash for c in parsed.chunks if c.hash not in vectors]
        if missing:
            raise StoreError(f"{parsed.path}: {len(missing)} chunk(s) have no vector")
        now = time.time()
        with self._write() as db:
            gen = self._bump_generation(db)
            for path in {parsed.path, replaces} - {None}:
                self._delete_source(db, str(path), gen)
            cur = db.execute(
                "INSERT INTO sources (path, kind, title, name_key, aliases, tags, frontmatter, warnings,"
                " content_hash, size, mtime_ns, indexed_at, generation)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    parsed.path,
                    parsed.kind,
                    parsed.title,
                    name_key(parsed.path),
                    json.dumps(parsed.aliases, ensure_ascii=False),
                    json.dumps(parsed.tags, ensure_ascii=False),
                    json.dumps(parsed.frontmatter, ensure_ascii=False, default=str),
                    json.dumps(parsed.warnings, ensure_ascii=False),
                    parsed.content_hash,
                    size,
                    mtime_ns,
                    now,
                    gen,
                ),
            )
            source_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO source_tags VALUES (?, ?)", [(source_id, t) for t in parsed.tags]
            )
            aliases = " ".join(parsed.aliases)
            tags = " ".join(t.replace("/", " ") for t in parsed.tags)
            for c in parsed.chunks:
                heading_json = json.dumps(c.heading_path, ensure_ascii=False)
                cur = db.execute(
                    "INSERT INTO chunks (source_id, ordinal, hash, text, heading_path, start_line, end_line,"
                    " page, vector, generation, section_starts) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        source_id,
                        c.ordinal,
                        c.hash,
                        c.text,
                        heading_json,
                        c.start_line,
                        c.end_line,
                        c.page,
                        np.asarray(vectors[c.hash], dtype=np.float32).tobytes(),
                        gen,
                        json.dumps(c.section_starts, ensure_ascii=False) if c.section_starts else "[]",
                    ),
                )
                db.execute(
                    "INSERT INTO chunks_fts (rowid, title, aliases, headings, tags, body)"
                    " VALUES (?,?,?,?,?,?)",
                    (cur.lastrowid, parsed.title, aliases, " ".join(c.heading_path), tags, c.text),
                )
            db.executemany(
                "INSERT INTO links (source_id, target, target_key, heading, block, alias, embed, line)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        source_id,
                        ln.target,
                        name_key(ln.target) if ln.target else name_key(parsed.path),
                        ln.heading,
                        ln.block,
                        ln.alias,
                        int(ln.embed),
                        ln.line,
                    )
                    for ln in parsed.links
                ],
            )
            db.execute("DELETE FROM failures WHERE path=?", (parsed.path,))
            return gen

    def _delete_source(self, db: sqlite3.Connection, path: str, gen: int) -> bool:
        row = db.execute("SELECT id FROM sources WHERE path=?", (path,)).fetchone()
        if row is None:
            return False
        sid = row[0]
        ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE source_id=?", (sid,))]
        db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in ids])
        db.executemany("INSERT OR REPLACE INTO chunk_removals VALUES (?, ?)", [(i, gen) for i in ids])
        db.execute("DELETE FROM chunks WHERE source_id=?", (sid,))
        db.execute("DELETE FROM sources WHERE id=?", (sid,))
        return True

    def delete_source(self, path: str) -> bool:
        with self._write() as db:
            if db.execute("SELECT 1 FROM sources WHERE path=?", (path,)).fetchone() is None:
                return False
            return self._delete_source(db, path, self._bump_generation(db))

    def record_failure(self, path: str, error: str, content_hash: str | None = None) -> None:
        """Remember a source that could not be indexed; an earlier good version of it stays searchable."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                (path, error, content_hash, time.time()),
            )

    def clear_failures(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        with self._write() as db:
            for (path,) in db.execute("SELECT path FROM failures").fetchall():
                if path not in keep:
                    db.execute("DELETE FROM failures WHERE path=?", (path,))

    def failures(self) -> list[dict[str, str]]:
        return [
            {"path": r[0], "error": r[1]}
            for r in self._query("SELECT path, error FROM failures ORDER BY path")
        ]

    # -- reads for search -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        rows = self._query(
            "SELECT (SELECT COUNT(*) FROM sources), (SELECT COUNT(*) FROM chunks),"
            " (SELECT COUNT(*) FROM chunks WHERE length(vector) > 0), (SELECT COUNT(*) FROM failures)"
        )
        s, c, v, f = rows[0]
        return {"sources": s, "chunks": c, "vectors": v, "failed": f}

    def load_vectors(self, after_generation: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk ids, source ids, float32 matrix) of chunks written after a generation."""
        rows = self._query(
            "SELECT id, source_id, vector FROM chunks WHERE generation > ? ORDER BY id", (after_generation,)
        )
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        sids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return ids, sids, mat

    def removed_chunks(self, after_generation: int) -> np.ndarray:
        rows = self._query("SELECT chunk_id FROM chunk_removals WHERE generation > ?", (after_generation,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def keyword_search(
        self, match: str, weights: Sequence[float], limit: int, source_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(chunk id, bm25 score; lower is better) for an FTS5 MATCH expression built by search.py."""
        w = ", ".join(str(float(x)) for x in weights)
        sql = f"SELECT rowid, bm25(chunks_fts, {w}) AS score FROM chunks_fts WHERE chunks_fts MATCH ?"  # nosec B608
        params: list[Any] = [match]
        if source_ids is not None:
            ids = list(source_ids)
            if not ids:
                return []
            sql += " AND rowid IN (SELECT id FROM chunks WHERE source_id IN (SELECT value FROM json_each(?)))"
            params.append(json.dumps(ids))
        sql += " ORDER BY score LIMIT ?"
        params.append(limit)
        return [(r[0], r[1]) for r in self._query(sql, params)]

    def next_chunks(self, ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> the id of the chunk that follows it in the same source, where there is one."""
        if not ids:
            return {}
        rows = self._query(
            "SELECT c.id, n.id FROM chunks c JOIN chunks n ON n.source_id = c.source_id"
            " AND n.ordinal = c.ordinal + 1 WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {r[0]: r[1] for r in rows}

    def has_match(self, match: str) -> bool:
        """Whether an FTS5 MATCH expression built by search.py matches any chunk (stops at the first)."""
        return bool(self._query("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1", (match,)))

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        rows = self._query(
            "SELECT c.id, c.source_id, s.path, s.kind, s.title, c.text, c.heading_path, c.start_line,"
            " c.end_line, c.page, c.section_starts FROM chunks c JOIN sources s ON s.id = c.source_id"
            " WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {
            r[0]: ChunkRow(
                r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9], json.loads(r[10])
            )
            for r in rows
        }

    def filter_source_ids(
        self, folder: str | None = None, tag: str | None = None, kind: str | None = None
    ) -> list[int]:
        """Ids of sources inside a folder, carrying a tag (or a nested tag under it), of a kind."""
        where, params = _source_filters(folder, tag, kind)
        return [r[0] for r in self._query("SELECT id FROM sources WHERE 1=1" + where, params)]  # nosec B608

    def source_by_path(self, path: str) -> SourceInfo | None:
        rows = self._query("SELECT id, path, kind, title, aliases, tags FROM sources WHERE path=?", (path,))
        if not rows:
            return None
        r = rows[0]
        return SourceInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]))

    def sources(self, ids: Sequence[int]) -> dict[int, SourceInfo]:
        rows = self._query(
            "SELECT id, path, kind, title, aliases, tags FROM sources"
            " WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {r[0]: SourceInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5])) for r in rows}

    def linked_source_ids(self, source_id: int) -> tuple[set[int], set[int]]:
        """(notes this one links to, notes linking to this one), resolved by file name as Obsidian does."""
        out = {
            r[0]
            for r in self._query(
                "SELECT DISTINCT s.id FROM links l JOIN sources s ON s.name_key = l.target_key"
                " WHERE l.source_id = ? AND s.id != ?",
                (source_id, source_id),
            )
        }
        back = {
            r[0]
            for r in self._query(
                "SELECT DISTINCT l.source_id FROM links l JOIN sources s ON s.name_key = l.target_key"
                " WHERE s.id = ? AND l.source_id != ?",
                (source_id, source_id),
            )
        }
        return out, back

    def links_of(self, path: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT l.target, l.heading, l.block, l.alias, l.embed, l.line FROM links l"
            " JOIN sources s ON s.id = l.source_id WHERE s.path = ? ORDER BY l.line",
            (path,),
        )
        return [
            {"target": r[0], "heading": r[1], "block": r[2], "alias": r[3], "embed": bool(r[4]), "line": r[5]}
            for r in rows
        ]

    def integrity_check(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])

    def quick_check(self) -> str:
        """`PRAGMA quick_check`: the structural checks, without the slower index cross-checks."""
        return str(self._query("PRAGMA quick_check")[0][0])

    # -- notes by listing and by name (the MCP server's list_notes and read_note) --------------------

    def list_sources(
        self,
        *,
        folder: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        changed_since: float | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Sources in path order after `after` (keyset paging: a page costs the same deep in a big vault),
        filtered as `filter_source_ids` does and by modification time (the file's, else when it was
        indexed) at or after `changed_since` (Unix seconds). At most `limit` rows."""
        sql = (
            "SELECT path, kind, title, tags, COALESCE(mtime_ns / 1e9, indexed_at) AS modified, size"
            " FROM sources WHERE 1=1"
        )
        where, params = _source_filters(folder if folder and folder.strip("/") else None, tag, kind)
        sql += where
        if changed_since is not None:
            sql += " AND COALESCE(mtime_ns / 1e9, indexed_at) >= ?"
            params.append(changed_since)
        if after is not None:
            sql += " AND path > ?"
            params.append(after)
        sql += " ORDER BY path LIMIT ?"
        params.append(limit)
        return [
            {
                "path": r[0],
                "kind": r[1],
                "title": r[2],
                "tags": json.loads(r[3]),
                "modified": float(r[4]) if r[4] is not None else None,
                "size": r[5],
            }
            for r in self._query(sql, params)
        ]

    def sources_named(self, name: str) -> list[str]:
        """Paths of the sources a name means, as `[[name]]` would in Obsidian: by file name (case-insensitive,
        `.md` optional); failing that, by title or alias (case-insensitive)."""
        by_file = self._query("SELECT path FROM sources WHERE name_key = ? ORDER BY path", (name_key(name),))
        if by_file:
            return [r[0] for r in by_file]
        low = name.strip().lower()
        rows = self._query(
            "SELECT path FROM sources WHERE lower(title) = ?"
            " OR EXISTS (SELECT 1 FROM json_each(aliases) WHERE lower(value) = ?) ORDER BY path",
            (low, low),
        )
        return [r[0] for r in rows]

    def source_record(self, path: str) -> dict[str, Any] | None:
        """What the index holds about one source besides its chunks: title, kind, aliases, tags, frontmatter,
        modification time, size, content hash."""
        rows = self._query(
            "SELECT path, kind, title, aliases, tags, frontmatter, COALESCE(mtime_ns / 1e9, indexed_at),"
            " size, content_hash FROM sources WHERE path = ?",
            (path,),
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "path": r[0],
            "kind": r[1],
            "title": r[2],
            "aliases": json.loads(r[3]),
            "tags": json.loads(r[4]),
            "frontmatter": json.loads(r[5]),
            "modified": float(r[6]) if r[6] is not None else None,
            "size": r[7],
            "content_hash": r[8],
        }


def _source_filters(folder: str | None, tag: str | None, kind: str | None) -> tuple[str, list[Any]]:
    """The `AND ...` clauses (and their parameters) that keep sources inside a folder, carrying a tag or
    a nested tag under it, of a kind."""
    sql, params = "", list[Any]()
    if folder:
        prefix = folder.strip("/") + "/"
        sql += " AND substr(path, 1, ?) = ?"
        params += [len(prefix), prefix]
    if kind:
        sql += " AND kind = ?"
        params.append(kind)
    if tag:
        t = tag.lstrip("#").lower()
        sql += " AND id IN (SELECT source_id FROM source_tags WHERE tag = ? OR substr(tag, 1, ?) = ?)"
        params += [t, len(t) + 1, t + "/"]
    return sql, params
