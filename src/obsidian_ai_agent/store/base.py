"""What every store is: the named operations on an index, written once in SQL both backends speak.

A backend (`sqlite.Store`, the default; `postgres.PostgresStore`, for several replicas) supplies the
plumbing (`_write`, `_query`, `location`) and the few operations whose SQL differs: how a chunk's vector
and keyword fields are written and searched, how a list of ids is passed, and the integrity checks. The
SQL here uses `?` placeholders, `ON CONFLICT` upserts and `RETURNING`, which both speak.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..notes.model import ParsedSource


class StoreError(Exception):
    """The store cannot be used as asked."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached or refused the connection; the request may be retried."""


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


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk as stored: what `put_source` writes and `source_dump` reads."""

    ordinal: int
    hash: str
    text: str
    heading_path: list[str]
    start_line: int | None
    end_line: int | None
    page: int | None
    section_starts_json: str
    vector: np.ndarray

    def row(self, source_id: int, vector: Any, gen: int) -> tuple[Any, ...]:
        """The `chunks` columns from source_id to section_starts, with the vector as the backend stores it."""
        heading = json.dumps(self.heading_path, ensure_ascii=False)
        return (source_id, self.ordinal, self.hash, self.text, heading, self.start_line, self.end_line,
                self.page, vector, gen, self.section_starts_json)  # fmt: skip


@dataclass(frozen=True)
class SourceRecord:
    """A source as stored, its chunks (with vectors) and links: the unit `store copy` moves."""

    path: str
    kind: str
    title: str
    aliases: list[str]
    tags: list[str]
    frontmatter_json: str
    warnings_json: str
    content_hash: str
    size: int | None
    mtime_ns: int | None
    indexed_at: float
    chunks: list[ChunkRecord]
    links: list[tuple[Any, ...]]
    """(target, target_key, heading, block, alias, embed, line) per link."""

    @classmethod
    def of(
        cls, parsed: ParsedSource, vectors: dict[str, np.ndarray], size: int | None, mtime_ns: int | None
    ) -> SourceRecord:
        chunks = [
            ChunkRecord(
                c.ordinal,
                c.hash,
                c.text,
                c.heading_path,
                c.start_line,
                c.end_line,
                c.page,
                json.dumps(c.section_starts, ensure_ascii=False) if c.section_starts else "[]",
                np.asarray(vectors[c.hash], dtype=np.float32),
            )
            for c in parsed.chunks
        ]
        links = [
            (
                ln.target,
                name_key(ln.target) if ln.target else name_key(parsed.path),
                ln.heading,
                ln.block,
                ln.alias,
                int(ln.embed),
                ln.line,
            )
            for ln in parsed.links
        ]
        return cls(
            path=parsed.path,
            kind=parsed.kind,
            title=parsed.title,
            aliases=list(parsed.aliases),
            tags=list(parsed.tags),
            frontmatter_json=json.dumps(parsed.frontmatter, ensure_ascii=False, default=str),
            warnings_json=json.dumps(parsed.warnings, ensure_ascii=False),
            content_hash=parsed.content_hash,
            size=size,
            mtime_ns=mtime_ns,
            indexed_at=time.time(),
            chunks=chunks,
            links=links,
        )

    def keyword_fields(self) -> tuple[str, str]:
        """(aliases, tags) as the words the keyword index holds: nested tags split at `/`."""
        return " ".join(self.aliases), " ".join(t.replace("/", " ") for t in self.tags)


class IndexStore:
    """Named operations on the index database, the same on every backend. Safe to share between threads."""

    backend = "base"
    _HAS_VECTOR = "vector IS NOT NULL"
    path: Path
    """The SQLite file; a server's store has none (see `location`)."""

    # -- plumbing each backend supplies ----------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the index lives, fit to show: a file path, or a server URL without its password."""
        raise NotImplementedError

    def _write(self, serial: bool = True) -> AbstractContextManager[Any]:
        """One write transaction. `serial`: one at a time with every other serial write (on every replica);
        False lets a write that guards itself (a `FOR UPDATE SKIP LOCKED` claim) run beside others."""
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        """A condition `column is one of values` and its one parameter."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _apply_migrations(self, migrations: Sequence[Callable[[Any], None]]) -> None:
        """Run the migrations the index has not had yet, in one write transaction, numbering each in
        `meta.schema_version`; an index newer than this program is refused."""
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > len(migrations):
                raise StoreError(
                    f"{self.location} has schema version {version}, newer than this program knows "
                    f"({len(migrations)}); upgrade obsidian-ai-agent"
                )
            for number, migration in enumerate(migrations[version:], start=version + 1):
                migration(db)
                db.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (str(number),),
                )
            db.execute("INSERT INTO meta VALUES ('index_generation', '0') ON CONFLICT DO NOTHING")

    # -- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

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
                self._model_recorded(db, dimension)
                return
            had_model, had_dim = rows.get("embedding_model"), int(rows.get("embedding_dimension", "0"))
            if had_model != model_id or had_dim != dimension:
                raise ModelMismatchError(
                    f"the index at {self.location} was built with embedding model '{had_model}' "
                    f"(dimension {had_dim}), but the configured model is '{model_id}' "
                    f"(dimension {dimension}); "
                    "vectors of different models cannot be mixed. Set the embedding model back, or index "
                    "into a new data directory (--data-dir) with the new model."
                )

    def _model_recorded(self, db: Any, dimension: int) -> None:
        """Called in the transaction that records the embedding model for the first time."""

    def _bump_generation(self, db: Any) -> int:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='index_generation'")
        return int(db.execute("SELECT value FROM meta WHERE key='index_generation'").fetchone()[0])

    # -- sources --------------------------------------------------------------------------------

    def source_states(self, kinds: Iterable[str] = ("note", "pdf")) -> dict[str, SourceState]:
        where, param = self.any_of("kind", list(kinds))
        rows = self._query(
            f"SELECT id, path, kind, content_hash, size, mtime_ns FROM sources WHERE {where}",  # nosec B608
            (param,),
        )
        return {r[1]: SourceState(*r) for r in rows}

    def touch_source(self, path: str, size: int, mtime_ns: int) -> None:
        """Record a new stat for a source whose content did not change (no generation bump)."""
        with self._write() as db:
            db.execute("UPDATE sources SET size=?, mtime_ns=? WHERE path=?", (size, mtime_ns, path))

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors already in the store for these chunk hashes, so unchanged text is never re-embedded."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(wanted), 500):
            where, param = self.any_of("hash", wanted[i : i + 500])
            for h, vec in self._query(f"SELECT hash, vector FROM chunks WHERE {where}", (param,)):  # nosec B608
                if h not in found:
                    found[h] = self._vector(vec)
        return found

    def vectors_by_text(self, path: str) -> dict[tuple[str, str], np.ndarray]:
        """A source's vectors keyed by (heading path, text): how a moved note keeps its vectors."""
        rows = self._query(
            "SELECT c.heading_path, c.text, c.vector FROM chunks c JOIN sources s ON s.id=c.source_id "
            "WHERE s.path=?",
            (path,),
        )
        return {(r[0], r[1]): self._vector(r[2]) for r in rows}

    def _vector(self, stored: Any) -> np.ndarray:
        """A vector as numpy float32, from however the backend stores it."""
        raise NotImplementedError

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
        return self.put_source(SourceRecord.of(parsed, vectors, size, mtime_ns), replaces=replaces)

    def put_source(self, record: SourceRecord, *, replaces: str | None = None) -> int:
        """Write a whole source as `replace_source` does, from a record (`replace_source`, `store copy`)."""
        with self._write() as db:
            gen = self._bump_generation(db)
            for path in {record.path, replaces} - {None}:
                self._delete_source(db, str(path), gen)
            source_id = int(
                db.execute(
                    "INSERT INTO sources (path, kind, title, name_key, aliases, tags, frontmatter, warnings,"
                    " content_hash, size, mtime_ns, indexed_at, generation)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                    (
                        record.path,
                        record.kind,
                        record.title,
                        name_key(record.path),
                        json.dumps(record.aliases, ensure_ascii=False),
                        json.dumps(record.tags, ensure_ascii=False),
                        record.frontmatter_json,
                        record.warnings_json,
                        record.content_hash,
                        record.size,
                        record.mtime_ns,
                        record.indexed_at,
                        gen,
                    ),
                ).fetchone()[0]
            )
            db.executemany(
                "INSERT INTO source_tags VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(source_id, t) for t in record.tags],
            )
            self._write_chunks(db, source_id, record, gen)
            db.executemany(
                "INSERT INTO links (source_id, target, target_key, heading, block, alias, embed, line)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [(source_id, *link) for link in record.links],
            )
            db.execute("DELETE FROM failures WHERE path=?", (record.path,))
            return gen

    def source_dump(self, path: str) -> SourceRecord | None:
        """Everything the index holds of one source, vectors included: what `store copy` moves."""
        rows = self._query(
            "SELECT id, path, kind, title, aliases, tags, frontmatter, warnings, content_hash, size,"
            " mtime_ns, indexed_at FROM sources WHERE path=?",
            (path,),
        )
        if not rows:
            return None
        r = rows[0]
        chunks = [
            ChunkRecord(c[0], c[1], c[2], json.loads(c[3]), c[4], c[5], c[6], c[7], self._vector(c[8]))
            for c in self._query(
                "SELECT ordinal, hash, text, heading_path, start_line, end_line, page, section_starts, vector"
                " FROM chunks WHERE source_id=? ORDER BY ordinal, id",
                (r[0],),
            )
        ]
        links = [
            tuple(x)
            for x in self._query(
                "SELECT target, target_key, heading, block, alias, embed, line FROM links WHERE source_id=?"
                " ORDER BY line, target",
                (r[0],),
            )
        ]
        return SourceRecord(
            path=r[1],
            kind=r[2],
            title=r[3],
            aliases=json.loads(r[4]),
            tags=json.loads(r[5]),
            frontmatter_json=r[6],
            warnings_json=r[7],
            content_hash=r[8],
            size=r[9],
            mtime_ns=r[10],
            indexed_at=float(r[11]),
            chunks=chunks,
            links=links,
        )

    def _write_chunks(self, db: Any, source_id: int, record: SourceRecord, gen: int) -> None:
        """Insert a source's chunks with their vectors and keyword fields."""
        raise NotImplementedError

    def _forget_chunks(self, db: Any, ids: list[int]) -> None:
        """Drop what a backend keeps beside the chunk rows (SQLite: the FTS5 rows)."""

    def _delete_source(self, db: Any, path: str, gen: int) -> bool:
        row = db.execute("SELECT id FROM sources WHERE path=?", (path,)).fetchone()
        if row is None:
            return False
        sid = row[0]
        ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE source_id=?", (sid,)).fetchall()]
        self._forget_chunks(db, ids)
        db.executemany(
            "INSERT INTO chunk_removals VALUES (?, ?)"
            " ON CONFLICT (chunk_id) DO UPDATE SET generation=excluded.generation",
            [(i, gen) for i in ids],
        )
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
                "INSERT INTO failures VALUES (?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
                " error=excluded.error, content_hash=excluded.content_hash, at=excluded.at",
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
            f" (SELECT COUNT(*) FROM chunks WHERE {self._HAS_VECTOR}), (SELECT COUNT(*) FROM failures)"  # nosec B608
        )
        s, c, v, f = rows[0]
        return {"sources": int(s), "chunks": int(c), "vectors": int(v), "failed": int(f)}

    def load_vectors(self, after_generation: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk ids, source ids, float32 matrix) of chunks written after a generation."""
        rows = self._query(
            "SELECT id, source_id, vector FROM chunks WHERE generation > ? ORDER BY id", (after_generation,)
        )
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        sids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.vstack([self._vector(r[2]) for r in rows]).astype(np.float32, copy=False)
        return ids, sids, mat

    def first_vector(self) -> np.ndarray | None:
        """The vector of the oldest chunk (a probe that must find itself), or None in an empty index."""
        rows = self._query("SELECT vector FROM chunks ORDER BY id LIMIT 1")
        return self._vector(rows[0][0]) if rows else None

    def unwritable(self) -> str | None:
        """Why the index cannot be written now, or None when it can."""
        return None

    def removed_chunks(self, after_generation: int) -> np.ndarray:
        rows = self._query("SELECT chunk_id FROM chunk_removals WHERE generation > ?", (after_generation,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def keyword_search(
        self,
        terms: Sequence[str],
        weights: Sequence[float],
        limit: int,
        source_ids: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """(chunk id, score; lower is better) of chunks holding any of the terms, best first. `weights`
        are the fields' (title, aliases, headings, tags, body). Every term is a plain word, never syntax."""
        raise NotImplementedError

    def has_term(self, term: str, prefix: bool = False) -> bool:
        """Whether the keyword index holds the word (or, with `prefix`, a word beginning with it)."""
        raise NotImplementedError

    def next_chunks(self, ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> the id of the chunk that follows it in the same source, where there is one."""
        return self._beside(ids, 1)

    def previous_chunks(self, ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> the id of the chunk before it in the same source, where there is one."""
        return self._beside(ids, -1)

    def _beside(self, ids: Sequence[int], step: int) -> dict[int, int]:
        if not ids:
            return {}
        where, param = self.any_of("c.id", list(ids))
        rows = self._query(
            "SELECT c.id, n.id FROM chunks c JOIN chunks n ON n.source_id = c.source_id"
            f" AND n.ordinal = c.ordinal + {int(step)} WHERE {where}",  # nosec B608
            (param,),
        )
        return {r[0]: r[1] for r in rows}

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        where, param = self.any_of("c.id", list(ids))
        rows = self._query(
            "SELECT c.id, c.source_id, s.path, s.kind, s.title, c.text, c.heading_path, c.start_line,"
            " c.end_line, c.page, c.section_starts FROM chunks c JOIN sources s ON s.id = c.source_id"
            f" WHERE {where}",  # nosec B608
            (param,),
        )
        return {
            r[0]: ChunkRow(
                r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9], json.loads(r[10])
            )
            for r in rows
        }

    def filter_source_ids(
        self,
        folder: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        path: str | None = None,
    ) -> list[int]:
        """Ids of sources inside a folder, carrying a tag (or a nested tag under it), of a kind, at a
        vault-relative path."""
        where, params = _source_filters(folder, tag, kind, path)
        return [r[0] for r in self._query("SELECT id FROM sources WHERE 1=1" + where, params)]  # nosec B608

    def source_by_path(self, path: str) -> SourceInfo | None:
        rows = self._query("SELECT id, path, kind, title, aliases, tags FROM sources WHERE path=?", (path,))
        if not rows:
            return None
        r = rows[0]
        return SourceInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]))

    def sources(self, ids: Sequence[int]) -> dict[int, SourceInfo]:
        where, param = self.any_of("id", list(ids))
        rows = self._query(
            f"SELECT id, path, kind, title, aliases, tags FROM sources WHERE {where}",  # nosec B608
            (param,),
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
        """`ok`, or what is wrong with the database."""
        raise NotImplementedError

    def quick_check(self) -> str:
        """The faster structural checks: `ok`, or what is wrong."""
        raise NotImplementedError

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
        modified = "COALESCE(mtime_ns / 1e9, indexed_at)"
        sql = f"SELECT path, kind, title, tags, {modified} AS modified, size FROM sources WHERE 1=1"  # nosec B608
        where, params = _source_filters(folder if folder and folder.strip("/") else None, tag, kind)
        sql += where
        if changed_since is not None:
            sql += f" AND {modified} >= ?"
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
        paths = [
            r[0] for r in self._query("SELECT path FROM sources WHERE lower(title) = ? ORDER BY path", (low,))
        ]
        if paths:
            return paths
        # Aliases are JSON lists; a LIKE narrows to the rows that may hold the name, then Python decides.
        quoted = json.dumps(low, ensure_ascii=False)[1:-1]  # as the name is written inside the JSON list
        pattern = "%" + quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._query(
            "SELECT path, aliases FROM sources WHERE lower(aliases) LIKE ? ESCAPE '\\' ORDER BY path",
            (pattern,),
        )
        return [r[0] for r in rows if any(str(a).lower() == low for a in json.loads(r[1]))]

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


def _source_filters(
    folder: str | None, tag: str | None, kind: str | None, path: str | None = None
) -> tuple[str, list[Any]]:
    """The `AND ...` clauses (and their parameters) that keep sources inside a folder, carrying a tag or
    a nested tag under it, of a kind, at one path."""
    sql, params = "", list[Any]()
    if path:
        sql += " AND path = ?"
        params.append(path)
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
