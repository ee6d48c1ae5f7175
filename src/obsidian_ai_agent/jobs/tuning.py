"""The embedding batch size, tuned to this machine on first use and remembered in the store's meta.

No extra work is spent on it: while untuned, a job's first embedding calls are cut into segments,
each encoded with one of the candidate batch sizes, and characters per second are compared. Once each
candidate has seen enough text the fastest is kept (only for the local model: a remote server's speed
is the server's business, and probes would count against its rate limits).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..embeddings import Embedder, LocalEmbedder
from ..store import IndexStore

META_KEY = "embedding_batch_size"
CANDIDATES = (16, 32, 64)
SEGMENT = 64
ENOUGH = SEGMENT  # texts per candidate before a choice: the first window of 256 tries all three
_lock = threading.Lock()


class BatchTuner:
    def __init__(self, store: IndexStore, embedder: Embedder, enabled: bool = True) -> None:
        self.store = store
        self.embedder = embedder
        self.active = enabled and isinstance(embedder, LocalEmbedder)
        self.state = self._load()
        chosen = self.state.get("batch_size")
        if chosen:
            embedder.batch_size = int(chosen)
            self.active = False

    def _load(self) -> dict[str, Any]:
        raw = self.store.get_meta(META_KEY)
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict) or state.get("model") != self.embedder.model_id:
            state = {"model": self.embedder.model_id, "batch_size": None, "trials": {}}
        return state

    @property
    def batch_size(self) -> int:
        return int(self.state.get("batch_size") or self.embedder.batch_size)

    def embed(self, embedder: Embedder, texts: list[str], progress: Callable[[int], None]) -> np.ndarray:
        if not self.active or len(texts) < SEGMENT:
            return embedder.embed(texts, progress=progress)
        with _lock:
            return self._embed_trials(embedder, texts, progress)

    def _embed_trials(
        self, embedder: Embedder, texts: list[str], progress: Callable[[int], None]
    ) -> np.ndarray:
        trials: dict[str, list[float]] = self.state.setdefault("trials", {})
        original = embedder.batch_size
        embedder.embed(texts[:1])  # loads and warms the model so the first trial is not charged for it
        parts = []
        done = 0
        try:
            while done < len(texts):
                seg = texts[done : done + SEGMENT]
                size = min(CANDIDATES, key=lambda c: trials.get(str(c), [0, 0, 0])[2])
                embedder.batch_size = size
                t0 = time.perf_counter()
                parts.append(embedder.embed(seg))
                spent = time.perf_counter() - t0
                acc = trials.setdefault(str(size), [0.0, 0.0, 0])
                acc[0] += sum(len(t) for t in seg)
                acc[1] += spent
                acc[2] += len(seg)
                done += len(seg)
                progress(done)
                if all(trials.get(str(c), [0, 0, 0])[2] >= ENOUGH for c in CANDIDATES):
                    break
        finally:
            embedder.batch_size = original
        if all(trials.get(str(c), [0, 0, 0])[2] >= ENOUGH for c in CANDIDATES):
            best = max(CANDIDATES, key=lambda c: trials[str(c)][0] / max(trials[str(c)][1], 1e-9))
            self.state["batch_size"] = best
            embedder.batch_size = best
            self.active = False
        self.store.set_meta(META_KEY, json.dumps(self.state))
        if done < len(texts):
            rest = embedder.embed(texts[done:], progress=lambda n: progress(done + n))
            parts.append(rest)
        return np.vstack(parts)
