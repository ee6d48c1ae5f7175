"""The store: the only room that speaks SQL."""

from .sqlite import (
    ChunkRow,
    DatabaseDamaged,
    DataDirNotWritable,
    ModelMismatchError,
    SourceInfo,
    SourceState,
    Store,
    StoreError,
    name_key,
)

__all__ = [
    "ChunkRow",
    "DataDirNotWritable",
    "DatabaseDamaged",
    "ModelMismatchError",
    "SourceInfo",
    "SourceState",
    "Store",
    "StoreError",
    "name_key",
]
