"""What each kind of job does. A handler gets the running job's context and returns its result.

Every handler drives the indexer (nothing else writes chunks) with the context as its hooks, so each
kind gets the same checks, retries, quarantine, checkpoints and spans.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..indexer import IndexReport, Progress
from ..notes import kind_of, parse_text
from ..notes.scan import matches_any

if TYPE_CHECKING:
    from .runner import JobContext

Handler = Callable[["JobContext"], dict[str, Any]]


def reindex(ctx: JobContext) -> dict[str, Any]:
    """A vault, incrementally (payload `vault`), or re-reading every file (`full: true`)."""
    p = ctx.job.payload
    report = ctx.engine.index(Path(p["vault"]), progress=ctx.progress, hooks=ctx, full=bool(p.get("full")))
    return _result(ctx, ctx.merged_report(report))


def upsert_note(ctx: JobContext) -> dict[str, Any]:
    """Notes or PDFs of the vault (payload `vault`, `paths`): indexed when present, removed when gone."""
    p = ctx.job.payload
    root = ctx.engine.vault_root(Path(p["vault"]))
    s = ctx.engine.settings
    total = IndexReport()
    paths = list(p["paths"])
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
    return _result(ctx, {**total.to_dict(), "paths": len(paths)})


def delete_note(ctx: JobContext) -> dict[str, Any]:
    """Remove sources from the index (payload `paths`), whether or not the files still exist."""
    paths = list(ctx.job.payload["paths"])
    removed = ctx.engine.indexer.remove(paths)
    ctx.written(paths)
    return _result(ctx, {"removed": removed, "paths": len(paths)})


def index_web(ctx: JobContext) -> dict[str, Any]:
    """A web page's already extracted text as a `web` source (payload `url`, `title`, `text`)."""
    p = ctx.job.payload
    parsed = parse_text(p["text"], p["url"], p.get("title") or p["url"], "web", ctx.engine.embedder.counter)
    report = ctx.engine.indexer.index_parsed(parsed, hooks=ctx)
    return _result(ctx, report.to_dict())


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
    "index_pdf": upsert_note,
    "index_web": index_web,
}


def register(kind: str, handler: Handler) -> None:
    """Add a kind of job (its lane comes from `jobs.routes`, else the lane given at submit)."""
    HANDLERS[kind] = handler
