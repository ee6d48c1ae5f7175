"""`/mcp` in the service: the SDK's streamable HTTP transport behind the service's keys and limits.

A plain ASGI route (not an APIRoute): the transport reads the request body and writes the response
itself. Before it does, the caller is authenticated and charged exactly as `require("read")` does for
every read route (401 with the service's error shape, the anonymous `auth` budget charged for a bad key,
403 for a key without the read scope, 429 past the `read` limit), and the principal is left in the
request's state, where the access log and the tools find it. `ask` and the writing tools charge their own
groups (`ask`, `write`) on top, as their routes do.

The session manager runs stateless: the service runs under uvicorn with several worker processes and any
of them may receive the next request of a client, so a session kept in one worker's memory would be
unknown to the others. Stateless, every request stands alone (the SDK answers `initialize` and then
serves each call with a fresh transport), and JSON responses keep each call one plain request/response
that the timeout, body-limit and logging middleware treat like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api.deps import ANONYMOUS
from ..api.errors import error_response
from ..config import Settings
from ..engine import Engine
from ..security.auth import authenticate
from ..security.errors import Refused
from ..security.ratelimit import enforce_rate_limit

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

PATH = "/mcp"
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class McpEndpoint:
    """The ASGI app of `/mcp`: authenticate, rate-limit, then hand the request to the session manager
    that `serving` started for this app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        limits = Response()
        try:
            try:
                principal = await authenticate(request, "read")
            except Refused as e:
                if e.status == 401:  # guessing keys costs the caller's address its anonymous budget
                    await enforce_rate_limit(request, limits, ANONYMOUS, "auth")
                raise
            request.state.principal = principal
            await enforce_rate_limit(request, limits, principal, "read")
        except Refused as e:
            await error_response(e.status, e.code, e.message, e.details, e.headers)(scope, receive, send)
            return
        manager = getattr(request.app.state, "mcp", None)
        if manager is None:
            response = error_response(503, "unavailable", "the MCP server is not running; try again shortly")
            await response(scope, receive, send)
            return
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in limits.headers.items()]
        extra = [(k, v) for k, v in extra if k.startswith(b"x-ratelimit-")]

        async def with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await manager.handle_request(scope, receive, with_limits)


ROUTE = Route(PATH, McpEndpoint(), name="mcp", include_in_schema=False)


@asynccontextmanager
async def serving(app: Any, settings: Settings, engine: Engine) -> AsyncIterator[None]:
    """Run the MCP session manager for the app's lifetime (inside its lifespan, where the engine is);
    `/mcp` answers 503 outside it."""
    from mcp.server.transport_security import TransportSecuritySettings

    from .server import build_server
    from .tools import Vault

    @asynccontextmanager
    async def open_vault() -> AsyncIterator[Vault]:
        yield Vault(engine, settings, runs_jobs=settings.server.run_jobs)

    # Keys are what keep other sites out; with auth off (allowed on loopback only) a web page could
    # still reach a loopback port through DNS rebinding, so then only loopback Host/Origin are served.
    guard = not settings.server.auth.enabled
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=guard,
        allowed_hosts=LOOPBACK_HOSTS if guard else [],
        allowed_origins=LOOPBACK_ORIGINS if guard else [],
    )
    server = build_server(settings, open_vault)
    server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        json_response=True,
        transport_security=security,
        max_request_body_size=settings.server.max_body_bytes,
    )
    manager = server.session_manager
    async with manager.run():
        app.state.mcp = manager
        try:
            yield
        finally:
            app.state.mcp = None
