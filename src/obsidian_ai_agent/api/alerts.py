"""Alerts and the monitor (admin): open and recent alerts, one alert with its history, acknowledging, the
incident log as JSON or CSV, the samples behind the dashboard's graphs, and the monitor's state."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..ops import alerts
from .bodies import RequestBody
from .deps import EngineDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse

router = APIRouter(tags=["alerts"], responses=ERROR_RESPONSES, dependencies=[require("admin")])
NO_ALERT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No alert with this id"}
}
AlertId = Path(ge=1, le=2**62, description="The alert's id, from `GET /api/health/alerts`.")


class Alert(BaseModel):
    id: int
    rule: str = Field(description="The rule that fired (a key of `monitor.rules`).")
    severity: Literal["warning", "critical"]
    state: Literal["firing", "resolved"]
    summary: str
    value: float | None = Field(description="The rule's figure when it last fired or was updated.")
    threshold: float | None
    rollback: bool = Field(description="A rollback criterion: rollback recommended.")
    started_at: float
    updated_at: float
    resolved_at: float | None
    last_notified_at: float | None
    notifications: int = Field(description="Firing and repeat notifications queued for the channels.")
    acked_by: str | None
    acked_at: float | None
    ack_note: str | None


class AlertEvent(BaseModel):
    at: float
    event: str = Field(description="firing, resolved, acknowledged or muted.")
    detail: str


class AlertDelivery(BaseModel):
    channel: str
    event: str
    created_at: float
    attempts: int
    delivered_at: float | None
    gave_up_at: float | None
    error: str | None


class AlertDetail(Alert):
    events: list[AlertEvent]
    deliveries: list[AlertDelivery]


class AlertOverview(BaseModel):
    open: list[Alert] = Field(description="Alerts firing now, newest first.")
    recent: list[Alert] = Field(description="Every alert started within `hours`, newest first.")


class Acknowledge(RequestBody):
    by: str = Field(min_length=1, max_length=200, description="Who is on it.")
    note: str = Field(default="", max_length=4000, description="What they are doing about it.")


class Samples(BaseModel):
    window: str
    since: float
    resolution_s: float = Field(description="Mean spacing of the samples returned.")
    samples: list[dict[str, Any]] = Field(
        description="Oldest first; each has `at` and the figures of one sample (any may be missing or "
        "null, e.g. request figures when no request came in)."
    )


class MonitorState(BaseModel):
    enabled: bool
    interval_s: float
    holder: dict[str, Any] | None = Field(description="The process running the monitor now, if any.")
    last_sample_at: float | None
    samples: dict[str, int] = Field(description="Stored samples by resolution in seconds (0: raw).")
    rules: list[dict[str, Any]]
    channels: list[dict[str, Any]]


def _not_found(e: alerts.AlertNotFound) -> ApiError:
    return ApiError(404, str(e))


@router.get("/api/health/alerts", response_model=AlertOverview)
async def list_alerts(
    engine: EngineDep,
    hours: float = Query(default=24.0, gt=0, le=24 * 3650, description="How far back `recent` reaches."),
) -> dict[str, Any]:
    """Open alerts and recent ones (the incident log's last `hours`)."""
    return await run_sync(lambda: alerts.overview(engine, hours))


@router.get("/api/health/alerts/export", response_class=Response)
async def export_alerts(
    engine: EngineDep,
    format: Literal["json", "csv"] = Query(default="json"),
    since: float = Query(default=0.0, ge=0, description="Unix time; alerts started since then."),
) -> Response:
    """The incident log: every alert since `since`, oldest first, as JSON or CSV."""
    text = await run_sync(lambda: alerts.export(engine, since, format))
    media = "text/csv" if format == "csv" else "application/json"
    return Response(
        text,
        media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="alerts.{format}"'},
    )


@router.get("/api/health/alerts/{alert_id}", response_model=AlertDetail, responses=NO_ALERT)
async def alert_detail(engine: EngineDep, alert_id: int = AlertId) -> dict[str, Any]:
    """One alert with its events (firing, acknowledged, resolved) and its deliveries to each channel."""
    try:
        return await run_sync(lambda: alerts.detail(engine, alert_id))
    except alerts.AlertNotFound as e:
        raise _not_found(e) from None


@router.post("/api/health/alerts/{alert_id}/acknowledge", response_model=Alert, responses=NO_ALERT)
async def acknowledge(engine: EngineDep, body: Acknowledge, alert_id: int = AlertId) -> dict[str, Any]:
    """Record that a person is on it: who, when and a note. An acknowledged alert is not repeated; it
    still resolves by itself when its condition ends."""
    try:
        return await run_sync(lambda: alerts.acknowledge(engine, alert_id, body.by, body.note))
    except alerts.AlertNotFound as e:
        raise _not_found(e) from None


@router.get("/api/monitor/samples", response_model=Samples)
async def samples(
    engine: EngineDep, window: Literal["1h", "1d", "30d"] = Query(default="1h")
) -> dict[str, Any]:
    """The monitor's samples over the last hour, day or 30 days (thinned means for the older parts)."""
    return await run_sync(lambda: alerts.samples(engine, window))


@router.get("/api/monitor", response_model=MonitorState)
async def monitor(engine: EngineDep) -> dict[str, Any]:
    """Whether the monitor runs, which process holds it, its last sample, its rules and channels
    (channel secrets never appear)."""
    return await run_sync(lambda: alerts.status(engine))
