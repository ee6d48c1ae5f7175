"""Indexing as jobs: POST /reindex (admin), /api/index_pdf and /api/index_web (write).

Each route checks its input, queues a job in its lane (the job runner of the service runs it) and answers
202 with the job's id and where to follow it (`GET /api/jobs/{id}`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from .. import jobs
from ..engine import Engine
from ..security.paths import PDF_SUFFIXES, PathRefused, vault_path
from ..security.ssrf import UrlRefused, check_url
from .bodies import RequestBody
from .deps import EngineDep, SettingsDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse, loads_json

router = APIRouter(tags=["index"], responses=ERROR_RESPONSES)

PDF_MAGIC = b"%PDF"
_COPY_CHUNK = 1 << 20


def _errors(**described: str) -> dict[int | str, dict[str, Any]]:
    return {int(s): {"model": ErrorResponse, "description": d} for s, d in described.items()}


NO_VAULT = "409"
VAULT_ERRORS = _errors(**{NO_VAULT: "The server has no vault configured (or it is not the index's)"})


class JobAccepted(BaseModel):
    """A queued (or, with `wait`, finished) job."""

    job_id: int
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    kind: str
    lane: str
    links: dict[str, str] = Field(description="`job`: where to follow the job (GET, admin scope).")
    path: str | None = Field(default=None, description="The vault-relative file the job indexes.")
    url: str | None = Field(default=None, description="The page the job fetches (index_web).")
    result: dict[str, Any] | None = Field(default=None, description="The job's result, once finished.")
    error: str | None = None


def accepted(engine: Engine, job_id: int, **extra: Any) -> dict[str, Any]:
    job = engine.jobs.get(job_id)
    if job is None:  # pragma: no cover - a job row is never deleted while its request runs
        raise ApiError(500, f"job {job_id} vanished after it was queued")
    return {
        "job_id": job.id,
        "status": job.status,
        "kind": job.kind,
        "lane": job.lane,
        "links": {"job": f"/api/jobs/{job.id}"},
        "result": job.result,
        "error": job.error,
        **extra,
    }


def vault_of(engine: Engine) -> Path:
    """The vault this server writes to: `settings.vault`, else the vault the index holds (blocking)."""
    held = engine.store.get_meta("vault_root")
    chosen = engine.settings.vault or (Path(held) if held else None)
    if chosen is None:
        raise ApiError(
            409,
            "this server has no vault configured; set `vault` in config.yaml (or OAA_VAULT) "
            "to the vault folder, or index one first with `obsidian-ai-agent index <vault>`",
            code="no_vault",
        )
    try:
        return engine.vault_root(chosen)
    except FileNotFoundError as e:
        raise ApiError(409, str(e), code="no_vault") from None
    except ValueError as e:
        raise ApiError(409, str(e), code="vault_mismatch") from None


def write_atomic(root: Path, target: Path, source: BinaryIO | bytes, mode: int = 0o644) -> None:
    """Write `source` to `target` inside `root` through a temp file in the same folder and `os.replace`:
    a reader (Obsidian, the indexer) sees the old file or the new one, never half of one."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ApiError(409, f"a file is in the way of the folder {target.parent.name!r}") from None
    if not target.parent.resolve().is_relative_to(root.resolve()):  # a symlink slipped in meanwhile
        raise ApiError(400, "the folder resolves outside the vault (through a symlink)")
    if target.exists():
        mode = target.stat().st_mode & 0o777
    # Cut by bytes, not characters: 80 CJK characters are 240 bytes, and a name is at most 255 bytes.
    stem = target.name.encode("utf-8")[:100].decode("utf-8", "ignore")
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(source, bytes):
                f.write(source)
            else:
                while chunk := source.read(_COPY_CHUNK):
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- reindex ------------------------------------------------------------------------------------------


