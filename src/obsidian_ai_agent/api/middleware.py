"""ASGI middleware around every route: request ids, security headers, body limits and the request timeout.

Pure ASGI (not BaseHTTPMiddleware) so that streamed answers pass through untouched once they start.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


def _error_body(code: str, message: str, details: Any = None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()


async def send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = _error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def request_id(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    rid = state.get("request_id")
    return str(rid) if rid else None


class RequestContext:
    """Gives each request an id (the caller's `X-Request-ID` when it is sane, else a new one), echoes it
    on the response, and adds security headers (HSTS only when the request came over TLS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        tls = scope.get("scheme") == "https"
        docs = scope.get("path", "").startswith(_DOC_PATHS)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers += [
                    (b"x-request-id", rid.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                # A page that sets its own policy (the status page, the dashboard) keeps it: browsers
                # enforce every policy they are sent, so a second, stricter one would block its styles.
                own = any(k.lower() == b"content-security-policy" for k, _ in headers)
                if not docs and not own:
                    headers.append(
                        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
                    )
                if tls:
                    headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


class BodyLimit:
    """413 for a body past the limit, by its Content-Length or, when streamed in chunks, as it arrives.
    `upload_paths` get the larger upload limit."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int, upload_paths: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope.get("path", "") in self.upload_paths else self.limit
        message = (
            f"the request body is larger than this server accepts ({limit} bytes); "
            "send less, or raise server.max_body_bytes / server.max_upload_bytes"
        )
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await send_error(send, 413, "payload_too_large", message, [(b"connection", b"close")])
            return
        seen = 0
        started = responded = False

        async def counted() -> Message:
            nonlocal seen, responded
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    # Answer now and tell the app the client is gone, so it stops reading and writing.
                    if not started and not responded:
                        responded = True
                        await send_error(send, 413, "payload_too_large", message, [(b"connection", b"close")])
                    return {"type": "http.disconnect"}
            return msg

        async def tracked(msg: Message) -> None:
            nonlocal started
            if responded:
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not responded:
                raise


class Timeout:
    """504 when no response has started within `seconds`; once a response (or a stream) has started,
    it is no longer bounded here. Routes run blocking work with `abandon_on_cancel`, so this is prompt."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        with anyio.CancelScope(deadline=anyio.current_time() + self.seconds) as cs:

            async def tracked(msg: Message) -> None:
                nonlocal started
                if msg["type"] == "http.response.start":
                    started = True
                    cs.deadline = math.inf
                await send(msg)

            await self.app(scope, receive, tracked)
        if cs.cancelled_caught and not started:
            await send_error(
                send,
                504,
                "timeout",
                f"the request took longer than {self.seconds:g} s (server.request_timeout); "
                "try a narrower request, or raise the timeout",
            )


class BodyTimeout:
    """408 (and the connection closed) when a request body stalls: no part of it arrives for `seconds`.
    A client that declares a body and never sends it would otherwise hold a connection and a task for as
    long as the request timeout, or forever once a response has started streaming."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = responded = False
        more = True

        async def timed() -> Message:
            nonlocal responded, more
            if responded or not more:
                return await receive() if not responded else {"type": "http.disconnect"}
            with anyio.move_on_after(self.seconds) as cs:
                msg = await receive()
            if cs.cancelled_caught:
                if not started and not responded:
                    responded = True
                    await send_error(
                        send,
                        408,
                        "request_timeout",
                        f"the request body stalled: nothing arrived for {self.seconds:g} s "
                        "(server.body_timeout); send the whole body promptly",
                        [(b"connection", b"close")],
                    )
                return {"type": "http.disconnect"}
            if msg["type"] == "http.request" and not msg.get("more_body", False):
                more = False
            return msg

        async def tracked(msg: Message) -> None:
            nonlocal started
            if responded:
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, timed, tracked)
        except Exception:
            if not responded:
                raise


class CORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in the JSON error shape instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace").strip() or "Disallowed CORS request"
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
        }
        return JSONResponse(
            {
                "error": {
                    "code": "cors_refused",
                    "message": f"{reason}: this server answers cross-origin requests only from "
                    "server.cors_origins, with the methods and headers it lists",
                    "details": {"origin": request_headers.get("origin")},
                }
            },
            status_code=response.status_code,
            headers=headers,
        )
