"""What each kind of job does. A handler gets the running job's context and returns its result.

Every handler drives the indexer (nothing else writes chunks) with the context as its hooks, so each
kind gets the same checks, retries, quarantine, checkpoints and spans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..indexer import IndexReport, Progress
from ..notes import kind_of, parse_text
from ..notes.scan import matches_any
from ..notes.web import FetchError, WebPage, fetch_page
from ..search import SEARCHES

if TYPE_CHECKING:
    from .runner import JobContext

Handler = Callable[["JobContext"], dict[str, Any]]


def reindex(ctx: JobContext) -> dict[str, Any]:
    """A vault, incrementally (payload `vault`), or re-reading every file (`full: true`)."""
    p = ctx.job.payload
    report = ctx.engine.index(Path(p["vault"]), progress=ctx.progress, hooks=ctx, full=bool(p.get("full")))
    result = _result(ctx, ctx.merged_report(report))
    _prepare_answers(ctx, result)
    return result


def upsert_note(ctx: JobContext) -> dict[str, Any]:
    """Notes or PDFs of the vault (payload `vault`, `paths`): indexed when present, removed when gone."""
    p = ctx.job.payload
    root = ctx.engine.vault_root(Path(p["vault"]))
    s = ctx.engine.settings
    total = IndexReport()
    # Present files first: a renamed note is indexed as a move (keeping its vectors) before its old path,
    # whose file is gone, would be removed.
    paths = sorted(p["paths"], key=lambda rel: not (root / rel).is_file())
    done = 0
    for rel in paths:
        ctx.check()
        ctx.progress(Progress(done=done, total=len(paths), stage="index"))
        full = root / rel
        if (
            full.is_file()
            and kind_of(rel)
            and matches_any(s.include, rel)
            and not matches_any(s.exclude, rel)
        ):
            r = ctx.engine.indexer.index_file(root, rel, hooks=ctx)
            _add(total, r)
        elif not full.exists() and ctx.engine.indexer.remove([rel]):
            total.removed += 1
            ctx.written([rel])
        done += 1
    ctx.progress(Progress(done=done, total=len(paths), stage="index"))
    if ctx.engine.store.get_meta("vault_root") is None:
        ctx.engine.store.set_meta("vault_root", str(root))
    result = _result(ctx, {**total.to_dict(), "paths": len(paths)})
    _prepare_answers(ctx, result)
    return result


class SourcesFailed(Exception):
    """Every file a job was asked to index failed: the job failed, whatever its other steps did."""


def index_pdf(ctx: JobContext) -> dict[str, Any]:
    """PDFs of the vault, as `upsert_note`; a PDF that cannot be indexed fails the job with its reason,
    and an uploaded one (payload `uploaded`) is removed again rather than left in the upload folder."""
    result = upsert_note(ctx)
    failed = [f for f in result.get("failed") or [] if isinstance(f, dict)]
    if not failed:
        return result
    if ctx.job.payload.get("uploaded"):
        root = ctx.engine.vault_root(Path(ctx.job.payload["vault"]))
        for f in failed:
            (root / str(f.get("path", ""))).unlink(missing_ok=True)
    raise SourcesFailed("; ".join(f"{f.get('path')}: {f.get('error')}" for f in failed))


def delete_note(ctx: JobContext) -> dict[str, Any]:
    """Remove sources from the index (payload `paths`), whether or not the files still exist."""
    paths = list(ctx.job.payload["paths"])
    removed = ctx.engine.indexer.remove(paths)
    ctx.written(paths)
    return _result(ctx, {"removed": removed, "paths": len(paths)})


def index_web(ctx: JobContext) -> dict[str, Any]:
    """A web page as a `web` source: payload `url` with its already extracted `text` (and `title`), or
    `url` alone to fetch it here (URL guard on every hop, size cap, `server.fetch_timeout`)."""
    p = ctx.job.payload
    extra: dict[str, Any] = {}
    if p.get("text") is None:
        page = _fetch_page(ctx, p["url"])
        url, title, text = page.url, page.title, page.text
        extra = {"url": page.url, "final_url": page.final_url, "title": page.title, "bytes": page.nbytes}
    else:
        url, title, text = p["url"], p.get("title") or p["url"], p["text"]
    parsed = parse_text(text, url, title, "web", ctx.engine.embedder.counter)
    report = ctx.engine.indexer.index_parsed(parsed, hooks=ctx)
    result = _result(ctx, {**report.to_dict(), **extra})
    _prepare_answers(ctx, result)
    return result


def _fetch_page(ctx: JobContext, url: str) -> WebPage:
    """Fetch with the lane's retries for transient failures (timeouts, 5xx); others fail the job at once."""
    s = ctx.engine.settings.server
    attempt = 0
    while True:
        ctx.check()
        t0 = time.perf_counter()
        try:
            page = fetch_page(
                url, timeout=s.fetch_timeout, max_bytes=s.fetch_max_bytes, allow_private=s.allow_private_urls
            )
        except FetchError as e:
            attempt += 1
            delay = ctx.retry_delay(attempt, e) if e.transient else None
            if delay is None:
                raise
            end = time.monotonic() + delay
            while time.monotonic() < end:
                ctx.check()
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            continue
        ctx.stage("fetch", time.perf_counter() - t0, 1, page.nbytes)
        return page


