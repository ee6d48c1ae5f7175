"""The writing tools, offered only with `mcp.write_tools` on and, over HTTP, only to write keys.

A note is written the way `PUT /api/notes/{path}` writes one, with the same helpers: the vault path
guard, an atomic write into the vault, and an `upsert_note` job that indexes it (run here before the tool
returns unless this process has a job runner and the caller does not wait).
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from .. import jobs
from ..api.index import accepted, write_atomic
from ..api.notes import guarded
from ..notes.markdown import decode
from ..security.paths import NOTE_SUFFIXES
from .tools import NotePath, Vault, blocking, charge, principal_of, vault_of

NOTE_MAX_BYTES = 1_048_576  # server.max_body_bytes' default: what PUT /api/notes takes in one request

Content = Annotated[
    str, Field(max_length=NOTE_MAX_BYTES, description="The note's Markdown, frontmatter included if any.")
]
Wait = Annotated[
    bool,
    Field(description="Return once the note is indexed, so search finds it at once (default true)."),
]


async def _writer(ctx: Context) -> Vault:
    """The vault, for a caller whose key holds the write scope (the listing hides these tools from any
    other; this refuses a call that names one anyway)."""
    principal = principal_of(ctx)
    if not principal.allows("write"):
        raise ToolError(
            f"this tool changes the vault and needs an API key with the write scope; the key "
            f"{principal.key_id!r} has: {', '.join(sorted(principal.scopes)) or 'no scope'}"
        )
    await charge(ctx, "write")
    return vault_of(ctx)


def _save(vault: Vault, path: str, content: bytes | None, addition: str | None, wait: bool) -> dict[str, Any]:
    engine = vault.engine
    root, target = guarded(engine, path, NOTE_SUFFIXES)
    existed = target.path.is_file()
    if addition is not None:
        if not existed:
            raise ToolError(f"no note '{target.rel}' in the vault to append to; create it with write_note")
        old, _ = decode(target.path.read_bytes())  # a note that is not UTF-8 is read as the indexer reads it
        sep = "" if not old or old.endswith("\n") else "\n"
        content = (old + sep + addition + ("" if addition.endswith("\n") else "\n")).encode("utf-8")
    assert content is not None
    if len(content) > NOTE_MAX_BYTES:
        raise ToolError(f"the note would be larger than {NOTE_MAX_BYTES} bytes; split it into several notes")
    if not (existed and target.path.read_bytes() == content):
        try:
            write_atomic(root, target.path, content)
        except OSError as e:
            raise ToolError(f"could not write '{target.rel}' ({e.strerror or e}); check the vault") from None
    job_id = jobs.submit_notes(engine, [target.rel], root)
    # Over stdio nothing else runs jobs; in the service the runner does, unless the caller waits.
    if not vault.runs_jobs or (wait and jobs.waitable(engine, job_id)):
        jobs.run(engine, job_id)
    job = accepted(engine, job_id, path=target.rel)
    return {
        "path": target.rel,
        "created": not existed,
        "job_id": job["job_id"],
        "status": job["status"],
        "indexed": job["status"] == "succeeded",
        "error": job["error"],
    }


async def write_note(path: NotePath, content: Content, ctx: Context, wait: Wait = True) -> dict[str, Any]:
    """Create a Markdown note in the vault, or replace the whole text of an existing one, and index it.

    Replacing loses the old text: to add to a note, use `append_to_note`; to change part of one,
    `read_note` first and write the whole new text. Returns the path, whether it was `created`, and the
    indexing job's `status` (`indexed` true once search finds the new text).
    """
    vault = await _writer(ctx)
    data = content.encode("utf-8")
    return await blocking(lambda: _save(vault, path, data, None, wait))


async def append_to_note(
    path: NotePath,
    text: Annotated[
        str,
        Field(min_length=1, max_length=NOTE_MAX_BYTES, description="Markdown to add at the end of the note."),
    ],
    ctx: Context,
    wait: Wait = True,
) -> dict[str, Any]:
    """Add Markdown at the end of an existing note (on a new line), and index it. The note must exist:
    create one with `write_note`."""
    vault = await _writer(ctx)
    return await blocking(lambda: _save(vault, path, None, text, wait))


WRITE_TOOLS = (write_note, append_to_note)
