"""Maintenance mode over HTTP: `GET`/`POST /api/maintenance` (admin) and the public status page
`GET /status-page` (no key). While it is on, `require()` (api/deps.py) refuses every route that writes:
a POST, PUT, PATCH or DELETE needing a write or admin key answers 503, code `maintenance`, with the
operator's message verbatim and `Retry-After`, after the key check and before the rate limit. Reads,
the reads sent as POST (`/api/search`, `/api/related`, `/api/ask`) included, go on; so does this switch.
`/mcp` checks its keys per tool and is left alone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from ..ops import maintenance as ops
from ..security.auth import Principal
from ..web import status_page
from .bodies import RequestBody
from .deps import EngineDep, maintenance_cache, require, run_sync
from .errors import ERROR_RESPONSES, ApiError

# -- the admin switch -----------------------------------------------------------------------------

router = APIRouter(tags=["maintenance"], responses=ERROR_RESPONSES)


class MaintenanceState(BaseModel):
    """Whether maintenance is on, and if so its message, expected end, start and who turned it on."""

    on: bool = Field(description="True while writes are refused with 503.")
    message: str | None = Field(description="What refused writers and the status page show, verbatim.")
    until: float | None = Field(
        description="Expected end, unix time; maintenance ends by itself then. None: until turned off."
    )
    since: float | None = Field(description="When this maintenance began, unix time.")
    by: str | None = Field(description="Who turned it on: `api:<key name> (<key id>)` or `cli:<user>`.")


class MaintenanceChange(RequestBody):
    on: bool = Field(description="True to start (or update) maintenance, false to end it.")
    message: str | None = Field(
        default=None,
        max_length=ops.MESSAGE_MAX_CHARS,
        description="Needed with `on: true`: what users read while writes are refused (shown verbatim, "
        "also on the public status page).",
    )
    until: float | str | None = Field(
        default=None,
        description="When maintenance should end: unix time, an ISO 8601 time (`2025-06-01T14:30:00Z`; "
        "without a zone it is the server's local time) or a duration from now (`90s`, `30m`, `2h`). "
        "It ends by itself then. Leave out or null: until turned off.",
    )


def _by(principal: Principal | None) -> str:
    if principal is None or principal.key_id is None:
        return "api:anonymous"
    return f"api:{principal.name} ({principal.key_id})"


@router.get("/api/maintenance", response_model=MaintenanceState, dependencies=[require("admin")])
async def get_maintenance(engine: EngineDep) -> dict[str, Any]:
    """Whether maintenance is on, with its message, expected end and who turned it on."""
    return ops.state_dict(await run_sync(lambda: ops.current(engine)))


@router.post(
    "/api/maintenance",
    response_model=MaintenanceState,
    dependencies=[require("admin", in_maintenance=True)],  # the switch stays open, to turn it off
)
async def set_maintenance(request: Request, body: MaintenanceChange, engine: EngineDep) -> dict[str, Any]:
    """Turn maintenance on (routes that write answer 503 with `message` and `Retry-After`; reads go
    on; alerts are muted; the status page says Maintenance) or off. Every worker sees the change
    within a second."""
    by = _by(getattr(request.state, "principal", None))

    def change() -> ops.Maintenance | None:
        try:
            if not body.on:
                ops.turn_off(engine)
                return None
            return ops.turn_on(engine, body.message or "", ops.parse_until(body.until), by)
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    m = await run_sync(change)
    maintenance_cache(request.app).clear()
    return ops.state_dict(m)


# -- the public status page -----------------------------------------------------------------------


def _quality(accept: str, media: str) -> float:
    """The q-value `accept` gives `media` (exact type, then `type/*`, then `*/*`)."""
    best: tuple[int, float] = (-1, 0.0)
    kind = media.split("/")[0]
    for part in accept.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        name = name.lower()
        rank = 2 if name == media else 1 if name == f"{kind}/*" else 0 if name == "*/*" else -1
        if rank < 0:
            continue
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if rank > best[0]:
            best = (rank, q)
    return best[1]


def wants_json(accept: str | None) -> bool:
    """JSON when the client prefers `application/json` to `text/html` (browsers send text/html first)."""
    if not accept:
        return False
    return _quality(accept, "application/json") > _quality(accept, "text/html")


@router.get("/status-page", include_in_schema=False)
async def status_page_route(request: Request, engine: EngineDep) -> Any:
    """The public status page: no key. HTML for people, JSON (`Accept: application/json`) for scripts."""
    s = await run_sync(lambda: ops.public_status(engine))
    headers = {"Cache-Control": "no-cache", "Vary": "Accept"}
    if wants_json(request.headers.get("accept")):
        return JSONResponse(s.to_dict(), headers=headers)
    page = status_page.render(s.status, s.message, s.until, s.updated_at)
    return HTMLResponse(page, headers={**headers, "Content-Security-Policy": status_page.STATUS_CSP})
