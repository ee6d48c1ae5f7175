"""What routes depend on: the engine, and `require(scope)` (authenticate, then rate-limit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings
from ..engine import Engine
from ..security.auth import Principal, authenticate
from ..security.errors import Refused
from ..security.ratelimit import enforce_rate_limit

Scope = Literal["read", "write", "admin"]
ANONYMOUS = Principal(None)

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


def require(scope: Scope, group: str | None = None) -> Any:
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
        await enforce_rate_limit(request, response, principal, group or scope)
        return principal

    dependency.__name__ = f"require_{scope}"
    return Depends(dependency)


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

T = TypeVar("T")


async def run_sync(fn: Callable[[], T]) -> T:
    """Blocking library work off the event loop; abandoned (not awaited) when the request times out."""
    return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
