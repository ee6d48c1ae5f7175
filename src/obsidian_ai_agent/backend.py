"""The HTTP service: `create_app(settings)` builds it; `uvicorn obsidian_ai_agent.backend:app` runs `app`.

Routes are thin: each parses its input, calls the engine the CLI also calls, and shapes the answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from . import __version__
from .config import Settings, load_settings
from .engine import Engine
from .search import SearchError


class SearchRequest(BaseModel):
    query: str = Field(max_length=2000, description="What to look for; any text is safe.")
    k: int = Field(default=10, ge=1, le=100)
    mode: Literal["hybrid", "keyword", "semantic"] = "hybrid"
    folder: str | None = None
    tag: str | None = None
    kind: Literal["note", "pdf", "web"] | None = None


class SearchHit(BaseModel):
    path: str
    title: str
    heading_path: list[str]
    start_line: int | None
    end_line: int | None
    page: int | None
    kind: str
    snippet: str
    score: float
    keyword_rank: int | None
    semantic_rank: int | None
    link: str


class SearchResponse(BaseModel):
    results: list[SearchHit]


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or load_settings()
        app.state.settings = s
        app.state.engine = Engine(s)
        try:
            yield
        finally:
            app.state.engine.close()

    app = FastAPI(title="Obsidian AI Agent", version=__version__, lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]} for e in exc.errors()
        ]
        return _error(422, "validation_error", "the request is not valid; see details", details)

    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        return _error(400, "bad_request", str(exc))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: answers from memory, no I/O."""
        return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - started, 1)}

    @app.post("/api/search", response_model=SearchResponse)
    async def api_search(body: SearchRequest, request: Request) -> dict[str, Any]:
        """Hybrid (default), keyword or semantic search, with folder, tag and kind filters."""
        engine: Engine = request.app.state.engine
        results = await anyio.to_thread.run_sync(
            lambda: engine.search(
                body.query, body.k, body.mode, folder=body.folder, tag=body.tag, kind=body.kind
            )
        )
        return {"results": [r.to_dict() for r in results]}

    return app


app = create_app()
