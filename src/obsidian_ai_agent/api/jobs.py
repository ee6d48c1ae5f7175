"""Jobs and quarantine (admin): the calls the CLI's `jobs` and `quarantine` commands make.

`GET /api/jobs/{id}` is the profiler's view of a job as well: its per-stage breakdown (seconds, share,
items/s) and its slowest items.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .. import jobs
from ..store.jobs import FINISHED
from .bodies import RequestBody
from .deps import EngineDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES, dependencies=[require("admin")])

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The job's id.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No job with this id"}
}


class Progress(BaseModel):
    done: int
    total: int | None
    stage: str | None = Field(description="scan, parse, embed or write")


class ByteProgress(BaseModel):
    done: int
    total: int | None


class JobInfo(BaseModel):
    id: int
    kind: str
    lane: str
    status: Status
    attempts: int
    payload: dict[str, Any]
    progress: Progress
    bytes: ByteProgress
    eta_seconds: float | None = Field(description="Predicted seconds left (running jobs).")
    timed_out: bool
    cancel_requested: bool
    error: str | None
    result: dict[str, Any] | None
    lease_owner: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_seconds: float | None


class JobList(BaseModel):
    jobs: list[JobInfo]


class StageBreakdown(BaseModel):
    stage: str
    seconds: float | None
    share: float | None = Field(description="Share of the job's measured time.")
    items: int
    bytes: int
    items_per_s: float | None


class ItemTiming(BaseModel):
    path: str
    seconds: float | None
    parse: float | None
    embed: float | None
    write: float | None
    chunks: int
    bytes: int


class JobDetail(JobInfo):
    checkpoint: dict[str, Any] | None = Field(description="Where a resumed job carries on from.")
    stages: list[StageBreakdown]
    slowest_items: list[ItemTiming]


class CancelResult(BaseModel):
    id: int
    status: Status
    cancel_requested: bool


class StageStats(BaseModel):
    jobs: int
    seconds_total: float | None
    seconds_p50: float | None
    seconds_p95: float | None
    items: int
    items_per_s_p50: float | None
    items_per_s_p95: float | None
    kb_per_s_p50: float | None


class LaneStats(BaseModel):
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    cancelled: int = 0
    success_rate: float | None = None
    duration_p50: float | None = None
    duration_p95: float | None = None
    items_per_s_p50: float | None = None
    items_per_s_p95: float | None = None
    stages: dict[str, StageStats] = Field(default_factory=dict)


class SlowSource(ItemTiming):
    job_id: int


class JobStats(BaseModel):
    generated_at: float
    queue: dict[str, int] = Field(description="Jobs by status.")
    lanes: dict[str, LaneStats]
    slowest_sources: list[SlowSource]


class Quarantined(BaseModel):
    path: str
    stage: str
    error: str
    content_hash: str | None
    attempts: int
    job_id: int | None
    first_at: float
    last_at: float


class QuarantineList(BaseModel):
    quarantined: list[Quarantined]


class RetryRequest(RequestBody):
    paths: list[str] | None = Field(
        default=None, max_length=10_000, description="These sources (default: every quarantined one)."
    )


class RetryResult(BaseModel):
    job_id: int | None = Field(description="The job that indexes them again; none when nothing was held.")
    retried: list[str]


@router.get("/api/jobs", response_model=JobList)
async def list_jobs(
    engine: EngineDep,
    status: Status | None = None,
    kind: str | None = Query(default=None, max_length=50),
    lane: str | None = Query(default=None, max_length=100),
    limit: int = Query(default=50, ge=1, le=1000),
) -> dict[str, Any]:
    """Recent jobs, newest first, with status, progress and ETA."""
    rows = await run_sync(lambda: engine.jobs.recent(status=status, kind=kind, lane=lane, limit=limit))
    return {"jobs": [j.to_dict() for j in rows]}


@router.get("/api/jobs/stats", response_model=JobStats)
async def stats(
    engine: EngineDep,
    hours: float | None = Query(
        default=None, gt=0, le=1_000_000, description="Only jobs finished in the last N hours."
    ),
) -> dict[str, Any]:
    """Success rate, p50/p95 duration and items/s per lane and per stage; the slowest sources."""
    since = time.time() - hours * 3600 if hours else None
    return await run_sync(lambda: jobs.job_stats(engine.jobs, since=since))


@router.get("/api/jobs/{job_id}", response_model=JobDetail, responses=NOT_FOUND)
async def job_detail(
    job_id: JobId, engine: EngineDep, slowest: int = Query(default=10, ge=0, le=1000)
) -> dict[str, Any]:
    """One job: status, progress, ETA, result, and the profiler's per-stage breakdown and slowest items."""
    data = await run_sync(lambda: jobs.job_detail(engine.jobs, job_id, slowest))
    if data is None:
        raise ApiError(404, f"no job {job_id}; GET /api/jobs lists them")
    return data


@router.delete(
    "/api/jobs/{job_id}",
    response_model=CancelResult,
    responses={
        **NOT_FOUND,
        202: {"model": CancelResult, "description": "The job is running; it stops at its next check"},
        409: {"model": ErrorResponse, "description": "The job has already ended"},
    },
)
async def cancel_job(job_id: JobId, engine: EngineDep) -> Any:
    """Cancel a job: a queued one at once (200), a running one at its next check (202; it keeps what
    it wrote). 409 for a job that has already ended."""

    def cancel() -> tuple[str | None, str | None]:
        job = engine.jobs.get(job_id)
        if job is None or job.status in FINISHED:
            return (job.status if job else None), None
        return job.status, jobs.cancel(engine, job_id)

    before, after = await run_sync(cancel)
    if before is None:
        raise ApiError(404, f"no job {job_id}; GET /api/jobs lists them")
    if after is None or (after in FINISHED and after != "cancelled"):
        ended = after or before
        raise ApiError(409, f"job {job_id} has already ended ({ended}); there is nothing to cancel")
    body = CancelResult.model_validate({"id": job_id, "status": after, "cancel_requested": True})
    return JSONResponse(body.model_dump(), status_code=202 if after == "running" else 200)


@router.get("/api/quarantine", response_model=QuarantineList)
async def quarantine(engine: EngineDep) -> dict[str, Any]:
    """Sources that failed for good, with the stage, the reason and how often they were tried."""
    return {"quarantined": await run_sync(lambda: engine.jobs.quarantined())}


@router.post(
    "/api/quarantine/retry",
    response_model=RetryResult,
    status_code=202,
    responses={
        400: {"model": ErrorResponse, "description": "The body is not JSON"},
        404: {"model": ErrorResponse, "description": "None of the given paths is in quarantine"},
        409: {"model": ErrorResponse, "description": "The vault folder of the index is not available"},
    },
)
async def quarantine_retry(engine: EngineDep, body: RetryRequest | None = None) -> dict[str, Any]:
    """Queue quarantined sources (all, or the given paths) to be indexed again, as one job; those that
    succeed leave the quarantine."""

    paths = body.paths if body else None

    def retry() -> tuple[int | None, list[str]]:
        held = [q["path"] for q in engine.jobs.quarantined(paths)]
        if not held:
            return None, []
        return jobs.retry_quarantined(engine, held), held

    try:
        job_id, held = await run_sync(retry)
    except (FileNotFoundError, ValueError) as e:
        raise ApiError(409, str(e)) from e
    if paths and not held:
        raise ApiError(404, "none of these paths is in quarantine; GET /api/quarantine lists them")
    return {"job_id": job_id, "retried": held}
