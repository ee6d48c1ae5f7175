"""PUT / DELETE /api/notes/{path} (write): the Obsidian plugin keeps a remote server's vault in sync.

A pushed note is written into the vault atomically and indexed as a job (`upsert_note`, the
`interactive` lane by default); `?wait=true` answers 200 once it is indexed. Every path passes the vault
path guard first.

A rename is a PUT of the new path with `?moved_from=<old path>`: the server moves the file within the
vault and indexes both paths in one job, so the indexer sees a move (the old file gone, the bytes under a
new name) and keeps the note's vectors even though its title, part of every embedded text, changed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, ValidationError
from starlette.convertors import PathConvertor, register_url_convertor

from .. import jobs
from ..engine import Engine
from ..security.paths import NOTE_SUFFIXES, SOURCE_SUFFIXES, PathRefused, VaultPath, vault_path
from .bodies import RequestBody
from .deps import EngineDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse, loads_json
from .index import JobAccepted, accepted, vault_of, write_atomic


class _AnyPath(PathConvertor):
    """Like `path`, but also matching line breaks, so that the guard (not a bare 404) refuses them."""

    regex = r"[\s\S]*"


register_url_convertor("notepath", _AnyPath())

router = APIRouter(tags=["notes"], responses=ERROR_RESPONSES)

TEXT_TYPES = ("text/markdown", "text/plain", "text/x-markdown")


class NoteContent(RequestBody):
    content: str


NOTE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The note's Markdown, as it is in Obsidian (UTF-8).",
        "content": {
            "text/markdown": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": NoteContent.model_json_schema()},
        },
    }
}


def _errors(**described: str) -> dict[int | str, dict[str, Any]]:
    return {int(s): {"model": ErrorResponse, "description": d} for s, d in described.items()}


PUT_ERRORS = _errors(
    **{
        "400": "The path (or `moved_from`) is refused by the vault path guard, or the body is not UTF-8 text",
        "404": "`moved_from` names a note that neither the vault nor the index has",
        "409": "The server has no vault configured, or a file is in the way of a folder",
        "415": "The body is neither Markdown/plain text nor JSON {content}",
        "422": "`moved_from` is the note's own path",
    }
)
DELETE_ERRORS = _errors(
    **{
        "400": "The path is refused by the vault path guard",
        "404": "Neither the vault nor the index has this note",
        "409": "The server has no vault configured",
    }
)
WAIT = Query(False, description="Answer 200 once the note is indexed (or removed) instead of 202 at once.")
MOVED_FROM = Query(
    None,
    description="The vault-relative path the note was renamed or moved from (Obsidian's rename). The "
    "server moves that file to `path` and indexes both in one job: the note keeps its vectors (the job's "
    "result says `moved: 1`) and the old path leaves the vault and the index. It passes the same path "
    "guard as `path`.",
)


class NoteAccepted(JobAccepted):
    """A pushed note's job; `moved_from` echoes a move the server made (absent: a plain write)."""

    moved_from: str | None = Field(default=None, description="The path the note was moved from.")


def guarded(
    engine: Engine, rel: str, suffixes: tuple[str, ...], field: str | None = None
) -> tuple[Path, VaultPath]:
    """The vault and the guarded file (blocking: resolves the vault and symlinks); `field` names the
    query parameter that sent `rel`, when it is not the route's path."""
    root = vault_of(engine)
    s = engine.settings
    try:
        return root, vault_path(root, rel, suffixes, include=s.include, exclude=s.exclude)
    except PathRefused as e:
        if field is None:
            raise ApiError(400, str(e), code="bad_path") from None
        details = [{"field": field, "message": str(e)}]
        raise ApiError(400, f"{field}: {e}", code="bad_path", details=details) from None


def _move_source(engine: Engine, moved_from: str, target: VaultPath) -> VaultPath:
    """The guarded note a move comes from: 422 when it is the target, 404 when nothing is there."""
    _, source = guarded(engine, moved_from, NOTE_SUFFIXES, field="moved_from")
    if source.rel == target.rel:
        message = f"moved_from is the note's own path '{target.rel}'; send a plain PUT to write it"
        raise ApiError(422, message, details=[{"field": "moved_from", "message": message}])
    present = source.path.is_file() or source.path.is_symlink()
    if not present and engine.store.source_by_path(source.rel) is None:
        raise ApiError(
            404,
            f"no note '{source.rel}' to move in the vault or the index; it may have been moved already: "
            "send a plain PUT of the note",
        )
    return source


def _move(root: Path, source: VaultPath, target: VaultPath) -> None:
    """Rename the note's file within the vault (atomic; bytes and modification time go with it). A
    symlink is not carried along: it is removed, and the note's text is written at the new path."""
    if not (source.path.is_file() or source.path.is_symlink()):
        return  # only the index has it: the job removes it there
    try:
        target.path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ApiError(409, f"a file is in the way of the folder {target.path.parent.name!r}") from None
    except OSError as e:
        raise _write_failed(target.rel, e) from None
    if not target.path.parent.resolve().is_relative_to(root.resolve()):  # a symlink slipped in meanwhile
        raise ApiError(400, "the folder resolves outside the vault (through a symlink)")
    try:
        if source.path.is_symlink():
            source.path.unlink()
        else:
            os.replace(source.path, target.path)
    except OSError as e:
        raise _write_failed(source.rel, e) from None


