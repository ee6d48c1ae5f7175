"""The progress bar of long commands (index, serve, eval): the phase the work is in, files done, chunks
embedded, and an ETA measured from the run's own throughput.

Before, the bar sat at 0/N for 16 s with no word of what it was doing (loading the model, then parsing
and embedding the first batch), and its ETA, guessed before any work was done, said 1 s with a minute
to go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..indexer import Progress as IndexProgress

# What each stage the indexer reports is, in words.
PHASES = {
    "scan": "scanning",
    "index": "parsing",
    "parse": "parsing",
    "embed": "embedding",
    "write": "writing",
    "queued": "waiting for the runner that holds the job",
}


class Throughput:
    """Seconds left, from the throughput measured since the work began: None until the first batch of
    work is done, since nothing measured predicts the rest before that."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def eta(self, done: int, total: int, now: float) -> float | None:
        if total <= 0:
            return None
        if self._start is None or done < self._start[1]:
            self._start = (now, done)
            return None
        t0, d0 = self._start
        if done <= d0 or now <= t0:
            return None
        return max(0.0, (total - done) * (now - t0) / (done - d0))


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "eta -"
    s = round(seconds)
    return f"eta {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class IndexDisplay:
    """The indexer's progress callback, drawing on a rich progress bar; `phase()` names work the
    indexer does not report (loading the model)."""

    def __init__(self, bar: Progress, task: TaskID, clock: Callable[[], float] = time.monotonic) -> None:
        self.bar = bar
        self.task = task
        self.clock = clock
        self.throughput = Throughput()

    def phase(self, text: str) -> None:
        self.bar.update(self.task, phase=text, detail="", eta=format_eta(None))

    def __call__(self, p: IndexProgress) -> None:
        # Bytes predict the rest far better than files in a vault of notes of very different lengths.
        done, total = (p.bytes_done, p.bytes_total) if p.bytes_total else (p.done, p.total)
        eta = self.throughput.eta(done, total, self.clock())
        detail = f"{p.chunks_embedded} chunks embedded" if p.chunks_embedded or p.stage == "embed" else ""
        finished = p.stage == "index" and p.done >= p.total
        self.bar.update(
            self.task,
            total=p.total or None,
            completed=p.done,
            phase="done" if finished else PHASES.get(p.stage, p.stage),
            detail=detail,
            eta="" if finished else format_eta(eta),
        )


@contextmanager
def progress_bar(label: str, console: Console, enabled: bool = True) -> Iterator[IndexDisplay]:
    """A progress bar on `console` (stderr), every text column printed verbatim (never as markup)."""
    bar = Progress(
        TextColumn(label, style="bold", markup=False),
        TextColumn("{task.fields[phase]}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}", markup=False),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with bar:
        task = bar.add_task(label, total=None, phase="starting", detail="", eta="")
        yield IndexDisplay(bar, task)
