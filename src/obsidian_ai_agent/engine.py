"""The library object both front doors open: settings, store, embedder, indexer and searcher together."""

from __future__ import annotations

import threading
import time
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
from .store import Store
from .store.jobs import JobStore


class NoVaultError(FileNotFoundError):
    """No vault was named, none is configured and the index remembers none (the message says how to name
    one)."""


class Engine:
    """Opened once per process (CLI command or server worker); the embedding model loads on first need."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = Store(settings.database_path, allow_new=settings.allow_new_database)
        self._embedder = embedder
        self._lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

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
                f"this index ({self.store.path}) holds the vault {held}; use another --data-dir for {root}"
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
            "database": str(self.store.path),
        }
