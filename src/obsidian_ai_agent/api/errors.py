"""One error shape for every route: `{"error": {"code", "message", "details"}}`, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..config import ConfigError
from ..search import NoteNotIndexed, SearchError
from ..security.errors import Refused
from ..store import DatabaseDamaged, DataDirNotWritable, ModelMismatchError, StoreUnavailable

log = logging.getLogger("obsidian_ai_agent.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """What every error looks like."""

    error: ErrorBody


class ApiError(Refused):
    """Raised by routes and dependencies; becomes the error shape with `status` and `headers`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # The same refusal the security layer raises, with the codes of every status a route may give.
        super().__init__(
            status, message, code=code or _CODES.get(status, "error"), details=details, headers=headers
        )


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def loads_json(raw: bytes | str, expected: str) -> Any:
    """A JSON body, or ApiError 400 saying what to send: also for nesting too deep to parse (the
    parser's RecursionError, which would otherwise be a 500)."""
    import json

    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(
            400, f"the JSON body is nested too deeply to read; send {expected}", code="bad_request"
        ) from None
    except ValueError:
        raise ApiError(400, f"the body is not valid JSON; send {expected}", code="bad_request") from None


# Responses every protected route can give, for OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in {
        400: "The request cannot be used as sent (e.g. a body that is not JSON); the message says why",
        401: "No key, or a key that is not valid",
        403: "The key lacks the scope this route needs",
        413: "The body is larger than the server accepts",
        422: "The request does not validate; `details` names each field",
        429: "Rate limited; `Retry-After` says when to try again",
        500: "An unexpected error (the log has the request id)",
        503: "The data directory is not writable, or the index database is damaged (the message says)",
        504: "The request took longer than the server allows",
    }.items()
}


def _unexpected_message(rid: str | None) -> str:
    return f"an unexpected error; the server log has request id {rid}"


class CatchAll:
    """Innermost around the routes: an exception no handler took becomes a 500 in the error shape and is
    not raised further. Starlette's ServerErrorMiddleware answers too, but re-raises, and uvicorn then
    closes the connection: a client's next request on that keep-alive connection was lost with a reset."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            return  # the client is gone (or its body stalled and was answered 408): nothing to answer
        except Exception:
            if started:  # half a response is out: only closing the connection can end it
                raise
            rid = (scope.get("state") or {}).get("request_id")
            log.exception("unhandled error", extra={"request_id": rid})
            response = error_response(500, "internal_error", _unexpected_message(rid))
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(CatchAll)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in exc.errors()
        ]
        fields = ", ".join(d["field"] for d in details)
        return error_response(422, "validation_error", f"the request is not valid: {fields}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, None, getattr(exc, "headers", None))

    @app.exception_handler(SearchError)
    async def _search(request: Request, exc: SearchError) -> JSONResponse:
        if isinstance(exc, NoteNotIndexed):
            return error_response(404, "note_not_indexed", str(exc))
        return error_response(400, "bad_request", str(exc))

    @app.exception_handler(ModelMismatchError)
    async def _model(request: Request, exc: ModelMismatchError) -> JSONResponse:
        return error_response(409, "embedding_model_mismatch", str(exc))

    @app.exception_handler(DatabaseDamaged)
    async def _damaged(request: Request, exc: DatabaseDamaged) -> JSONResponse:
        log.error("%s", exc)
        return error_response(503, "database_damaged", str(exc))

    @app.exception_handler(DataDirNotWritable)
    async def _read_only(request: Request, exc: DataDirNotWritable) -> JSONResponse:
        log.error("%s", exc)
        return error_response(503, "data_dir_not_writable", str(exc))

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("%s", exc)
        return error_response(503, "database_unavailable", str(exc), None, {"Retry-After": "5"})

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return error_response(500, "config_error", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        log.exception("unhandled error", extra={"request_id": rid})
        return error_response(500, "internal_error", _unexpected_message(rid), None)
