"""POST /ask and /api/ask: the answerer the CLI's `ask` calls, as JSON or as Server-Sent Events.

The answerer is a blocking generator (retrieval, then tokens from the model, then the answer). It runs in
worker threads, one `next()` at a time, so the event loop never waits on it; the first event is taken
before the response starts, so a bad conversation id or an unusable index still gets a proper error
status instead of a stream that fails.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event
from pydantic import Field

from ..answer import Answer, Answerer, AnswerEvent, ErrorEvent, Event
from ..engine import Engine
from ..security import keys
from ..security.auth import Principal
from ..store.conversations import ConversationNotFound
from .bodies import RequestBody
from .deps import EngineDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse
from .search import ONE_NOTE

log = logging.getLogger("obsidian_ai_agent.api")

router = APIRouter(tags=["ask"], responses=ERROR_RESPONSES)

_answerers_lock = threading.Lock()

Provider = Literal["extractive", "openai", "llamacpp"]


class AskRequest(RequestBody):
    question: str = Field(
        min_length=1, max_length=4000, description="The question, as you would ask a person."
    )
    conversation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Continue (or start) this conversation; conversations belong to the calling key.",
    )
    k: int | None = Field(
        default=None,
        ge=1,
        le=50,
        description="How many sources the answer is built from (default `llm.sources`).",
    )
    mode: Literal["hybrid", "keyword", "semantic"] | None = Field(
        default=None, description="How sources are retrieved (default `search.default_mode`)."
    )
    folder: str | None = Field(default=None, max_length=1000, description="Only notes under this folder.")
    tag: str | None = Field(
        default=None, max_length=200, description="Only notes with this tag or its children."
    )
    kind: Literal["note", "pdf", "web"] | None = None
    path: str | None = ONE_NOTE
    provider: Provider | None = Field(
        default=None,
        description="Answer with this provider instead of `llm.provider`; only one the operator allows "
        "(`llm.allowed_providers`, default `llm.provider` and `extractive`), else 403.",
    )
    stream: bool = Field(
        default=False, description="Stream Server-Sent Events (as does `Accept: text/event-stream`)."
    )
    # Sent by older clients: named, so that they still work while any other unknown field is a 422.
    prefer_fast: bool | None = Field(default=None, deprecated=True, description="Ignored (older clients).")
    top_k: int | None = Field(default=None, deprecated=True, description="Ignored (older clients); use `k`.")


SSE_DOC = (
    "With `stream: true` or `Accept: text/event-stream`: Server-Sent Events, each with a JSON `data:` line. "
    "`retrieval` (the numbered sources), then `token` events (text as it is written), maybe `error` "
    "(`recovered: true` when an extract replaces the text so far), and last `answer` (the whole answer, "
    "as in the JSON response). A stream that fails ends with an `error` event and no answer."
)

SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": SSE_DOC,
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["retrieval", "token", "error", "answer"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}

ASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer with the notes it cites; or, streamed, its events",
        # Each event's shape, under `schema`: the document is OpenAPI 3.1, which has no `itemSchema` (3.2,
        # rejected by openapi-spec-validator); schemathesis checks every event of the stream against it.
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    },
    400: {"model": ErrorResponse, "description": "The body is not JSON, or the question is empty"},
    403: {
        "model": ErrorResponse,
        "description": "The key lacks the scope, or `provider` is not one this server allows",
    },
    404: {
        "model": ErrorResponse,
        "description": "No such conversation for this key, or no indexed note at `path`",
    },
    409: {"model": ErrorResponse, "description": "The index was built with another embedding model"},
    502: {"model": ErrorResponse, "description": "The language model failed and `llm.on_error` is `fail`"},
}


def answerer_for(request: Request, engine: Engine, provider: str | None, k: int | None) -> Answerer:
    """The engine's answerer, or one with another provider or source count (kept per app, sharing the
    engine's searcher and cache so metrics see every hit)."""
    llm = engine.settings.llm
    if provider in (None, llm.provider) and k in (None, llm.sources):
        return engine.answerer
    key = (provider or llm.provider, k or llm.sources)
    searcher, cache = engine.searcher, engine.answerer.cache  # loaded outside the lock
    with _answerers_lock:
        known: dict[tuple[str, int], Answerer] | None = getattr(request.app.state, "answerers", None)
        if known is None:
            known = request.app.state.answerers = {}
        if key not in known:
            settings = llm.model_copy(update={"provider": key[0], "sources": key[1]})
            known[key] = Answerer(searcher, settings, cache=cache, answer=engine.settings.answer)
        return known[key]


def _next(events: Iterator[Event]) -> Event | None:
    return next(events, None)


