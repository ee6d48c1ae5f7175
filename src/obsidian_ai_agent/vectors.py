"""The in-memory vector matrix that semantic search runs on, kept in step with the store.

The store's vectors are the source of truth. Each process holds a matrix and, before searching, compares
the store's index generation with its own and loads only the chunks written or removed since.
"""

from __future__ import annotations

import threading

import numpy as np

from .store import IndexStore

_MATMUL = threading.Lock()
"""One matrix product at a time per process. OpenBLAS runs each on every core; several at once from request
threads fight over the same cores: measured with 4 threads on 8.5k x 384, 4.0 ms a search side by side
against 0.47 ms taking turns (0.40 ms alone)."""


def one_blas_thread() -> None:
    """Matrix products on one thread in this process (a service worker): OpenBLAS's own threads spin
    after each call, taking the cores from request threads. Measured in one process on 2 cores, 8 threads
    searching: 117 -> 130 searches/s, 16.4 -> 12.5 ms of CPU a search; at 100k chunks a product costs the
    same on one thread or two (it is bound by memory)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


class VectorMatrix:
    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self.generation = -1
        self.ids = np.empty(0, np.int64)
        self.source_ids = np.empty(0, np.int64)
        self.matrix = np.empty((0, 0), np.float32)
        self._notes: tuple[int, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        gen = self.store.generation
        if gen == self.generation:
            return
        with self._lock:
            if gen == self.generation:
                return
            # Read the generation first: rows committed meanwhile are read again next time, never lost.
            if self.generation < 0:
                ids, sids, mat = self.store.load_vectors()
            else:
                removed = self.store.removed_chunks(self.generation)
                ids, sids, mat = self.store.load_vectors(self.generation)
                gone = np.concatenate([removed, ids])
                if len(gone) and len(self.ids):
                    keep = ~np.isin(self.ids, gone)
                    self.ids, self.source_ids, self.matrix = (
                        self.ids[keep],
                        self.source_ids[keep],
                        self.matrix[keep],
                    )
                if len(self.ids) and len(ids):
                    ids = np.concatenate([self.ids, ids])
                    sids = np.concatenate([self.source_ids, sids])
                    mat = np.vstack([self.matrix, mat])
                elif not len(ids):
                    ids, sids, mat = self.ids, self.source_ids, self.matrix
            self.ids, self.source_ids, self.matrix = ids, sids, mat
            self.generation = gen
            self._notes = None

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self, query: np.ndarray, k: int, source_ids: list[int] | None = None
    ) -> list[tuple[int, float]]:
        """Exact cosine kNN (vectors are normalised): (chunk id, similarity), best first."""
        self.refresh()
        ids, mat = self.ids, self.matrix
        if not len(ids):
            return []
        if source_ids is not None:
            mask = np.isin(self.source_ids, np.asarray(source_ids, dtype=np.int64))
            ids, mat = ids[mask], mat[mask]
            if not len(ids):
                return []
        with _MATMUL:
            scores = mat @ query.astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def similarities(self, query: np.ndarray, ids: list[int]) -> dict[int, float]:
        """chunk id -> cosine to the query, for the given chunks that have a vector."""
        self.refresh()
        mask = np.isin(self.ids, np.asarray(ids, dtype=np.int64))
        with _MATMUL:
            scores = self.matrix[mask] @ query.astype(np.float32) if mask.any() else np.empty(0)
        return {int(i): float(v) for i, v in zip(self.ids[mask], scores, strict=True)}

    def note_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(source ids, normalised mean of each source's chunk vectors), cached per generation."""
        self.refresh()
        with self._lock:
            if self._notes is None or self._notes[0] != self.generation:
                if not len(self.ids):
                    self._notes = (self.generation, np.empty(0, np.int64), np.empty((0, 0), np.float32))
                else:
                    uniq, inverse = np.unique(self.source_ids, return_inverse=True)
                    sums = np.zeros((len(uniq), self.matrix.shape[1]), np.float32)
                    np.add.at(sums, inverse, self.matrix)
                    norms = np.linalg.norm(sums, axis=1, keepdims=True)
                    norms[norms == 0] = 1.0
                    self._notes = (self.generation, uniq, sums / norms)
            return self._notes[1], self._notes[2]


class DatabaseVectors:
    """Semantic search run by the database itself (PostgreSQL's HNSW index): nothing held in memory but
    each source's mean vector, recomputed when the index generation moves."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self.generation = -1
        self._notes: tuple[int, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        self.generation = self.store.generation

    def __len__(self) -> int:
        return int(self.store.vector_count())  # type: ignore[attr-defined]

    def search(
        self, query: np.ndarray, k: int, source_ids: list[int] | None = None
    ) -> list[tuple[int, float]]:
        """(chunk id, similarity), best first, from the database's vector index."""
        return self.store.vector_search(query, k, source_ids)  # type: ignore[attr-defined]

    def similarities(self, query: np.ndarray, ids: list[int]) -> dict[int, float]:
        return self.store.vector_similarities(query, ids)  # type: ignore[attr-defined]

    def note_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        gen = self.store.generation
        with self._lock:
            if self._notes is None or self._notes[0] != gen:
                sids, mat = self.store.note_vectors()  # type: ignore[attr-defined]
                self._notes = (gen, sids, mat)
            return self._notes[1], self._notes[2]


def vectors_for(store: IndexStore) -> VectorMatrix | DatabaseVectors:
    """Where a store's semantic search runs: in the database when it has a vector index, else in memory."""
    return DatabaseVectors(store) if getattr(store, "native_vectors", False) else VectorMatrix(store)
