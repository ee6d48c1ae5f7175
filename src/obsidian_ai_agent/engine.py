"""The library object both front doors open: settings, store, embedder, indexer and searcher together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from . import __version__
from .answer import Answer, Answerer
from .cache import make_cache
from .config import Settings
from .embeddings import Embedder, get_embedder
from .indexer import Indexer, IndexHooks, IndexReport, ProgressFn
from .notes.pdf import PdfLimits
from .search import RelatedNote, Searcher, SearchResult
from .store import IndexStore, open_store
from .store.jobs import JobStore


class NoVaultError(FileNotFoundError):
    """No vault was named, none is configured and the index remembers none (the message says how to name
    one)."""


class Engine:
    """Opened once per process (CLI command or server worker); the embedding model loads on first need."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        db = settings.database
        self.store: IndexStore = open_store(
            settings.database_path,
            url=db.url.get_secret_value() if db.url else None,
            pool_size=db.pool_size,
            timeout_s=db.timeout_s,
            allow_new=settings.allow_new_database,
        )
        self._embedder = embedder
        self._lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

    def copy_store(
        self,
        to: str,
        *,
        origin: str | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        check: bool = True,
    ) -> dict[str, Any]:
        """Copy this index (or the one `origin` names) to `to`, a postgresql:// URL or an SQLite file,
        without re-embedding; resumable. With `check`, verify counts and nearest neighbours after."""
        from .store import copy as store_copy

        db = self.settings.database
        source = store_copy.open_target(origin, timeout_s=db.timeout_s) if origin else self.store
        try:
            with store_copy.open_target(to, timeout_s=db.timeout_s) as target:
                if target.location == source.location:
                    raise ValueError(f"the copy's target {target.location} is the index it copies from")
                report = store_copy.copy_store(source, target, progress).as_dict()
                if check:
                    report["verified"] = store_copy.verify(source, target)
            return report
        finally:
            if source is not self.store:
                source.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = get_embedder(self.settings.embedding)
            return self._embedder

    @cached_property
    def indexer(self) -> Indexer:
        s = self.settings
        limits = PdfLimits.from_mb(s.pdf_max_page_mb, s.pdf_max_decoded_mb, s.pdf_timeout)
        return Indexer(self.store, self.embedder, pdf_max_pages=s.pdf_max_pages, pdf_limits=limits)

    @cached_property
    def searcher(self) -> Searcher:
        emb = self.embedder
        self.store.check_embedding_model(emb.model_id, emb.dimension)
        return Searcher(self.store, emb, self.settings.search, self.vault_name)

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(
            self.searcher,
            self.settings.llm,
            cache=make_cache(self.settings.cache, self.store),
            answer=self.settings.answer,
        )

    def ask(self, question: str, **options: Any) -> Answer:
        """Answer from the notes with citations (see `Answerer.stream` for the streamed form)."""
        return self.answerer.ask(question, **options)

    @property
    def vault_name(self) -> str:
        if self.settings.vault_name:
            return self.settings.vault_name
        root = self.store.get_meta("vault_root")
        return Path(root).name if root else self.settings.effective_vault_name()

    @cached_property
    def jobs(self) -> JobStore:
        """The job rows of this index (the queue that `obsidian_ai_agent.jobs` runs)."""
        return JobStore(self.store)

    def index(
        self,
        vault: Path | None = None,
        progress: ProgressFn | None = None,
        *,
        hooks: IndexHooks | None = None,
        full: bool = False,
    ) -> IndexReport:
        root = self.vault_root(vault)
        self.store.set_meta("vault_root", str(root))
        return self.indexer.index_vault(
            root, self.settings.include, self.settings.exclude, progress, hooks=hooks, full=full
        )

    def vault_root(self, vault: Path | None = None) -> Path:
        """The vault folder to index, checked: it exists and it is the one this index holds. Unless named,
        it is the configured `vault`, else the vault this index remembers; never the current directory."""
        held_root = self.store.get_meta("vault_root")
        chosen = vault or self.settings.vault or (Path(held_root) if held_root else None)
        if chosen is None or not str(chosen).strip():
            raise NoVaultError(
                "no vault to index: name its folder (`obsidian-ai-agent index PATH`), or set it once with "
                "OAA_VAULT=PATH or `vault: PATH` in config.yaml"
            )
        root = Path(chosen).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"vault folder '{root}' does not exist; give the folder of an Obsidian vault"
            )
        root = root.resolve()
        held = held_root
        if held and Path(held) != root and self.store.counts()["sources"]:
            raise ValueError(
                f"this index ({self.store.location}) holds the vault {held}; "
                f"use another --data-dir for {root}"
            )
        return root

    def search(
        self, query: str, k: int | None = None, mode: str | None = None, **filters: Any
    ) -> list[SearchResult]:
        return self.searcher.search(query, k, mode, **filters)

    def related(self, path: str, k: int = 10) -> list[RelatedNote]:
        return self.searcher.related(path, k)

    def warm(self) -> float:
        """Load what the first search would otherwise wait for (measured: ~9 s on 2 cores): the model and
        its first encode, and the vector matrix. Returns the seconds it took."""
        started = time.perf_counter()
        searcher = self.searcher
        searcher.embedder.embed_query("warm up")
        searcher.vectors.refresh()
        return time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        return {
            "version": __version__,
            "sources": counts["sources"],
            "chunks": counts["chunks"],
            "vectors": counts["vectors"],
            "failed": counts["failed"],
            "embedding_model": self.store.get_meta("embedding_model"),
            "embedding_dimension": int(self.store.get_meta("embedding_dimension") or 0) or None,
            "index_generation": self.store.generation,
            "schema_version": self.store.schema_version,
            "vault": self.store.get_meta("vault_root"),
            "database": self.store.location,
        }

    # -- notes one by one, for the MCP server (list_notes, read_note) ---------------------------------

    def list_notes(
        self,
        *,
        folder: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        changed_since: float | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Indexed sources in path order after the path `after` (a page of at most `limit`): path, kind,
        title, tags, modified (Unix seconds), size; filtered by folder, tag (nested tags too), kind and
        modification at or after `changed_since`."""
        return self.store.list_sources(
            folder=folder, tag=tag, kind=kind, changed_since=changed_since, after=after, limit=limit
        )

    def find_note(self, note: str) -> str:
        """The vault-relative path `note` means: a path ('Folder/Note.md') as given, once the path guard
        passes it (PathRefused for '..', absolute paths, backslashes); else the one indexed note with that
        file name, title or alias, as a [[wikilink]] finds it. FileNotFoundError when no note has the name,
        ValueError when several do (the message lists them)."""
        from .security.paths import SOURCE_SUFFIXES, check_relative

        text = note.strip()
        if not text:
            raise ValueError("the note is empty; give a vault-relative path ('Folder/Note.md') or a name")
        if "/" in text or "\\" in text or text.startswith(".") or text.lower().endswith(SOURCE_SUFFIXES):
            check_relative(text, SOURCE_SUFFIXES)
            if "/" in text or self.store.source_by_path(text) is not None:
                return text
        paths = self.store.sources_named(text)
        if len(paths) == 1:
            return paths[0]
        if not paths:
            raise FileNotFoundError(
                f"no note named '{text}' in the index; give its vault-relative path ('Folder/Note.md'), "
                "or find it with search or list_notes"
            )
        shown = ", ".join(f"'{p}'" for p in paths[:10]) + (" ..." if len(paths) > 10 else "")
        raise ValueError(f"'{text}' names {len(paths)} notes: {shown}; give the path of the one you mean")

    def read_note(self, path: str) -> dict[str, Any]:
        """A note's Markdown as the vault holds it now, with what the index knows of it (title, aliases,
        tags, frontmatter, modified). The path passes the vault path guard (PathRefused: '..', absolute
        paths, reserved folders, excluded files, symlinks out of the vault); FileNotFoundError when the
        vault has no such note."""
        from .notes.markdown import decode
        from .search import obsidian_link
        from .security.paths import NOTE_SUFFIXES, vault_path

        s = self.settings
        target = vault_path(self.vault_root(), path, NOTE_SUFFIXES, include=s.include, exclude=s.exclude)
        try:
            raw = target.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(
                f"no note '{target.rel}' in the vault; find notes with search or list_notes"
            ) from None
        text, _ = decode(raw)
        record = self.store.source_record(target.rel) or {}
        return {
            "path": target.rel,
            "title": record.get("title") or Path(target.rel).stem,
            "aliases": record.get("aliases", []),
            "tags": record.get("tags", []),
            "frontmatter": record.get("frontmatter", {}),
            "modified": target.path.stat().st_mtime,
            "indexed": bool(record),
            "link": obsidian_link(self.vault_name, target.rel),
            "text": text,
        }

    def manifest(self) -> dict[str, str]:
        """Vault-relative path -> sha256 of the bytes indexed, for every note and PDF in the index: what a
        syncing client compares with its own files to push only the differences."""
        return {path: st.content_hash for path, st in sorted(self.store.source_states().items())}
