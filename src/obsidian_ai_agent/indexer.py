"""The one way into the index: sources are diffed by content hash, embedded, and written one transaction each.

Nothing is re-embedded that the store already holds a vector for: an unchanged vault costs a scan of file
stats, a changed note costs only its changed chunks, and a moved note keeps its vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .embeddings import Embedder, TransientEmbeddingError
from .notes import PdfLimits, parse_source
from .notes.model import ParsedSource, SourceError, sha256
from .notes.scan import ScannedFile, scan_vault
from .store import IndexStore, SourceState

# Chunks gathered across notes before a call to the encoder: large calls let the model sort by length
# and pad less, which keeps the pipeline near the raw encoder's speed.
EMBED_WINDOW = 256


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "moved": self.moved,
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "failed": self.failed,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Progress:
    """What a progress display needs: items done of total, and chunks embedded so far."""

    done: int = 0
    total: int = 0
    chunks_embedded: int = 0
    stage: str = "scan"
    bytes_done: int = 0
    bytes_total: int = 0


ProgressFn = Callable[[Progress], None]


class IndexHooks:
    """What a job adds to an indexing run; every default does nothing, so a plain run behaves as before.

    `check` may raise to stop between items (cancel, timeout). A transient embedding failure is retried
    while `retry_delay` returns a delay; when it gives up, the sources waiting on that batch go to
    `quarantine` and the run goes on (without hooks the failure is raised, as it always was).
    """

    quarantines = False

    def check(self) -> None:
        """Called between items; raise to stop the run."""

    def stage(self, stage: str, seconds: float, items: int, nbytes: int) -> None:
        """Time spent in a stage (scan, parse, embed, write) on `items` sources of `nbytes` bytes."""

    def item(self, path: str, spans: dict[str, float], chunks: int, nbytes: int) -> None:
        """One source is done: its seconds per stage."""

    def retry_delay(self, attempt: int, error: Exception) -> float | None:
        """Seconds to wait before retry `attempt` (1-based) of a transient failure, or None to give up."""
        return None

    def quarantine(self, path: str, stage: str, error: str, content_hash: str | None) -> None:
        """A source failed for good."""

    def written(self, paths: list[str]) -> None:
        """These sources are in the index now."""

    def window_done(self, prog: Progress, report: IndexReport) -> None:
        """A batch of sources is written: a safe point to record progress."""

    def embed(self, embedder: Embedder, texts: list[str], progress: Callable[[int], None]) -> np.ndarray:
        """Embed a batch (a job may tune the batch size here)."""
        return embedder.embed(texts, progress=progress)


_NO_HOOKS = IndexHooks()


@dataclass
class _Pending:
    parsed: ParsedSource
    size: int | None
    mtime_ns: int | None
    replaces: str | None = None
    nbytes: int = 0
    parse_seconds: float = 0.0


class Indexer:
    def __init__(
        self,
        store: IndexStore,
        embedder: Embedder,
        *,
        pdf_max_pages: int = 2000,
        pdf_limits: PdfLimits | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.pdf_max_pages = pdf_max_pages
        self.pdf_limits = pdf_limits
        store.check_embedding_model(embedder.model_id, embedder.dimension)

    # -- whole vault ----------------------------------------------------------------------------

    def index_vault(
        self,
        root: Path,
        include: list[str],
        exclude: list[str],
        progress: ProgressFn | None = None,
        *,
        hooks: IndexHooks | None = None,
        full: bool = False,
    ) -> IndexReport:
        """Index new and changed sources, remove vanished ones. `full` re-reads and hashes every file
        instead of trusting unchanged size and mtime (nothing unchanged is re-embedded either way)."""
        hk = hooks or _NO_HOOKS
        started = time.perf_counter()
        report = IndexReport()
        prog = Progress()
        root = Path(root).resolve()
        files = scan_vault(root, include, exclude)
        stored = self.store.source_states()
        on_disk = {f.rel_path for f in files}

        candidates: list[tuple[ScannedFile, bytes | None, str | None]] = []
        for f in files:
            st = stored.get(f.rel_path)
            if not full and st is not None and st.size == f.size and st.mtime_ns == f.mtime_ns:
                report.unchanged += 1
                continue
            candidates.append((f, None, None))
        # Read and hash what may have changed; a file whose bytes are the same is only re-stat'ed.
        changed: list[tuple[ScannedFile, bytes, str]] = []
        for f, _, _ in candidates:
            try:
                raw = f.abs_path.read_bytes()
            except OSError as e:
                report.failed.append({"path": f.rel_path, "error": f"cannot read file: {e.strerror}"})
                continue
            digest = sha256(raw)
            st = stored.get(f.rel_path)
            if st is not None and st.content_hash == digest:
                if st.size != f.size or st.mtime_ns != f.mtime_ns:
                    self.store.touch_source(f.rel_path, f.size, f.mtime_ns)
                report.unchanged += 1
            else:
                changed.append((f, raw, digest))
        hk.stage("scan", time.perf_counter() - started, len(files), sum(len(r) for _, r, _ in changed))

        gone = {p: st for p, st in stored.items() if p not in on_disk}
        # A new path with the bytes of a vanished one is a move: it keeps that source's vectors.
        by_hash = {st.content_hash: p for p, st in gone.items()}
        moves: dict[str, str] = {}
        for f, _, digest in changed:
            if f.rel_path not in stored and digest in by_hash and by_hash[digest] not in moves.values():
                moves[f.rel_path] = by_hash[digest]

        prog.total = len(changed) + len(gone) - len(moves)
        prog.bytes_total = sum(len(raw) for _, raw, _ in changed)
        prog.stage = "index"
        if progress:
            progress(prog)

        window: list[_Pending] = []
        for f, raw, digest in changed:
            hk.check()
            t0 = time.perf_counter()
            try:
                parsed = parse_source(
                    f.abs_path,
                    f.rel_path,
                    self.embedder.counter,
                    raw=raw,
                    pdf_max_pages=self.pdf_max_pages,
                    pdf_limits=self.pdf_limits,
                )
            except SourceError as e:
                report.failed.append({"path": f.rel_path, "error": str(e)})
                self.store.record_failure(f.rel_path, str(e), digest)
                hk.stage("parse", time.perf_counter() - t0, 1, len(raw))
                hk.quarantine(f.rel_path, "parse", str(e), digest)
                prog.done += 1
                prog.bytes_done += len(raw)
                continue
            spent = time.perf_counter() - t0
            hk.stage("parse", spent, 1, len(raw))
            for w in parsed.warnings:
                report.warnings.append({"path": f.rel_path, "warning": w})
            window.append(
                _Pending(
                    parsed, f.size, f.mtime_ns, moves.get(f.rel_path), nbytes=len(raw), parse_seconds=spent
                )
            )
            if sum(len(p.parsed.chunks) for p in window) >= EMBED_WINDOW:
                self._flush(window, report, prog, progress, hk)
                window = []
        self._flush(window, report, prog, progress, hk)

        moved_away = set(moves.values())
        removed: list[str] = []
        for path in gone:
            if path in moved_away:
                continue
            hk.check()
            if self.store.delete_source(path):
                report.removed += 1
            removed.append(path)
            prog.done += 1
        self.store.clear_failures(keep=[f["path"] for f in report.failed])
        if removed or moved_away:
            hk.written(removed + sorted(moved_away))
        hk.window_done(prog, report)
        if progress:
            progress(prog)
        report.moved = len(moves)
        report.seconds = time.perf_counter() - started
        return report

    # -- one source -----------------------------------------------------------------------------

    def index_parsed(
        self,
        parsed: ParsedSource,
        size: int | None = None,
        mtime_ns: int | None = None,
        *,
        hooks: IndexHooks | None = None,
    ) -> IndexReport:
        """Index one already-parsed source (a pushed note, a web page)."""
        report = IndexReport()
        started = time.perf_counter()
        self._flush([_Pending(parsed, size, mtime_ns)], report, Progress(total=1), None, hooks or _NO_HOOKS)
        report.seconds = time.perf_counter() - started
        return report

    def index_many(self, items: list[ParsedSource], progress: ProgressFn | None = None) -> IndexReport:
        """Index already-parsed sources (a BEIR corpus, a batch of pushed notes), embedding across them."""
        report = IndexReport()
        started = time.perf_counter()
        prog = Progress(total=len(items), stage="index")
        window: list[_Pending] = []
        for parsed in items:
            window.append(_Pending(parsed, None, None))
            if sum(len(p.parsed.chunks) for p in window) >= EMBED_WINDOW:
                self._flush(window, report, prog, progress)
                window = []
        self._flush(window, report, prog, progress)
        report.seconds = time.perf_counter() - started
        return report

    def index_file(self, root: Path, rel_path: str, *, hooks: IndexHooks | None = None) -> IndexReport:
        """Index one file of the vault (a watched or pushed change).

        Unchanged bytes are a no-op: nothing is written and the index generation stays (so no answer
        cache is emptied by a plugin's re-sync or an editor's save). A new path holding the bytes of a
        source whose file is gone is a move, as in `index_vault`: it keeps that source's vectors.
        """
        hk = hooks or _NO_HOOKS
        report = IndexReport()
        started = time.perf_counter()
        root = Path(root)
        path = root / rel_path
        try:
            raw = path.read_bytes()
            st = path.stat()
        except OSError as e:
            report.failed.append({"path": rel_path, "error": f"cannot read file: {e.strerror}"})
            return report
        digest = sha256(raw)
        states = self.store.source_states()
        known = states.get(rel_path)
        if known is not None and known.content_hash == digest:
            if known.size != st.st_size or known.mtime_ns != st.st_mtime_ns:
                self.store.touch_source(rel_path, st.st_size, st.st_mtime_ns)
            hk.written([rel_path])  # it is in the index as it is: a quarantine held for it ends
            report.unchanged = 1
            report.seconds = time.perf_counter() - started
            return report
        replaces = _moved_from(root, rel_path, digest, states) if known is None else None
        t0 = time.perf_counter()
        try:
            parsed = parse_source(
                path,
                rel_path,
                self.embedder.counter,
                raw=raw,
                pdf_max_pages=self.pdf_max_pages,
                pdf_limits=self.pdf_limits,
            )
        except SourceError as e:
            report.failed.append({"path": rel_path, "error": str(e)})
            self.store.record_failure(rel_path, str(e), digest)
            hk.quarantine(rel_path, "parse", str(e), digest)
            return report
        spent = time.perf_counter() - t0
        hk.stage("parse", spent, 1, len(raw))
        for w in parsed.warnings:
            report.warnings.append({"path": rel_path, "warning": w})
        pending = _Pending(
            parsed, st.st_size, st.st_mtime_ns, replaces=replaces, nbytes=len(raw), parse_seconds=spent
        )
        self._flush([pending], report, Progress(total=1, bytes_total=len(raw)), None, hk)
        if replaces is not None and report.indexed:
            report.moved = 1
        report.seconds = time.perf_counter() - started
        return report

    def remove(self, paths: Iterable[str]) -> int:
        return sum(1 for p in paths if self.store.delete_source(p))

    # -- embedding and writing ------------------------------------------------------------------

    def _flush(
        self,
        window: list[_Pending],
        report: IndexReport,
        prog: Progress,
        progress: ProgressFn | None,
        hk: IndexHooks = _NO_HOOKS,
    ) -> None:
        if not window:
            return
        hashes = [c.hash for p in window for c in p.parsed.chunks]
        vectors = self.store.vectors_for_hashes(hashes)
        for p in window:
            if p.replaces:
                old = self.store.vectors_by_text(p.replaces)
                for c in p.parsed.chunks:
                    v = old.get((_heading_json(c.heading_path), c.text))
                    if c.hash not in vectors and v is not None:
                        vectors[c.hash] = v
        todo: dict[str, str] = {}
        for p in window:
            for c in p.parsed.chunks:
                if c.hash not in vectors and c.hash not in todo:
                    todo[c.hash] = c.embed_text
        report.chunks_reused += len(hashes) - len(todo)
        window_bytes = sum(p.nbytes for p in window)
        embed_seconds = 0.0
        if todo:
            hk.check()
            prog.stage = "embed"
            base = prog.chunks_embedded

            def tick(n: int) -> None:
                prog.chunks_embedded = base + n
                if progress:
                    progress(prog)
                hk.check()

            t0 = time.perf_counter()
            mat, error = self._embed(list(todo.values()), tick, hk)
            embed_seconds = time.perf_counter() - t0
            hk.stage("embed", embed_seconds, len(window), window_bytes)
            if mat is None:
                # Failed for good after the retries: these sources wait in quarantine, the rest go on.
                for p in window:
                    if all(c.hash in vectors for c in p.parsed.chunks):
                        continue
                    report.failed.append({"path": p.parsed.path, "error": error})
                    hk.quarantine(p.parsed.path, "embed", error, p.parsed.content_hash)
                    prog.done += 1
                    prog.bytes_done += p.nbytes
                window = [p for p in window if all(c.hash in vectors for c in p.parsed.chunks)]
            else:
                vectors.update(zip(todo.keys(), (np.asarray(v, dtype=np.float32) for v in mat), strict=True))
                report.chunks_embedded += len(todo)
                prog.chunks_embedded = base + len(todo)
        prog.stage = "write"
        total_chunks = max(1, sum(len(p.parsed.chunks) for p in window))
        t_write = time.perf_counter()
        for p in window:
            t0 = time.perf_counter()
            self.store.replace_source(
                p.parsed, vectors, size=p.size, mtime_ns=p.mtime_ns, replaces=p.replaces
            )
            spent = time.perf_counter() - t0
            report.indexed += 1
            prog.done += 1
            prog.bytes_done += p.nbytes
            share = embed_seconds * len(p.parsed.chunks) / total_chunks
            hk.item(
                p.parsed.path,
                {"parse": p.parse_seconds, "embed": share, "write": spent},
                len(p.parsed.chunks),
                p.nbytes,
            )
            if progress:
                progress(prog)
        if window:
            hk.stage("write", time.perf_counter() - t_write, len(window), sum(p.nbytes for p in window))
            hk.written([p.parsed.path for p in window] + [p.replaces for p in window if p.replaces])
        prog.stage = "index"
        hk.window_done(prog, report)

    def _embed(
        self, texts: list[str], tick: Callable[[int], None], hk: IndexHooks
    ) -> tuple[np.ndarray | None, str]:
        """Embed, retrying transient failures as the hooks allow; (None, reason) when they give up."""
        attempt = 0
        while True:
            try:
                return hk.embed(self.embedder, texts, tick), ""
            except TransientEmbeddingError as e:
                attempt += 1
                delay = hk.retry_delay(attempt, e)
                if delay is None:
                    if not hk.quarantines:
                        raise
                    return None, f"{e} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
                hk.check()
                time.sleep(delay)
                hk.check()


def _moved_from(root: Path, rel_path: str, digest: str, states: dict[str, SourceState]) -> str | None:
    """The indexed source a new file was moved from: same bytes, and its own file is gone."""
    for path in sorted(states):
        if path != rel_path and states[path].content_hash == digest and not (root / path).exists():
            return path
    return None


def _heading_json(path: list[str]) -> str:
    import json

    return json.dumps(path, ensure_ascii=False)
