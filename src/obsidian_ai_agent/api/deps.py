"""What routes depend on: the engine, and `require(scope)` (authenticate, then rate-limit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
from fastapi import Depends, Request, Response

from ..config import Settings
from ..engine import Engine
from ..security.auth import Principal, authenticate
from ..security.ratelimit import enforce_rate_limit
from .errors import ApiError

Scope = Literal["read", "write", "admin"]
ANONYMOUS = Principal(None)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def require(scope: Scope, group: str | None = None) -> Any:
    """A dependency: the caller's key must hold `scope` (admin holds all), then the rate limit of
    `group` (default: the scope's name) is charged to the key, or to the client address when anonymous.
    Sets `request.state.principal`; refusals raise `ApiError` (401, 403, 429)."""

    async def dependency(request: Request, response: Response) -> Principal:
        try:
            principal = await authenticate(request, scope)
        except ApiError as e:
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
