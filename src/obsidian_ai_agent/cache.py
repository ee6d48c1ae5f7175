"""The answer and search cache, keyed by the index generation so it can never serve stale results.

A key is a digest of (kind, normalised question, filters, mode, provider and model, prompt version,
index generation): any change to the index moves every key, so old entries become unreachable and age
out of the size bound. Values are JSON-able dicts, so any backend that stores strings will do: the
SQLite table in the index (shared by the CLI and every server worker) or this process's memory. A Redis
backend is one more `CacheBackend`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

from .config import CacheSettings
from .store import IndexStore
from .store import conversations as sql

_SPACE = re.compile(r"\s+")
_TRAIL = re.compile(r"[\s?.!]+$")


def normalise_question(text: str) -> str:
    """Case, spacing and closing punctuation do not make a different question."""
    return _TRAIL.sub("", _SPACE.sub(" ", text.strip().lower()))


def cache_key(kind: str, question: str, generation: int, **parts: Any) -> str:
    """The digest of everything an answer depends on; `parts` are filters, mode, provider, model, ..."""
    material = json.dumps(
        {"kind": kind, "q": normalise_question(question), "gen": generation, **parts},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return kind + ":" + hashlib.sha256(material.encode()).hexdigest()


class CacheBackend(ABC):
    """Where cached values live: strings under string keys, bounded in size."""

    name: str

    @abstractmethod
    def get(self, key: str) -> str | None: ...

    @abstractmethod
    def set(self, key: str, value: str) -> None: ...

    @abstractmethod
    def clear(self) -> int:
        """Remove every entry; the number removed."""

    @abstractmethod
    def size(self) -> int: ...


class MemoryBackend(CacheBackend):
    """An LRU in this process, bounded in entries and in bytes (answers vary in size: a long extract is
    tens of KB, so 2,000 entries alone do not bound a worker's memory)."""

    name = "memory"

    def __init__(self, max_entries: int, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def set(self, key: str, value: str) -> None:
        size = len(key) + len(value)
        if size > self.max_bytes:
            return  # larger than the whole cache: not kept
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old)
            self._items[key] = value
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                k, v = self._items.popitem(last=False)
                self._bytes -= len(k) + len(v)

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self._bytes = 0
            return n

    def size(self) -> int:
        return len(self._items)


class SqliteBackend(CacheBackend):
    """A table in the index database: every process on the same index shares it; LRU by last use."""

    name = "sqlite"

    def __init__(self, store: IndexStore, max_entries: int) -> None:
        self.store = store
        self.max_entries = max_entries

    def get(self, key: str) -> str | None:
        return sql.cache_get(self.store, key)

    def set(self, key: str, value: str) -> None:
        sql.cache_put(self.store, key, value, self.max_entries)

    def clear(self) -> int:
        return sql.cache_clear(self.store)

    def size(self) -> int:
        return sql.cache_count(self.store)


class Cache:
    """Typed access over a backend, with the hit and miss counts the metrics endpoint reports."""

    def __init__(self, backend: CacheBackend, enabled: bool = True) -> None:
        self.backend = backend
        self.enabled = enabled
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        raw = self.backend.get(key)
        kind = key.split(":", 1)[0]
        with self._lock:
            counter = self.misses if raw is None else self.hits
            counter[kind] = counter.get(kind, 0) + 1
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        if self.enabled:
            self.backend.set(key, json.dumps(value, ensure_ascii=False))

    def clear(self) -> int:
        return self.backend.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            kinds = sorted(set(self.hits) | set(self.misses))
            per_kind = {
                k: {
                    "hits": self.hits.get(k, 0),
                    "misses": self.misses.get(k, 0),
                    "hit_rate": round(
                        self.hits.get(k, 0) / max(1, self.hits.get(k, 0) + self.misses.get(k, 0)), 4
                    ),
                }
                for k in kinds
            }
            hits, misses = sum(self.hits.values()), sum(self.misses.values())
        return {
            "backend": self.backend.name,
            "enabled": self.enabled,
            "entries": self.backend.size(),
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / max(1, hits + misses), 4),
            "per_kind": per_kind,
        }


def make_cache(settings: CacheSettings, store: IndexStore) -> Cache:
    backend: CacheBackend = (
        SqliteBackend(store, settings.max_entries)
        if settings.backend == "sqlite"
        else MemoryBackend(settings.max_entries)
    )
    return Cache(backend, settings.enabled)