def answer_vectors(ctx: JobContext) -> dict[str, Any]:
    """Embed the answer sentences of chunks not prepared yet, so that first questions wait for no
    model; queued by indexing that embedded new text. Starts above the last chunk an earlier run reached
    (chunks written since have higher ids), and resumes above the last one it checkpointed."""
    start = ctx.checkpoint.get("after", ctx.job.payload.get("after"))  # else where the last one ended
    done = 0

    def check(last: int) -> None:
        nonlocal done
        ctx.check()
        done += 1
        ctx.checkpoint["after"] = last
        ctx.save(Progress(done=done, total=0, stage="answer vectors"), checkpoint=True)
        ctx.give_way()  # an upload or a reindex queued in this lane goes first; this job resumes after
        # Searches first: while any runs in this process, wait (up to ANSWER_VECTORS_PAUSE) before the
        # next batch. Measured with 100 concurrent searches on vaultofknowledge, 2 workers on 2 cores:
        # without this the job took the model and a core between every two searches (5.6 searches/s,
        # p99 25.7 s); with it 53 searches/s and p99 2.1 s, against 63 and 1.6 s with no job.
        deadline = time.monotonic() + ANSWER_VECTORS_PAUSE
        while not SEARCHES.wait_idle(0.25) and time.monotonic() < deadline:
            ctx.check()

    after = int(start) if start is not None else None
    prepared = ctx.engine.answerer.prepare_unit_vectors(after, check=check, batch=ANSWER_VECTORS_BATCH)
    return _result(ctx, prepared)


ANSWER_VECTORS_BATCH = 10
"""Chunks per `answer_vectors` batch: small, so a search that arrives waits for little model time."""
ANSWER_VECTORS_PAUSE = 10.0
"""Seconds `answer_vectors` waits, between batches, for the searches in flight to end; past that it
takes one more batch, so a steady stream of searches slows the job but cannot stop it."""


def _prepare_answers(ctx: JobContext, report: dict[str, Any]) -> None:
    """Queue `answer_vectors` when indexing embedded new text (one such job at a time)."""
    if report.get("chunks_embedded") and ctx.engine.settings.answer.prepare_unit_vectors:
        from . import submit  # jobs/__init__ imports this module

        submit(ctx.engine, "answer_vectors", {}, dedupe_key="answer_vectors")


def backup(ctx: JobContext) -> dict[str, Any]:
    """A backup into `<data dir>/backups/`, then retention (`backup.keep`): the scheduled kind."""
    from ..ops.backup import scheduled_backup  # ops/ sits above jobs/: imported only when one runs

    return scheduled_backup(ctx.engine.settings).to_dict()


def _add(total: IndexReport, r: IndexReport) -> None:
    for key in ("indexed", "unchanged", "removed", "moved", "chunks_embedded", "chunks_reused"):
        setattr(total, key, getattr(total, key) + getattr(r, key))
    total.failed += r.failed
    total.warnings += r.warnings
    total.seconds += r.seconds


def _result(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "retries": ctx.retries, "quarantined": sorted(set(ctx.quarantined))}


HANDLERS: dict[str, Handler] = {
    "reindex": reindex,
    "upsert_note": upsert_note,
    "delete_note": delete_note,
    "index_pdf": index_pdf,
    "index_web": index_web,
    "backup": backup,
    "answer_vectors": answer_vectors,
}


def register(kind: str, handler: Handler) -> None:
    """Add a kind of job (its lane comes from `jobs.routes`, else the lane given at submit)."""
    HANDLERS[kind] = handler
