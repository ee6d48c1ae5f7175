"""Durable jobs: every change to the index (reindex, one note, a PDF, a web page) runs as a job row in
the store, claimed by a runner in a lane, checkpointed, retried, timed, and resumable after a crash.

Front doors submit with the functions here and either run the job themselves (`run`, as the CLI's
`index` does) or leave it to a `JobRunner` started beside the service.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..store.jobs import Job, JobStore
from .analytics import job_detail, job_stats
from .handlers import register
from .lanes import KINDS, lane_for
from .runner import JobContext, JobRunner, JobStopped, ProgressListener

__all__ = [
    "KINDS",
    "Job",
    "JobContext",
    "JobRunner",
    "JobStopped",
    "JobStore",
    "cancel",
    "job_detail",
    "job_stats",
    "register",
    "retry_quarantined",
    "run",
    "submit",
    "submit_delete",
    "submit_notes",
    "submit_reindex",
    "waitable",
]


def submit(
    engine: Engine,
    kind: str,
    payload: dict[str, Any],
    *,
    lane: str | None = None,
    dedupe_key: str | None = None,
    nbytes: int | None = None,
) -> int:
    """Queue a job in its kind's lane (or `lane`); an unfinished job with the same `dedupe_key` is reused.
    `nbytes`, the size of what it indexes, sends big notes to a lane with time for them."""
    chosen = lane_for(engine.settings, kind, lane, nbytes=nbytes)
    job_id, _ = engine.jobs.submit(kind, chosen.name, payload, dedupe_key=dedupe_key)
    return job_id


def submit_reindex(engine: Engine, vault: Path | None = None, *, full: bool = False) -> int:
    """Queue a reindex of the vault; an unfinished reindex of it (e.g. one cut off by a crash) is resumed
    instead of starting another."""
    root = engine.vault_root(vault)
    return submit(
        engine, "reindex", {"vault": str(root), "full": full}, dedupe_key=f"reindex:{root}:{int(full)}"
    )


def submit_notes(
    engine: Engine, paths: Iterable[str], vault: Path | None = None, lane: str | None = None
) -> int:
    """Queue notes or PDFs of the vault to be (re)indexed, or removed if their files are gone."""
    root = engine.vault_root(vault)
    rels = sorted(set(paths))
    nbytes = sum(_size(root / rel) for rel in rels)
    return submit(engine, "upsert_note", {"vault": str(root), "paths": rels}, lane=lane, nbytes=nbytes)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def waitable(engine: Engine, job_id: int) -> bool:
    """Whether a request may wait for this job: its lane's timeout fits the request's (else 202 at once)."""
    job = engine.jobs.get(job_id)
    if job is None:
        return False
    try:
        lane = engine.settings.lane(job.lane)
    except KeyError:
        return False
    return lane.timeout is not None and lane.timeout <= engine.settings.server.request_timeout


def submit_delete(engine: Engine, paths: Iterable[str], lane: str | None = None) -> int:
    return submit(engine, "delete_note", {"paths": sorted(set(paths))}, lane=lane)


def run(engine: Engine, job_id: int, progress: ProgressListener | None = None) -> Job:
    """Run a submitted job in this process (or follow it while another runner has it) to its end."""
    return JobRunner(engine).run_job(job_id, progress)


def cancel(engine: Engine, job_id: int) -> str | None:
    """Cancel a job: a queued one at once, a running one at its next check. Returns its status."""
    return engine.jobs.request_cancel(job_id)


def retry_quarantined(
    engine: Engine, paths: Iterable[str] | None = None, vault: Path | None = None
) -> int | None:
    """Queue quarantined sources (all, or these) to be indexed again; None when there is nothing to retry."""
    held = engine.jobs.quarantined(list(paths) if paths is not None else None)
    if not held:
        return None
    return submit_notes(engine, [q["path"] for q in held], vault or _held_vault(engine), lane="interactive")


def _held_vault(engine: Engine) -> Path | None:
    root = engine.store.get_meta("vault_root")
    return Path(root) if root else None
