"""The tools: each parses its arguments (the schema says what is allowed), calls the Engine once, and
shapes the result for a model to read. Anticipated failures become `ToolError`s whose text says what was
wrong and what to do; the SDK returns them as error results and the session goes on."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from ..answer import Answer, AnswerError
from ..config import Settings
from ..engine import Engine
from ..search import K_MAX, QUERY_MAX_CHARS, SearchError, SearchResult, check_query
from ..security import keys
from ..security.auth import ALL_SCOPES, Principal
from ..security.errors import Refused
from ..security.paths import PathRefused
from ..security.ratelimit import enforce_rate_limit
from ..store import ModelMismatchError, StoreError
from ..store.conversations import ConversationNotFound

log = logging.getLogger(__name__)

T = TypeVar("T")

LIST_LIMIT = 200
"""The most notes (or resources) one page of a listing holds."""
READ_MAX_CHARS = 200_000

# The local user of `obsidian-ai-agent mcp` owns the data dir: the operator, with every scope.
STDIO = Principal(None, "stdio", ALL_SCOPES)


@dataclass(frozen=True)
class Vault:
    """What the tools reach through the server's lifespan: the engine, and whether a job runner of this
    process runs queued jobs (the service's does; over stdio a write indexes before it returns)."""

    engine: Engine
    settings: Settings
    runs_jobs: bool


def vault_of(ctx: Context) -> Vault:
    state = ctx.request_context.lifespan_context
    if not isinstance(state, Vault):  # pragma: no cover - the lifespan always yields one
        raise ToolError("the server is not ready; try again")
    return state


def http_request(ctx: Context) -> Request | None:
    request = ctx.request_context.request
    return request if isinstance(request, Request) else None


def principal_for(request: object) -> Principal:
    """The caller: the HTTP request's authenticated key, or the local user over stdio (no request)."""
    if not isinstance(request, Request):
        return STDIO
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # pragma: no cover - /mcp authenticates every request
        raise ToolError("this request carries no API key")
    return principal


def principal_of(ctx: Context) -> Principal:
    return principal_for(ctx.request_context.request)


async def charge(ctx: Context, group: str) -> None:
    """Over HTTP, charge the caller's `group` budget too (an answer costs what `/api/ask` costs)."""
    request = http_request(ctx)
    if request is not None:
        try:
            await enforce_rate_limit(request, Response(), principal_of(ctx), group)
        except Refused as e:
            raise ToolError(e.message) from None


async def blocking(fn: Callable[[], T]) -> T:
    """Library work off the event loop, its anticipated failures as ToolErrors that say what to do."""
    try:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    except ToolError:
        raise
    except Refused as e:  # the API's helpers (the note write path) refuse with a message for people
        raise ToolError(e.message) from None
    except (SearchError, PathRefused, ModelMismatchError, AnswerError) as e:
        raise ToolError(str(e)) from None
    except ConversationNotFound as e:
        raise ToolError(f"{e}; start a new conversation by sending another id, or none") from None
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ToolError(str(e)) from None
    except StoreError as e:
        log.error("mcp: the index cannot be used: %s", e)
        raise ToolError(str(e)) from None
    except ValueError as e:
        raise ToolError(str(e)) from None


# -- arguments, described for a model --------------------------------------------------------------

Query = Annotated[
    str,
    Field(
        min_length=1,
        max_length=QUERY_MAX_CHARS,
        description="What to look for, in your own words or the note's words; any text is safe.",
    ),
]
K = Annotated[
    int | None,
    Field(ge=1, le=K_MAX, description=f"How many results, 1 to {K_MAX}; default 10 (the server's search.k)."),
]
Mode = Annotated[
    Literal["hybrid", "keyword", "semantic"] | None,
    Field(
        description="hybrid (default: keywords and meaning together), keyword (exact words, names, "
        "codes) or semantic (meaning, other wording)."
    ),
]
Folder = Annotated[
    str | None,
    Field(
        max_length=1000,
        description="Only notes under this vault folder, e.g. 'Getting Started' (sub-folders included).",
    ),
]
Tag = Annotated[
    str | None,
    Field(max_length=200, description="Only notes with this tag, '#' optional; nested tags ('a/b') count."),
]
NoteRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="The note: its vault-relative path as search and list_notes give it "
        "('Folder/Note.md'), or its name as in a [[wikilink]] ('Note'). Never '..' or an absolute path.",
    ),
]
NotePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="Vault-relative path of the note, ending in .md ('Folder/Note.md'); folders are made "
        "as needed. Never '..', an absolute path, or .obsidian/, .trash/, .git/.",
    ),
]


