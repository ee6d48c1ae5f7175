"""Each request timed to the end of its body, logged as one line, counted, and kept when it was slow."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Match

from .logs import adopt_uvicorn_loggers

if TYPE_CHECKING:
    from ..security.ratelimit import IPNetwork
    from . import Observer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "(unmatched)"
log = logging.getLogger("obsidian_ai_agent.observability")


# -- spans: timings a route records for the slow-request trace ------------------------------------------


def _state(request: Any) -> dict[str, Any]:
    scope = request if isinstance(request, MutableMapping) else request.scope
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def record_span(request: Any, name: str, ms: float) -> None:
    """Adds `ms` to the span `name` of this request (`request` is a Request or an ASGI scope)."""
    spans = _state(request).setdefault("spans", {})
    spans[name] = round(spans.get(name, 0.0) + ms, 2)


@contextmanager
def span(request: Any, name: str) -> Iterator[None]:
    """Times the block as span `name` of this request; slow requests are kept with their spans."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record_span(request, name, (time.perf_counter() - t0) * 1000)


# -- who and what ------------------------------------------------------------------------------------------


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The route's path template (`/api/jobs/{job_id}`), never the raw path, so metrics stay bounded."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    # Refused before routing (body limit, timeout): find the route it was meant for.
    for route in routes:
        try:
            match, _ = route.matches(scope)
        except Exception:  # a route that cannot judge this scope
            continue
        if match != Match.NONE:
            found = getattr(route, "path", None)
            if isinstance(found, str):
                return found
    return UNMATCHED


def client(scope: Scope, proxies: list[IPNetwork]) -> str:
    """The caller's address, as the rate limiter sees it (X-Forwarded-For only from trusted proxies)."""
    from ..security.ratelimit import client_address  # api/ imports this package: import when used

    peer = scope.get("client")
    headers = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"x-forwarded-for"]
    return client_address(peer[0] if peer else None, headers, proxies)


# -- slow requests -------------------------------------------------------------------------------------------


class SlowRequests:
    """The most recent `keep` slow requests. With several workers each one also appends its own to
    `slow_<pid>.jsonl` in the metrics directory (rewritten to its last `keep` now and then), so any
    worker can answer for all of them."""

    def __init__(self, keep: int, directory: Path | None) -> None:
        self.keep = keep
        self.directory = directory
        self._ring: deque[dict[str, Any]] = deque(maxlen=keep)
        self._written = 0
        self._lock = threading.Lock()

    @property
    def scope(self) -> str:
        return "all workers" if self.directory is not None else "this process"

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._ring.append(entry)
            if self.directory is None:
                return
            path = self.directory / f"slow_{os.getpid()}.jsonl"
            try:
                if self._written >= 2 * self.keep:
                    tmp = path.with_name(path.name + ".tmp")
                    tmp.write_text("".join(json.dumps(e) + "\n" for e in self._ring), encoding="utf-8")
                    os.replace(tmp, path)
                    self._written = len(self._ring)
                else:
                    with path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(entry) + "\n")
                    self._written += 1
            except OSError as e:
                log.warning("cannot record a slow request in %s: %s", path, e.strerror)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """Newest first, at most `min(limit, keep)`."""
        with self._lock:
            items = list(self._ring)
        if self.directory is not None:
            items = []
            for f in self.directory.glob("slow_*.jsonl"):
                try:
                    lines = f.read_text(encoding="utf-8").splitlines()
                except OSError:
                    continue
                for line in lines:
                    try:
                        items.append(json.loads(line))
                    except ValueError:  # a line being written right now
                        continue
        items.sort(key=lambda e: e.get("time", 0.0), reverse=True)
        return items[: min(limit, self.keep)]


# -- the middleware ------------------------------------------------------------------------------------------


class RequestObserver:
    """Pure ASGI, so streams pass through untouched: the request is timed to the end of its body."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # uvicorn configures its loggers after the app is built when it is handed an app object.
            adopt_uvicorn_loggers()
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # unless a response starts: an exception that escapes becomes a 500 outside
        first_byte: float | None = None

        async def observed(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = int(message["status"])
                first_byte = time.perf_counter()
            await send(message)

        metrics = self.observer.metrics
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed)
        finally:
            metrics.in_flight.dec()
            try:
                self.observer.finished(scope, status, t0, first_byte)
            except Exception:  # observing must never break a response
                log.exception("could not record a request")
