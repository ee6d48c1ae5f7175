"""The HTTP/1.1 connection handling uvicorn runs for this service: bounds for slow and idle clients.

uvicorn bounds an idle keep-alive connection, but not the time a client takes to send its headers: 300
connections each sending half a header stayed open for as long as the clients liked, holding a socket and
a file descriptor each. Here, around uvicorn's httptools protocol:

- `server.header_timeout`: a connection whose request headers are not complete this many seconds after
  it opened (or after the request's first byte, on a kept-alive connection) gets a 408 and is closed;
- `server.max_connections`: past this many open connections in this worker a new one gets a 503 and is
  closed at once;
- a connection whose request was answered before its body was read to the end (401, 413) is closed
  after the response, so the rest of the body cannot hold it open;
- the 400 for a request that is not HTTP comes in the JSON error shape, as every other error does.

A body that stalls is bounded in the app (`middleware.BodyTimeout`): once headers are in, the app reads.
`serve` passes `http="obsidian_ai_agent.api.protocol:ServerProtocol"`; each worker process reads the
bounds from its settings once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True)
class Bounds:
    header_timeout: float
    max_connections: int


_bounds: Bounds | None = None


def _settings_bounds() -> Bounds:
    """This process's bounds, from its settings (each worker reads the environment `serve` set)."""
    global _bounds
    if _bounds is None:
        from ..config import load_settings

        s = load_settings().server
        _bounds = Bounds(s.header_timeout, s.max_connections)
    return _bounds


def error_bytes(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class ServerProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header-read timeout, a connection cap and JSON 400s."""

    bounds: Bounds | None = None
    """Set on a subclass (`protocol_for`) to skip reading settings (tests, embedded servers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        b = type(self).bounds or _settings_bounds()
        self.header_timeout = b.header_timeout
        self.max_connections = b.max_connections
        self._header_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.logger.warning(
                "refused a connection: %d open in this worker (server.max_connections)", self.max_connections
            )
            self._close_with(
                503,
                "unavailable",
                f"this server has too many open connections ({self.max_connections}, "
                "server.max_connections); try again shortly",
            )
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            # Answered before its body was read to the end (a 401, a 413): the rest of that body would
            # keep arriving, a byte at a time if the client likes, and every byte resets uvicorn's idle
            # timer. The connection cannot carry another request anyway.
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._cancel_header_timer()
        self._close_with(
            400, "bad_request", f"{msg.rstrip('.')}: this is not an HTTP/1.1 request it can read"
        )

    # -- the header timer ------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is being written: no room for another
            return
        self._close_with(
            408,
            "request_timeout",
            f"the request headers did not arrive within {self.header_timeout:g} s (server.header_timeout)",
        )

    def _close_with(self, status: int, code: str, message: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, code, message))
            self.transport.close()


def protocol_for(header_timeout: float, max_connections: int) -> type[ServerProtocol]:
    """A ServerProtocol with these bounds, for a uvicorn started in-process (`uvicorn.Config(http=...)`)."""
    return type(
        "BoundedServerProtocol", (ServerProtocol,), {"bounds": Bounds(header_timeout, max_connections)}
    )