def _failure(event: ErrorEvent) -> ApiError:
    if event.code == "empty_question":
        return ApiError(400, "the question is empty; ask something", code="empty_question")
    if event.code == "note_not_indexed":
        return ApiError(404, event.message, code="note_not_indexed")
    return ApiError(502, event.message, code="llm_error")


def _sse(event: Event) -> bytes:
    return format_sse_event(event=event.type, data_str=json.dumps(event.to_dict(), ensure_ascii=False))


async def _stream_body(first: Event, events: Iterator[Event], request_id: str | None) -> AsyncIterator[bytes]:
    event: Event | None = first
    try:
        while event is not None:
            yield _sse(event)
            if isinstance(event, AnswerEvent) or (isinstance(event, ErrorEvent) and not event.recovered):
                return
            # Not abandoned on cancel: the generator must not be running when it is closed below.
            event = await anyio.to_thread.run_sync(_next, events)
    except Exception:
        log.exception("the answer stream failed", extra={"request_id": request_id})
        message = f"an unexpected error ended the answer; the server log has request id {request_id}"
        yield _sse(ErrorEvent(message, "internal_error", recovered=False))
    finally:
        # Closing runs the generator's cleanup (a local model's lock, an HTTP stream) even when the
        # client went away.
        close = getattr(events, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)


def wants_stream(request: Request, body: AskRequest) -> bool:
    return body.stream or "text/event-stream" in request.headers.get("accept", "").lower()


def check_provider(engine: Engine, provider: str | None) -> None:
    """A request may only pick a provider the operator enabled: a read key must not be able to load a
    local model that holds every core for a minute."""
    allowed = engine.settings.llm.request_providers()
    if provider is not None and provider not in allowed:
        raise ApiError(
            403,
            f"this server does not let a request choose the provider {provider!r}; allowed: "
            f"{', '.join(allowed)} (the operator sets llm.allowed_providers). Leave `provider` out to use "
            "the configured one",
            code="provider_not_allowed",
            details={"provider": provider, "allowed": allowed},
        )


async def answer(request: Request, body: AskRequest, engine: Engine, principal: Principal) -> Any:
    check_provider(engine, body.provider)

    def start() -> tuple[Iterator[Event], Event | None]:
        # Conversations belong to the key's rotation chain, so rotating a key keeps them.
        owner = keys.lineage_of(engine.store, principal.key_id) if principal.key_id else ""
        answerer = answerer_for(request, engine, body.provider, body.k)
        events = answerer.stream(
            body.question,
            conversation_id=body.conversation_id,
            owner=owner,
            mode=body.mode,
            folder=body.folder,
            tag=body.tag,
            kind=body.kind,
            path=body.path,
        )
        return events, _next(events)

    try:
        events, first = await run_sync(start)
    except ConversationNotFound as e:
        raise ApiError(404, f"{e}; start a new one by sending a new id", code="conversation_not_found") from e
    if first is None:  # pragma: no cover - the answerer always yields
        raise ApiError(500, "no answer was produced")
    if isinstance(first, ErrorEvent) and not first.recovered:
        raise _failure(first)

    if wants_stream(request, body):
        rid = getattr(request.state, "request_id", None)
        return StreamingResponse(
            _stream_body(first, events, rid),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                # A Response of our own does not get the injected response's headers: copy the limits.
                **getattr(request.state, "rate_limit_headers", {}),
            },
        )

    def finish() -> Answer | ErrorEvent | None:
        for event in events:
            if isinstance(event, AnswerEvent):
                return event.answer
            if isinstance(event, ErrorEvent) and not event.recovered:
                return event
        return None

    result = await run_sync(finish)
    if isinstance(result, ErrorEvent):
        raise _failure(result)
    if result is None:  # pragma: no cover - the answerer always ends with an answer or an error
        raise ApiError(500, "no answer was produced")
    return result


@router.post("/ask", response_model=Answer, responses=ASK_RESPONSES, dependencies=[require("read", "ask")])
async def ask(request: Request, body: AskRequest, engine: EngineDep) -> Any:
    """Answer a question from the notes, citing them (the same as `/api/ask`)."""
    return await answer(request, body, engine, request.state.principal)


@router.post(
    "/api/ask", response_model=Answer, responses=ASK_RESPONSES, dependencies=[require("read", "ask")]
)
async def api_ask(request: Request, body: AskRequest, engine: EngineDep) -> Any:
    """Answer a question from the notes, citing them; with no relevant note it says so instead of
    guessing. JSON by default; Server-Sent Events with `stream: true` or `Accept: text/event-stream`."""
    return await answer(request, body, engine, request.state.principal)
