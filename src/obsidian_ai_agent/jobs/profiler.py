"""Timing spans per stage and per item of a job, kept in the store for `jobs show` and `jobs stats`.

Stage totals are cumulative over a job's attempts (a resumed job starts from what the store holds);
item spans are handed to the store in the checkpoint's transaction, so a crash loses none that the
checkpoint counts and duplicates none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..store.jobs import ItemSpan, StageTiming

STAGES = ("scan", "parse", "embed", "write")


class Profiler:
    def __init__(self, earlier: Iterable[StageTiming] = ()) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, list[float]] = {}
        for t in earlier:
            self._stages[t.stage] = [t.seconds, t.items, t.bytes]
        self._pending: list[ItemSpan] = []

    def stage(self, stage: str, seconds: float, items: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            acc = self._stages.setdefault(stage, [0.0, 0, 0])
            acc[0] += seconds
            acc[1] += items
            acc[2] += nbytes

    @contextmanager
    def span(self, stage: str, items: int = 0, nbytes: int = 0) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage(stage, time.perf_counter() - t0, items, nbytes)

    def item(self, path: str, spans: dict[str, float], chunks: int, nbytes: int) -> None:
        parse, embed, write = (spans.get(s, 0.0) for s in ("parse", "embed", "write"))
        with self._lock:
            self._pending.append(ItemSpan(path, parse + embed + write, parse, embed, write, chunks, nbytes))

    def stages(self) -> list[StageTiming]:
        with self._lock:
            order = sorted(self._stages, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES))
            return [
                StageTiming(s, self._stages[s][0], int(self._stages[s][1]), int(self._stages[s][2]))
                for s in order
            ]

    def take_items(self) -> list[ItemSpan]:
        """The item spans not yet stored (the caller stores them)."""
        with self._lock:
            items, self._pending = self._pending, []
            return items

    def give_back(self, items: list[ItemSpan]) -> None:
        """Spans a failed save did not store, kept for the next one."""
        with self._lock:
            self._pending = items + self._pending