# -- shaping results -----------------------------------------------------------------------------------


def _where(start: int | None, end: int | None, page: int | None) -> str | None:
    if page is not None:
        return f"page {page}"
    if start is not None:
        return f"lines {start}-{end}" if end is not None and end != start else f"line {start}"
    return None


def _hit(r: SearchResult) -> dict[str, Any]:
    return {
        "path": r.path,
        "title": r.title,
        "heading": " > ".join(r.heading_path) or None,
        "where": _where(r.start_line, r.end_line, r.page),
        "snippet": r.snippet,
        "score": r.score,
        "link": r.link,
        "kind": r.kind,
    }


def _answer(a: Answer) -> dict[str, Any]:
    return {
        "answer": a.text,
        "declined": a.declined,
        "mode": a.mode,
        "notice": a.notice,
        "citations": [
            {
                "n": c.n,
                "path": c.path,
                "title": c.title,
                "heading": " > ".join(c.heading_path) or None,
                "where": _where(c.start_line, c.end_line, c.page),
                "link": c.link,
                "snippet": c.snippet,
            }
            for c in a.citations
        ],
        "closest": a.closest,
        "conversation_id": a.conversation_id,
        "provider": a.provider,
        "model": a.model,
        "cached": a.cached,
    }


def _since(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"changed_since {text!r} is not a date; give an ISO 8601 date or time, e.g. 2024-05-01 or "
            "2024-05-01T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a date without a zone is the server's local time, as Obsidian shows it
    return when.timestamp()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def decode_cursor(cursor: str | None) -> str | None:
    """The path a cursor continues after; a cursor this server did not give is refused."""
    if not cursor:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise ToolError(
            "the cursor is not one this server gave; pass next_cursor from the previous page as it is, "
            "or leave it out to start at the first page"
        ) from None
    if not isinstance(after, str):
        raise ToolError("the cursor is not one this server gave; leave it out to start at the first page")
    return after


def page_of(
    engine: Engine, after: str | None, limit: int, **filters: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of indexed notes in path order and the cursor of the next (None on the last page)."""
    rows = engine.list_notes(after=after, limit=limit + 1, **filters)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["path"]) if more and rows else None


# -- the read tools --------------------------------------------------------------------------------


async def search(
    query: Query, ctx: Context, k: K = None, mode: Mode = None, folder: Folder = None, tag: Tag = None
) -> dict[str, Any]:
    """Search the Obsidian vault's notes (and indexed PDFs) by keywords and meaning together.

    Returns the best passages first: each with the note's `path`, `title`, the `heading` it sits under,
    `where` (line range, or PDF page), a `snippet`, a relevance `score` (higher is better; only
    comparable within one search) and an `obsidian://` `link` that opens the note at that heading. Use it
    to find which notes talk about something; then `read_note` for the whole note, or `ask` for an
    answer built from the notes with citations.
    """
    vault = vault_of(ctx)
    try:
        text = check_query(query)
    except SearchError as e:
        raise ToolError(str(e)) from None
    results = await blocking(lambda: vault.engine.search(text, k, mode, folder=folder, tag=tag))
    return {"query": text, "count": len(results), "results": [_hit(r) for r in results]}


async def ask(
    question: Annotated[
        str,
        Field(min_length=1, max_length=4000, description="The question, as you would ask a person."),
    ],
    ctx: Context,
    conversation_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            pattern=r"^[A-Za-z0-9._:-]+$",
            description="Continue (or start) this conversation, so a follow-up ('and for recurring "
            "ones?') is read with the questions before it; any id of letters, digits and . _ : -. "
            "Conversations belong to the caller.",
        ),
    ] = None,
    folder: Folder = None,
    tag: Tag = None,
) -> dict[str, Any]:
    """Answer a question from the vault's notes only, citing them.

    Returns `answer` (the text, with [n] markers), `citations` (n, path, title, heading, where, link,
    snippet: the passages the answer rests on) and `declined`: true when the notes do not cover the
    question, and then `answer` says so and `closest` names the nearest notes instead of guessing. Without
    a language model on the server (`mode` "extractive") the answer is the notes' own sentences.
    """
    vault = vault_of(ctx)
    principal = principal_of(ctx)
    await charge(ctx, "ask")
    engine = vault.engine

    def run() -> Answer:
        owner = keys.lineage_of(engine.store, principal.key_id) if principal.key_id else ""
        return engine.ask(question, conversation_id=conversation_id, owner=owner, folder=folder, tag=tag)

    return _answer(await blocking(run))


async def related(
    note: NoteRef,
    ctx: Context,
    k: Annotated[int, Field(ge=1, le=K_MAX, description=f"How many notes, 1 to {K_MAX}.")] = 10,
) -> dict[str, Any]:
    """Notes related to a note: the nearest by meaning, raised when one links to the other.

    Returns `path` (the note, resolved from a name) and `related`: path, title, `score` (higher is
    closer), `similarity` (meaning alone), `links_to` / `linked_from` and an `obsidian://` link.
    """
    engine = vault_of(ctx).engine

    def run() -> dict[str, Any]:
        path = engine.find_note(note)
        notes = engine.related(path, k)
        return {"path": path, "count": len(notes), "related": [n.to_dict() for n in notes]}

    return await blocking(run)


async def read_note(
    note: NoteRef,
    ctx: Context,
    offset: Annotated[
        int, Field(ge=0, description="Start at this character of the text, to read a long note in parts.")
    ] = 0,
    max_chars: Annotated[
        int,
        Field(ge=1, le=READ_MAX_CHARS, description=f"At most this many characters (1 to {READ_MAX_CHARS})."),
    ] = 20_000,
) -> dict[str, Any]:
    """Read one Markdown note of the vault: its text as it is now, and its frontmatter, title, aliases
    and tags.

    Only notes inside the vault can be read: '..', absolute paths and symlinks that lead out are refused.
    A long note comes in parts: when `next_offset` is set, call again with `offset` = `next_offset`.
    """
    vault = vault_of(ctx)
    engine = vault.engine

    def run() -> dict[str, Any]:
        note_ = engine.read_note(engine.find_note(note))
        text = note_.pop("text")
        part = text[offset : offset + max_chars]
        end = offset + len(part)
        return {
            **note_,
            "modified": _iso(note_["modified"]),
            "chars": len(text),
            "offset": offset,
            "next_offset": end if end < len(text) else None,
            "text": part,
        }

    return await blocking(run)


async def list_notes(
    ctx: Context,
    folder: Folder = None,
    tag: Tag = None,
    changed_since: Annotated[
        str | None,
        Field(
            max_length=40,
            description="Only notes modified at or after this ISO 8601 date or time ('2024-05-01', "
            "'2024-05-01T12:00:00Z'; without a zone, the server's local time).",
        ),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=LIST_LIMIT, description=f"Notes per page, 1 to {LIST_LIMIT}.")] = 50,
    cursor: Annotated[
        str | None,
        Field(max_length=4000, description="next_cursor of the previous page; leave out for the first page."),
    ] = None,
) -> dict[str, Any]:
    """List the vault's indexed notes in path order, page by page: path, title, kind, tags, modified
    (UTC) and size in bytes.

    Filter by folder, tag and modification time. When `next_cursor` is set there are more: call again
    with `cursor` = `next_cursor` (and the same filters).
    """
    engine = vault_of(ctx).engine
    after = decode_cursor(cursor)
    since = _since(changed_since)

    def run() -> dict[str, Any]:
        rows, next_cursor = page_of(engine, after, limit, folder=folder, tag=tag, changed_since=since)
        notes = [{**r, "modified": _iso(r["modified"])} for r in rows]
        return {"count": len(notes), "notes": notes, "next_cursor": next_cursor}

    return await blocking(run)


async def index_status(ctx: Context) -> dict[str, Any]:
    """What the index holds: how many notes (sources), chunks and vectors, failed files, the embedding
    model, the index generation (it grows with every change) and the version. Use it to tell an empty or
    stale index from a search that found nothing."""
    engine = vault_of(ctx).engine
    info = await blocking(engine.status)
    if not principal_of(ctx).allows("admin"):  # absolute paths are for the operator, as on /status
        info = {k: v for k, v in info.items() if k not in ("database", "vault")}
    return {**info, "vault_name": engine.vault_name}


READ_TOOLS: tuple[Callable[..., Any], ...] = (search, ask, related, read_note, list_notes, index_status)