class ReindexRequest(RequestBody):
    full: bool = Field(
        default=False,
        description="Re-read and hash every file instead of trusting unchanged size and modification time.",
    )


async def _reindex(engine: Engine, body: ReindexRequest | None) -> dict[str, Any]:
    full = bool(body and body.full)

    def submit() -> dict[str, Any]:
        root = vault_of(engine)
        return accepted(engine, jobs.submit_reindex(engine, root, full=full))

    return await run_sync(submit)


@router.post(
    "/reindex",
    status_code=202,
    response_model=JobAccepted,
    responses=VAULT_ERRORS,
    dependencies=[require("admin")],
)
async def reindex(engine: EngineDep, body: ReindexRequest | None = None) -> dict[str, Any]:
    """Start a reindex of the vault (the same as `/api/reindex`)."""
    return await _reindex(engine, body)


@router.post(
    "/api/reindex",
    status_code=202,
    response_model=JobAccepted,
    responses=VAULT_ERRORS,
    dependencies=[require("admin")],
)
async def api_reindex(engine: EngineDep, body: ReindexRequest | None = None) -> dict[str, Any]:
    """Start an incremental (or, with `full`, a full) reindex of the vault as a job in the `bulk` lane; an
    unfinished reindex (one cut off by a restart, say) is resumed instead of starting another."""
    return await _reindex(engine, body)


# -- PDFs ---------------------------------------------------------------------------------------------


class PdfPathRequest(RequestBody):
    path: str = Field(min_length=1, max_length=1024, description="A vault-relative PDF, e.g. 'Papers/x.pdf'.")


PDF_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The PDF."},
                        "folder": {
                            "type": "string",
                            "description": "Vault folder to store it in (default: server.upload_folder).",
                        },
                    },
                }
            },
            "application/json": {"schema": PdfPathRequest.model_json_schema()},
        },
    }
}
PDF_ERRORS = _errors(
    **{
        "400": "Not a usable file or path (the message says what to change)",
        "404": "No such PDF in the vault",
        NO_VAULT: "The server has no vault configured",
        "415": "Not a PDF, or neither multipart/form-data nor JSON",
    }
)


def upload_name(filename: str | None) -> str:
    """The file name to store an upload under: the last part of what the client sent, ending in `.pdf`."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", ".."):
        name = "upload.pdf"
    return name if name.lower().endswith(".pdf") else name + ".pdf"


def _not_pdf(what: str) -> ApiError:
    return ApiError(
        415,
        f"{what} is not a PDF (it does not start with %PDF); send a PDF file, or convert the document first",
        code="not_a_pdf",
    )


@router.post(
    "/api/index_pdf",
    status_code=202,
    response_model=JobAccepted,
    responses=PDF_ERRORS,
    openapi_extra=PDF_BODY,
    dependencies=[require("write")],
)
async def index_pdf(request: Request, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    """Index a PDF: upload it (multipart field `file`, optional `folder`; stored in the vault under
    `server.upload_folder` unless `folder` is given), or name one already in the vault (JSON `{path}`).
    Answers 202 with the job that indexes it."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _upload_pdf(
            request, engine, settings.server.max_upload_bytes, settings.server.upload_folder
        )
    if ctype == "application/json":
        data = loads_json(await request.body(), '{"path": "Folder/file.pdf"}')
        try:
            body = PdfPathRequest.model_validate(data)
        except ValidationError as e:
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
            ) from None
        return await _vault_pdf(engine, body.path)
    raise ApiError(
        415,
        'send the PDF as multipart/form-data (field `file`), or JSON {"path": ...} naming a PDF in the vault',
    )