async def _content(request: Request) -> bytes:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await request.body()
    if ctype == "application/json":
        expected = '{"content": "<the note\'s Markdown>"}'
        data = loads_json(raw, expected)
        try:
            return NoteContent.model_validate(data).content.encode("utf-8")
        except (ValueError, ValidationError):
            raise ApiError(400, f"the JSON body must be {expected}") from None
    if ctype and ctype not in TEXT_TYPES:
        raise ApiError(
            415,
            f"a note is sent as text/markdown or text/plain (or JSON {{content}}), not {ctype}",
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the note is not UTF-8 text; send it encoded as UTF-8") from None
    return raw


def _write_failed(rel: str, e: OSError) -> ApiError:
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ApiError(
            503,
            f"the vault is not writable, so '{rel}' cannot be saved ({e.strerror}); "
            "check the vault's mount and permissions",
            code="vault_not_writable",
        )
    return ApiError(500, f"could not write '{rel}': {e.strerror or e}")


async def _finish(
    engine: Engine, job_id: int, wait: bool, response: Response, rel: str, **extra: Any
) -> dict[str, Any]:
    # A big note's job runs on a lane with more time than a request has: 202 with its id, not a 504.
    if wait and await run_sync(lambda: jobs.waitable(engine, job_id)):
        await run_sync(lambda: jobs.run(engine, job_id))
        response.status_code = 200
    return await run_sync(lambda: accepted(engine, job_id, path=rel, **extra))


@router.get("/api/notes/manifest", response_model=dict[str, str], dependencies=[require("write")])
async def notes_manifest(engine: EngineDep) -> dict[str, str]:
    """Every indexed note's path with the sha256 of its content: the Obsidian plugin fetches this once
    on start and pushes only the notes whose hash differs."""
    return await run_sync(engine.manifest)


@router.put(
    "/api/notes/{path:notepath}",
    status_code=202,
    response_model=NoteAccepted,
    responses={200: {"model": NoteAccepted, "description": "Indexed (with `wait=true`)"}, **PUT_ERRORS},
    openapi_extra=NOTE_BODY,
    dependencies=[require("write")],
)
async def put_note(
    path: str,
    request: Request,
    response: Response,
    engine: EngineDep,
    wait: bool = WAIT,
    moved_from: str | None = MOVED_FROM,
) -> dict[str, Any]:
    """Write a note (its Markdown is the body) into the vault at `path` and index it. The path is
    vault-relative ('Folder/Note.md'); `..`, absolute and drive paths, backslashes, `.obsidian/`,
    `.trash/`, `.git/` and files other than Markdown are refused.

    A renamed or moved note is sent with `moved_from` set to its old path: the file is moved, not
    written anew beside the old one, so the index keeps its vectors (nothing is embedded again when the
    text is unchanged, though the file name, the note's title, is new) and the old path is gone from the
    vault and the index once the job ran. A note edited as well as renamed is written over the moved
    file and indexed as a changed note (what changed, and under a new title every section, is
    embedded). A retried move whose first try went through answers 404: send a plain PUT."""
    content = await _content(request)

    def write() -> tuple[int, str | None]:
        root, target = guarded(engine, path, NOTE_SUFFIXES)
        source = _move_source(engine, moved_from, target) if moved_from is not None else None
        if source is not None:
            _move(root, source, target)
        unchanged = target.path.is_file() and target.path.read_bytes() == content
        if not unchanged:
            try:
                write_atomic(root, target.path, content)
            except OSError as e:
                raise _write_failed(target.rel, e) from None
        if source is None:
            return jobs.submit_notes(engine, [target.rel], root), None
        # One job for both paths: the new one is indexed first, as a move of the old one (gone now).
        return jobs.submit_notes(engine, [target.rel, source.rel], root), source.rel

    job_id, moved = await run_sync(write)
    extra = {"moved_from": moved} if moved is not None else {}
    return await _finish(engine, job_id, wait, response, path, **extra)


@router.delete(
    "/api/notes/{path:notepath}",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobAccepted, "description": "Removed (with `wait=true`)"}, **DELETE_ERRORS},
    dependencies=[require("write")],
)
async def delete_note(path: str, response: Response, engine: EngineDep, wait: bool = WAIT) -> dict[str, Any]:
    """Remove a note (or PDF) from the vault and from the index."""

    def remove() -> int:
        _, target = guarded(engine, path, SOURCE_SUFFIXES)
        present = target.path.is_file() or target.path.is_symlink()
        if not present and engine.store.source_by_path(target.rel) is None:
            raise ApiError(404, f"no note '{target.rel}' in the vault or the index")
        if present:
            try:
                target.path.unlink()
            except OSError as e:
                raise _write_failed(target.rel, e) from None
        return jobs.submit_delete(engine, [target.rel])

    job_id = await run_sync(remove)
    return await _finish(engine, job_id, wait, response, path)
