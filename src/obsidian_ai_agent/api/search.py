"""POST /api/search and /api/related: the searcher the CLI's `search` and `related` call."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..search import RelatedNote, SearchResult
from .deps import EngineDep, require
from .errors import ERROR_RESPONSES

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)

Mode = Literal["hybrid", "keyword", "semantic"]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="What to look for; any text is safe.")
    k: int = Field(default=10, ge=1, le=100, description="How many results.")
    mode: Mode = "hybrid"
    folder: str | None = Field(default=None, max_length=1000, description="Only notes under this folder.")
    tag: str | None = Field(
        default=None, max_length=200, description="Only notes with this tag or its children."
    )
    kind: Literal["note", "pdf", "web"] | None = None


class SearchResponse(BaseModel):
    results: list[SearchResult]


class RelatedRequest(BaseModel):
    path: str = Field(min_length=1, max_length=1000, description="A vault-relative note path.")
    k: int = Field(default=10, ge=1, le=100)


class RelatedResponse(BaseModel):
    path: str
    related: list[RelatedNote]


@router.post("/api/search", response_model=SearchResponse, dependencies=[require("read")])
async def search(body: SearchRequest, engine: EngineDep) -> dict[str, Any]:
    """Hybrid (default), keyword or semantic search, with folder, tag and kind filters."""
    results = await anyio.to_thread.run_sync(
        lambda: engine.search(body.query, body.k, body.mode, folder=body.folder, tag=body.tag, kind=body.kind)
    )
    return {"results": results}


@router.post("/api/related", response_model=RelatedResponse, dependencies=[require("read")])
async def related(body: RelatedRequest, engine: EngineDep) -> dict[str, Any]:
    """Notes related to a note: nearest by meaning, raised by wikilinks either way."""
    notes = await anyio.to_thread.run_sync(lambda: engine.related(body.path, body.k))
    return {"path": body.path, "related": notes}
