"""The store: the only room that speaks SQL."""

from .sqlite import ChunkRow, ModelMismatchError, SourceInfo, SourceState, Store, StoreError, name_key

__all__ = ["ChunkRow", "ModelMismatchError", "SourceInfo", "SourceState", "Store", "StoreError", "name_key"]
