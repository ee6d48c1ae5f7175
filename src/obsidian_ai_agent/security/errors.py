"""What a guard raises when it turns a request away (no key, a key without the scope, a spent budget).

It lives here, not in `api/`, so that security knows nothing of the HTTP layer above it; the service
turns it into the one error shape (`backend.py` registers the handler, `api/deps.py` catches it).
"""

from __future__ import annotations

from typing import Any

_CODES = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


class Refused(Exception):
    """A request refused with `status` (401, 403, 429), a message saying what to do, and headers
    (`WWW-Authenticate`, `Retry-After`) the response must carry."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "refused")
        self.message = message
        self.details = details
        self.headers = headers or {}
