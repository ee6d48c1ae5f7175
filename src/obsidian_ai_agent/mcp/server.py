"""The MCP server: the SDK's `MCPServer` with our tools and note resources, and one middleware that
keeps each caller to its scopes and pages the resource list.

`serve_stdio` runs it for a desktop client that started `obsidian-ai-agent mcp`; the service mounts it at
`/mcp` (`http.py`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, Resource, ToolAnnotations

from .. import __version__
from ..config import Settings
from ..engine import Engine
from .tools import READ_TOOLS, Vault, blocking, decode_cursor, page_of, principal_for, vault_of

log = logging.getLogger(__name__)

NAME = "obsidian-ai-agent"
NOTE_SCHEME = "obsidian-note://"
RESOURCES_PER_PAGE = 100
# One failed field in pydantic's ValidationError text: its location line, then the message and `[type=...`.
_VALIDATION = re.compile(r"^(?P<field>[^\s].*)\n  (?P<message>.+?)(?: \[type=[^\]]*\])?$", re.MULTILINE)

INSTRUCTIONS = (
    "Tools over the user's Obsidian vault, from a private index of its notes. To find where something "
    "is written, `search` (keywords and meaning together); to answer a question from the notes with "
    "citations, `ask` (it says so when the notes do not cover it, instead of guessing); to read a whole "
    "note, `read_note` with the path a search gave; `related` for notes near one note; `list_notes` to "
    "browse by folder, tag or date; `index_status` to see what the index holds. Cite notes by their "
    "`link` (obsidian://) so the user can open them. Notes are also resources: obsidian-note://<path>."
)

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
TITLES = {
    "search": "Search the notes",
    "ask": "Answer from the notes",
    "related": "Related notes",
    "read_note": "Read a note",
    "list_notes": "List notes",
    "index_status": "Index status",
    "write_note": "Write a note",
    "append_to_note": "Append to a note",
}


def note_uri(path: str) -> str:
    return NOTE_SCHEME + quote(path, safe="/")


class Scopes:
    """Server middleware: `tools/list` shows a caller only the tools its key may use (no writing tool
    without the write scope), an unknown tool's error names the tools there are, and `resources/list`
    is answered page by page from the index (the SDK's own list has no cursor)."""

    def __init__(self, write_tools: frozenset[str]) -> None:
        self.write_tools = write_tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method == "tools/list" and not principal_for(ctx.request).allows("write"):
            result["tools"] = [t for t in result.get("tools", []) if t.get("name") not in self.write_tools]
        elif ctx.method == "tools/call" and result.get("isError"):
            self._explain(ctx, result)
        elif ctx.method == "resources/list":
            result.update(await self._resources(ctx))
        return result

    def _explain(self, ctx: ServerRequestContext[Any, Any], result: dict[str, Any]) -> None:
        """An unknown tool's error names the tools there are; arguments that fail the input schema are
        said field by field, without pydantic's internals."""
        content = result.get("content") or []
        text = content[0].get("text", "") if content and isinstance(content[0], dict) else ""
        name = (ctx.params or {}).get("name")
        if text.startswith("Unknown tool"):
            known = [n for n in TITLES if n not in self.write_tools]
            if self.write_tools and principal_for(ctx.request).allows("write"):
                known += sorted(self.write_tools)
            content[0]["text"] = f"unknown tool {name!r}; the tools here are: {', '.join(known)}"
        elif " validation error" in text and "Arguments" in text:
            problems = [f"{m['field']}: {m['message']}" for m in _VALIDATION.finditer(text)]
            if problems:
                content[0]["text"] = (
                    f"the arguments of {name!r} are not valid: {'; '.join(problems)}. "
                    "Send them as the tool's inputSchema describes."
                )

    async def _resources(self, ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
        vault = ctx.lifespan_context
        if not isinstance(vault, Vault):  # pragma: no cover - the lifespan always yields one
            return {}
        try:
            after = decode_cursor((ctx.params or {}).get("cursor"))
        except ToolError as e:
            raise MCPError(code=INVALID_PARAMS, message=str(e)) from None
        rows, next_cursor = await anyio.to_thread.run_sync(
            lambda: page_of(vault.engine, after, RESOURCES_PER_PAGE, kind="note")
        )
        resources = [
            Resource(
                uri=note_uri(r["path"]),
                name=r["path"],
                title=r["title"],
                mime_type="text/markdown",
                size=r["size"],
            ).model_dump(by_alias=True, mode="json", exclude_none=True)
            for r in rows
        ]
        return {"resources": resources, **({"nextCursor": next_cursor} if next_cursor else {})}


async def note_resource(path: str, ctx: Context) -> str:
    """A Markdown note of the vault, by its vault-relative path."""
    engine = vault_of(ctx).engine
    try:
        note = await blocking(lambda: engine.read_note(path))
    except ToolError as e:
        missing = str(e).startswith("no note")
        raise (ResourceNotFoundError if missing else ResourceError)(str(e)) from None
    return str(note["text"])


def build_server(
    settings: Settings, open_vault: Callable[[], AbstractAsyncContextManager[Vault]]
) -> MCPServer:
    """The server with every tool the settings allow; `open_vault` is entered once for its lifetime (the
    whole stdio session, or the service's lifespan) and gives the tools their engine."""
    write = settings.mcp.write_tools
    tools: list[Callable[..., Any]] = list(READ_TOOLS)
    write_names: frozenset[str] = frozenset()
    if write:
        from .writes import WRITE_TOOLS

        tools += WRITE_TOOLS
        write_names = frozenset(t.__name__ for t in WRITE_TOOLS)
    server: MCPServer = MCPServer(
        NAME,
        title="Obsidian AI Agent",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lambda _server: open_vault(),
        middleware=[Scopes(write_names)],
        warn_on_duplicate_tools=False,
    )
    for fn in tools:
        writes = fn.__name__ in write_names
        annotations = (
            ToolAnnotations(
                read_only_hint=False,
                destructive_hint=fn.__name__ == "write_note",
                idempotent_hint=fn.__name__ == "write_note",
                open_world_hint=False,
            )
            if writes
            else READ_ONLY
        )
        server.add_tool(fn, title=TITLES[fn.__name__], annotations=annotations, structured_output=True)
    server.resource(
        NOTE_SCHEME + "{+path}",
        name="note",
        title="A note of the vault",
        description="A Markdown note, by its vault-relative path (percent-encoded), e.g. "
        "obsidian-note://Getting%20Started/Dates.md",
        mime_type="text/markdown",
    )(note_resource)
    return server


async def serve_stdio(engine: Engine) -> None:
    """Serve one client over stdin/stdout until it closes them; only protocol goes to stdout."""

    def warm() -> None:
        try:
            seconds = engine.warm()
            log.info("warmed the embedding model and the vector matrix in %.1f s", seconds)
        except Exception as e:  # the tools report what is wrong when they are called
            log.warning("warm-up failed: %s", e)

    @asynccontextmanager
    async def open_vault() -> AsyncIterator[Vault]:
        # Here stdout is already the SDK's (anything printed goes to stderr): load the model meanwhile,
        # so the handshake is not kept waiting and the first search is not either (~9 s cold).
        threading.Thread(target=warm, name="mcp-warm", daemon=True).start()
        yield Vault(engine, engine.settings, runs_jobs=False)

    server = build_server(engine.settings, open_vault)
    log.info("serving MCP over stdio for %s", engine.store.location)
    await server.run_stdio_async()
