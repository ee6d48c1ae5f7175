"""POST /api/search and /api/related: the searcher the CLI's `search` and `related` call."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from ..search import (
    K_MAX,
    KINDS,
    MODES,
    QUERY_MAX_CHARS,
    RelatedNote,
    SearchResult,
    check_k,
    check_kind,
    check_mode,
    check_query,
)
from .bodies import RequestBody
from .deps import EngineDep, require
from .errors import ERROR_RESPONSES, ErrorResponse

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)

# The rules are the library's (`search.check_*`), the same the CLI applies; the schema only states them.
Query = Annotated[
    str,
    AfterValidator(check_query),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": QUERY_MAX_CHARS, "pattern": r"\S"},
    ),
]
K = Annotated[
    int, AfterValidator(check_k), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": K_MAX})
]
Mode = Annotated[str, AfterValidator(check_mode), WithJsonSchema({"type": "string", "enum": list(MODES)})]
Kind = Annotated[str, AfterValidator(check_kind), WithJsonSchema({"type": "string", "enum": list(KINDS)})]


# The one-note filter of /api/search and /api/ask.
ONE_NOTE: Any = Field(
    default=None,
    min_length=1,
    max_length=1000,
    description="Only this note: its vault-relative path, e.g. 'Folder/Note.md' (404 "
    "`note_not_indexed` when the index holds none there).",
)


class SearchRequest(RequestBody):
    query: Query = Field(description="What to look for; any text is safe.")
    k: K | None = Field(default=None, description="How many results (default: setting `search.k`).")
    mode: Mode | None = Field(
        default=None, description="hybrid, keyword or semantic (default: setting `search.default_mode`)."
    )
    folder: str | None = Field(default=None, max_length=1000, description="Only notes under this folder.")
    tag: str | None = Field(
        default=None, max_length=200, description="Only notes with this tag or its children."
    )
    kind: Kind | None = Field(default=None, description="Only this kind of source: note, pdf or web.")
    path: str | None = ONE_NOTE


class SearchResponse(BaseModel):
    results: list[SearchResult]


class RelatedRequest(RequestBody):
    path: str = Field(min_length=1, max_length=1000, description="A vault-relative note path.")
    k: K = Field(default=10, description="How many notes.")


class RelatedResponse(BaseModel):
    path: str
    related: list[RelatedNote]


@router.post(
    "/api/search",
    response_model=SearchResponse,
    dependencies=[require("read")],
    responses={404: {"model": ErrorResponse, "description": "No indexed note at `path`"}},
)
async def search(body: SearchRequest, engine: EngineDep) -> dict[str, Any]:
    """Hybrid (default), keyword or semantic search, with folder, tag, kind and one-note filters."""
    results = await anyio.to_thread.run_sync(
        lambda: engine.search(
            body.query, body.k, body.mode, folder=body.folder, tag=body.tag, kind=body.kind, path=body.path
        )
    )
    return {"results": results}


@router.post("/api/related", response_model=RelatedResponse, dependencies=[require("read")])
async def related(body: RelatedRequest, engine: EngineDep) -> dict[str, Any]:
    """Notes related to a note: nearest by meaning, raised by wikilinks either way."""
    notes = await anyio.to_thread.run_sync(lambda: engine.related(body.path, body.k))
    return {"path": body.path, "related": notes}
