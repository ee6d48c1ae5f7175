"""Performance: `/metrics` (Prometheus), `/api/performance/metrics` (latency percentiles per route, cache
hit rates, index and job figures), the cache clear, and the slow-request traces. Admin scope."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel, Field

from ..observability import Observer, get_observer
from .deps import require, run_sync
from .errors import ERROR_RESPONSES

router = APIRouter(tags=["performance"], responses=ERROR_RESPONSES)

Scope = Literal["all workers", "this process"]


class RouteFigures(BaseModel):
    route: str = Field(description="The route's path template; `(unmatched)` for paths no route serves.")
    method: str
    count: int
    errors: int = Field(description="Responses with a 5xx status.")
    client_errors: int = Field(description="Responses with a 4xx status.")
    error_rate: float = Field(description="errors / count.")
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class CacheKindFigures(BaseModel):
    hits: int
    misses: int
    hit_rate: float


class CacheFigures(BaseModel):
    backend: str
    enabled: bool
    entries: int
    hits: int
    misses: int
    hit_rate: float
    per_kind: dict[str, CacheKindFigures] = Field(description="By kind of lookup: `answer`, `search`.")


class IndexFigures(BaseModel):
    sources: int
    chunks: int
    vectors: int
    failed: int
    generation: int


class PerformanceFigures(BaseModel):
    scope: Scope = Field(description="Whose requests these are: every worker's, or this single process's.")
    workers: int = Field(description="Worker processes whose figures are included.")
    started: float = Field(description="Unix time this worker started; figures run from the server's start.")
    uptime_s: float
    percentiles: str = Field(description="How the percentiles are computed.")
    routes: list[RouteFigures]
    cache: CacheFigures
    index: IndexFigures | None
    jobs: dict[str, int] | None = Field(description="Jobs by status.")


class CacheCleared(BaseModel):
    cleared: int = Field(description="Entries removed from the answer and search cache.")
    backend: str
    scope: str = Field(description="Whose cache was cleared.")


class SlowRequest(BaseModel):
    request_id: str | None
    method: str
    route: str
    path: str
    status: int
    latency_ms: float
    time: float = Field(description="Unix time the request ended.")
    at: str = Field(description="The same, as UTC ISO 8601.")
    pid: int = Field(description="The worker process that served it.")
    spans: dict[str, float] = Field(
        description="Timings in ms: `first_byte_ms` (until the response started), `body_ms` (the rest, "
        "e.g. a stream), and any spans the route recorded."
    )


class SlowRequests(BaseModel):
    threshold_ms: float = Field(description="server.slow_request_ms: requests slower than this are kept.")
    keep: int = Field(description="How many of the most recent are kept (logging.slow_requests).")
    scope: Scope
    requests: list[SlowRequest] = Field(description="Newest first.")


def observer(request: Request) -> Observer:
    return get_observer(request.app)


@router.get(
    "/metrics",
    dependencies=[require("admin")],
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_PLAIN_0_0_4: {}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus exposition: requests by route, method and status, latency histograms, requests in
    flight, index and job figures, cache lookups; summed over every worker."""
    body = await run_sync(observer(request).metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


@router.get("/api/performance/metrics", response_model=PerformanceFigures, dependencies=[require("admin")])
async def performance_metrics(request: Request) -> dict[str, Any]:
    """Per route: count, errors and p50/p95/p99 latency since the server started; cache hit rates;
    index and job figures."""
    return await run_sync(observer(request).performance)


@router.post("/api/performance/cache/clear", response_model=CacheCleared, dependencies=[require("admin")])
async def clear_cache(request: Request) -> dict[str, Any]:
    """Empty the answer and search cache (answers are recomputed on next ask)."""
    return await run_sync(observer(request).clear_cache)


@router.get(
    "/api/performance/tracing/slow-requests", response_model=SlowRequests, dependencies=[require("admin")]
)
async def slow_requests(
    request: Request,
    limit: int = Query(default=100, ge=1, le=100_000, description="At most this many, newest first."),
) -> dict[str, Any]:
    """Requests slower than `server.slow_request_ms`, most recent first, with their span timings."""
    obs = observer(request)
    return await run_sync(lambda: obs.slow_requests(limit))
