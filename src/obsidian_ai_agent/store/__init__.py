"""The store: the only room that speaks SQL. `open_store` picks the backend a database URL names."""

from pathlib import Path

from .base import (
    ChunkRow,
    IndexStore,
    ModelMismatchError,
    SourceInfo,
    SourceState,
    StoreError,
    StoreUnavailable,
    name_key,
)
from .sqlite import DatabaseDamaged, DataDirNotWritable, Store

__all__ = [
    "ChunkRow",
    "DataDirNotWritable",
    "DatabaseDamaged",
    "IndexStore",
    "ModelMismatchError",
    "SourceInfo",
    "SourceState",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "name_key",
    "open_store",
]


def open_store(
    path: Path,
    *,
    url: str | None = None,
    pool_size: int = 10,
    timeout_s: float = 10.0,
    allow_new: bool = False,
) -> IndexStore:
    """The index: the PostgreSQL server a `postgresql://` URL names, else the SQLite file at `path`."""
    if url:
        from .postgres import PostgresStore  # psycopg is loaded only by those who use it

        return PostgresStore(url, pool_size=pool_size, timeout_s=timeout_s)
    return Store(path, allow_new=allow_new)
