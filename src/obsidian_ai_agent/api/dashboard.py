"""The operator's dashboard: `GET /dashboard` (the page), its assets under `/dashboard/static/`, and
`GET /` sending a browser there. None needs a key: they hold no data; the page signs in with the admin
key and reads everything from the admin API (see `web/dashboard.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from ..web.dashboard import DASHBOARD_CSP, assets, dashboard_page
from .errors import ApiError

router = APIRouter(include_in_schema=False)

ASSETS = assets()


def _root(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


@router.get("/", include_in_schema=False)
async def home(request: Request) -> RedirectResponse:
    """A browser opening the service lands on the dashboard."""
    return RedirectResponse(_root(request) + "/dashboard", status_code=307)


@router.get("/dashboard", include_in_schema=False)
async def dashboard(request: Request) -> HTMLResponse:
    page = dashboard_page(request.app.title, _root(request))
    return HTMLResponse(page, headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"})


@router.get("/dashboard/static/{name:path}", include_in_schema=False)
async def dashboard_asset(name: str) -> FileResponse:
    found = ASSETS.get(name)
    if found is None:
        raise ApiError(404, f"no dashboard asset {name!r}")
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