async def _upload_pdf(request: Request, engine: Engine, limit: int, default_folder: str) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(
            400,
            "no file in the upload; send the PDF as a file in the multipart field `file` (with a file name)",
        )
    folder = form.get("folder")
    if folder is not None and not isinstance(folder, str):
        raise ApiError(400, "`folder` must be a text field naming a vault folder, e.g. 'Papers'")
    folder = (folder if folder is not None and folder.strip() else default_folder).strip().rstrip("/")
    rel = f"{folder}/{upload_name(upload.filename)}" if folder else upload_name(upload.filename)
    size = upload.size
    if size is not None and size > limit:
        raise ApiError(
            413,
            f"the PDF is larger ({size} bytes) than this server accepts ({limit} bytes, max_upload_bytes)",
        )
    file = upload.file

    def store() -> dict[str, Any]:
        root = vault_of(engine)
        s = engine.settings
        try:
            target = vault_path(root, rel, PDF_SUFFIXES, include=s.include, exclude=s.exclude)
        except PathRefused as e:
            raise ApiError(400, f"cannot store the upload as '{rel}': {e}", code="bad_path") from None
        file.seek(0)
        head = file.read(len(PDF_MAGIC))
        if not head:
            raise ApiError(400, "the uploaded file is empty; send the PDF's bytes in the field `file`")
        if head != PDF_MAGIC:
            raise _not_pdf("the uploaded file")
        file.seek(0, os.SEEK_END)
        if file.tell() > limit:
            raise ApiError(
                413, f"the PDF is larger than this server accepts ({limit} bytes, max_upload_bytes)"
            )
        file.seek(0)
        try:
            write_atomic(root, target.path, file)
        except OSError as e:
            raise ApiError(500, f"could not store '{target.rel}': {e.strerror or e}") from None
        job_id = jobs.submit(
            engine, "index_pdf", {"vault": str(root), "paths": [target.rel], "uploaded": True}
        )
        return accepted(engine, job_id, path=target.rel)

    try:
        return await run_sync(store)
    finally:
        await upload.close()


async def _vault_pdf(engine: Engine, path: str) -> dict[str, Any]:
    def submit() -> dict[str, Any]:
        root = vault_of(engine)
        s = engine.settings
        try:
            target = vault_path(root, path, PDF_SUFFIXES, include=s.include, exclude=s.exclude)
        except PathRefused as e:
            raise ApiError(400, str(e), code="bad_path") from None
        if not target.path.is_file():
            raise ApiError(404, f"no file '{target.rel}' in the vault; give a vault-relative path to a PDF")
        with target.path.open("rb") as f:
            if f.read(len(PDF_MAGIC)) != PDF_MAGIC:
                raise _not_pdf(f"'{target.rel}'")
        job_id = jobs.submit(engine, "index_pdf", {"vault": str(root), "paths": [target.rel]})
        return accepted(engine, job_id, path=target.rel)

    return await run_sync(submit)


# -- web pages ----------------------------------------------------------------------------------------


class WebRequest(RequestBody):
    url: str = Field(min_length=1, max_length=2048, description="An http:// or https:// page.")


WEB_ERRORS = _errors(**{"400": "The URL is refused by the URL guard (the message says why)"})


@router.post(
    "/api/index_web",
    status_code=202,
    response_model=JobAccepted,
    responses=WEB_ERRORS,
    dependencies=[require("write")],
)
async def index_web(body: WebRequest, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    """Index a web page: a job in the `web` lane fetches it (`server.fetch_timeout`, size cap, redirects
    checked hop by hop), extracts its main text and indexes it as a `web` source named by its URL.
    Loopback, private, link-local and other non-public addresses are refused unless the server sets
    `server.allow_private_urls`; URLs with credentials or other schemes always are."""
    allow = settings.server.allow_private_urls

    def submit() -> dict[str, Any]:
        try:
            checked = check_url(body.url, allow_private=allow)
        except UrlRefused as e:
            raise ApiError(400, str(e), code="url_refused") from None
        job_id = jobs.submit(engine, "index_web", {"url": checked.url}, dedupe_key=f"web:{checked.url}")
        return accepted(engine, job_id, url=checked.url)

    return await run_sync(submit)
