"""What routes depend on: the engine, and `require(scope)` (authenticate, refuse writes during maintenance,
then rate-limit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings
from ..engine import Engine
from ..ops.maintenance import MaintenanceCache
from ..security.auth import Principal, authenticate
from ..security.errors import Refused
from ..security.ratelimit import enforce_rate_limit

Scope = Literal["read", "write", "admin"]
ANONYMOUS = Principal(None)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The two ways to send a key, declared for OpenAPI (so /docs can "Authorize" and "Try it out"); either
# one will do. They only document: `authenticate` reads the headers and gives the refusals.
_SCOPES_DOC = "Scopes: read (search, ask, status), write (notes, indexing), admin (everything)."
BEARER = HTTPBearer(
    scheme_name="bearer", description=f"`Authorization: Bearer <key>`. {_SCOPES_DOC}", auto_error=False
)
API_KEY = APIKeyHeader(
    name="X-API-Key", scheme_name="apiKey", description=f"`X-API-Key: <key>`. {_SCOPES_DOC}", auto_error=False
)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def require(scope: Scope, group: str | None = None, *, in_maintenance: bool = False) -> Any:
    """A dependency: the caller's key must hold `scope` (admin holds all), then the rate limit of
    `group` (default: the scope's name) is charged to the key, or to the client address when anonymous.
    Sets `request.state.principal`; refusals raise `Refused` (401, 403, 429), which
    the service turns into the error shape."""

    async def dependency(
        request: Request,
        response: Response,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        _api_key: Annotated[str | None, Depends(API_KEY)],
    ) -> Principal:
        try:
            principal = await authenticate(request, scope)
        except Refused as e:
            if e.status == 401:  # guessing keys costs the caller's address its anonymous budget
                await enforce_rate_limit(request, response, ANONYMOUS, "auth")
            raise
        request.state.principal = principal
        # Maintenance mode refuses what writes: a POST, PUT, PATCH or DELETE to a route that needs a write
        # or admin key. Reads sent as POST need a read key and go on; `in_maintenance` keeps a route open
        # (the switch itself).
        if refused_in_maintenance(request.method, scope, in_maintenance):
            await refuse_during_maintenance(request)
        await enforce_rate_limit(request, response, principal, group or scope)
        return principal

    dependency.__name__ = f"require_{scope}"
    return Depends(dependency)


def refused_in_maintenance(method: str, scope: str | None, in_maintenance: bool = False) -> bool:
    """Whether maintenance mode refuses a request: a POST, PUT, PATCH or DELETE to a route that needs a
    write or admin key, unless the route stays open (`require(..., in_maintenance=True)`)."""
    return scope in ("write", "admin") and not in_maintenance and method.upper() in WRITE_METHODS


def maintenance_cache(app: Any) -> MaintenanceCache:
    """This app's (this worker's) maintenance cache, made on first use."""
    cache: MaintenanceCache | None = getattr(app.state, "maintenance_cache", None)
    if cache is None:
        cache = MaintenanceCache()
        app.state.maintenance_cache = cache
    return cache


async def refuse_during_maintenance(request: Request) -> None:
    """503, code `maintenance`, the operator's message verbatim and `Retry-After`, while maintenance is
    on (read through the worker's cache: at most one meta read per second)."""
    engine = get_engine(request)
    cache = maintenance_cache(request.app)
    m = await run_sync(lambda: cache.get(engine)) if cache.stale() else cache.get(engine)
    if m is None:
        return
    wait = m.retry_after()
    raise Refused(
        503,
        m.message,
        code="maintenance",
        details={"until": m.until, "since": m.since, "retry_after": wait},
        headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
    )


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

T = TypeVar("T")


async def run_sync(fn: Callable[[], T]) -> T:
    """Blocking library work off the event loop; abandoned (not awaited) when the request times out."""
    return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
