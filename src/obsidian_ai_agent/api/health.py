"""Health: `/health` (liveness), `/status` (readiness), `/api/health/detailed` (every component checked
for real) and `/api/config` (the effective settings, secrets redacted)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .. import __version__
from ..ops import alerts
from ..ops.checks import CHECKS, RANK, State, run_checks
from ..security.auth import ALL_SCOPES
from ..store import StoreError
from .alerts import Alert
from .deps import EngineDep, SettingsDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse

log = logging.getLogger("obsidian_ai_agent.api")

router = APIRouter(tags=["health"])


def uptime(request: Request) -> float:
    return round(time.time() - float(request.app.state.started), 1)


# -- liveness -------------------------------------------------------------------------------------


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    uptime_s: float = Field(description="Seconds since this worker started.")


@router.get("/health", response_model=Liveness)
async def health(request: Request) -> Liveness:
    """Liveness: answers from memory, needs no key, touches neither the disk nor the index."""
    return Liveness(version=__version__, uptime_s=uptime(request))


# -- readiness ------------------------------------------------------------------------------------


def vault_fingerprint(path: str) -> str:
    """SHA-256 (hex) of a vault folder's path, spelled the same way on every system (the plugin hashes
    its own folder the same way)."""
    p = path.replace("\\", "/").rstrip("/") or "/"
    if re.match(r"[A-Za-z]:", p):
        p = p.lower()
    return hashlib.sha256(p.encode()).hexdigest()


class IndexFigures(BaseModel):
    sources: int
    chunks: int
    vectors: int
    failed: int = Field(description="Sources that could not be indexed (see `index` errors).")
    generation: int = Field(description="Moves on with every change to the index.")
    schema_version: int
    vault: str | None = Field(description="The vault folder this index holds (shown to admin keys only).")
    vault_id: str | None = Field(
        description="SHA-256 (hex) of that folder's path (with `/` for `\\`, no trailing `/`, lower case "
        "after a drive letter), shown to every key: a client on the same machine compares it with the hash "
        "of its own vault folder to tell whether the server reads that folder itself, without being told "
        "where the folder is."
    )


class KeyFigures(BaseModel):
    auth: bool = Field(description="Whether this server asks for keys (`server.auth.enabled`).")
    name: str = Field(description="The name of the key this request presented ('anonymous' without auth).")
    scopes: list[str] = Field(description="What that key may do: read, write, admin (admin implies all).")


class EmbeddingFigures(BaseModel):
    model: str | None = Field(description="The model the index was built with.")
    dimension: int | None
    configured: str = Field(description="The model the settings name (`embedding.model`).")
    provider: str


class Warmup(BaseModel):
    ready: bool = Field(description="The embedding model and the vector matrix are loaded: search is fast.")
    seconds: float | None = Field(description="How long the warm-up at start took.")
    error: str | None = Field(description="Why the warm-up failed (the first search loads what it needs).")


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    uptime_s: float
    index: IndexFigures
    embedding: EmbeddingFigures
    llm_provider: str
    database: str | None = Field(description="The index database file (shown to admin keys only).")
    queue: dict[str, int] = Field(description="Jobs by status.")
    job_runner: bool = Field(description="Whether this worker runs queued jobs.")
    warm: Warmup = Field(description="Whether the model and vectors were loaded before serving.")
    key: KeyFigures = Field(
        description="The key this request presented: its name and scopes (never its secret)."
    )


@router.get(
    "/status",
    response_model=Readiness,
    dependencies=[require("read")],
    responses={**ERROR_RESPONSES, 503: {"model": ErrorResponse, "description": "The index cannot be read"}},
)
async def status(request: Request, engine: EngineDep) -> Readiness:
    """Readiness: version, uptime, index counts, embedding model, database and job queue; 503 when the
    index database cannot be read."""

    def read() -> tuple[dict[str, Any], dict[str, int]]:
        return engine.status(), engine.jobs.counts()

    try:
        info, queue = await run_sync(read)
    except (sqlite3.Error, StoreError) as e:
        log.error("status: the index database cannot be read: %s", e)
        raise ApiError(
            503,
            f"the index database {engine.store.location} cannot be read ({e}); check the file and disk, "
            "or restore a backup",
            code="unavailable",
        ) from e
    s = engine.settings
    # Absolute paths tell a caller how the server is laid out: only admin keys see them.
    principal = getattr(request.state, "principal", None)
    admin = principal is None or principal.allows("admin")
    vault = info["vault"]
    return Readiness(
        version=info["version"],
        uptime_s=uptime(request),
        index=IndexFigures(
            sources=info["sources"],
            chunks=info["chunks"],
            vectors=info["vectors"],
            failed=info["failed"],
            generation=info["index_generation"],
            schema_version=info["schema_version"],
            vault=vault if admin else None,
            vault_id=vault_fingerprint(vault) if vault else None,
        ),
        embedding=EmbeddingFigures(
            model=info["embedding_model"],
            dimension=info["embedding_dimension"],
            configured=s.embedding.model,
            provider=s.embedding.provider,
        ),
        llm_provider=s.llm.provider,
        database=info["database"] if admin else None,
        queue=queue,
        job_runner=getattr(request.app.state, "runner", None) is not None,
        warm=Warmup(**getattr(request.app.state, "warmup", {"ready": False, "seconds": None, "error": None})),
        key=KeyFigures(
            auth=s.server.auth.enabled,
            name=principal.name if principal is not None else "anonymous",
            scopes=sorted(principal.scopes if principal is not None else ALL_SCOPES),
        ),
    )


# -- detailed health ------------------------------------------------------------------------------


class Component(BaseModel):
    state: State
    latency_ms: float = Field(description="How long the check took.")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class SystemFigures(BaseModel):
    cpu_percent: float
    cpu_count: int | None
    load_average: list[float]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_percent: float
    process_rss_bytes: int
    process_threads: int
    disk_path: str
    disk_total_bytes: int
    disk_free_bytes: int
    disk_used_percent: float


class DetailedHealth(BaseModel):
    status: State = Field(
        description="The worst component; a language model that is down only degrades the service "
        "(answers fall back to extracts) unless `llm.on_error` is `fail`."
    )
    version: str
    uptime_s: float
    checked_at: float
    components: dict[str, Component]
    system: SystemFigures
    alerts: list[Alert] = Field(default_factory=list, description="Alerts firing now (the monitor's).")


def system_figures(data_dir: Path) -> SystemFigures:
    import psutil

    mem = psutil.virtual_memory()
    proc = psutil.Process()
    disk = shutil.disk_usage(data_dir)
    return SystemFigures(
        cpu_percent=psutil.cpu_percent(interval=0.1),
        cpu_count=psutil.cpu_count(),
        load_average=[round(x, 2) for x in os.getloadavg()],
        memory_total_bytes=mem.total,
        memory_available_bytes=mem.available,
        memory_percent=mem.percent,
        process_rss_bytes=proc.memory_info().rss,
        process_threads=proc.num_threads(),
        disk_path=str(data_dir),
        disk_total_bytes=disk.total,
        disk_free_bytes=disk.free,
        disk_used_percent=round(100 * disk.used / disk.total, 1) if disk.total else 0.0,
    )


def overall(components: dict[str, Component], llm_critical: bool) -> State:
    """The worst state; a down LLM only degrades the service when answers fall back to extracts."""
    states: list[State] = []
    for name, c in components.items():
        states.append("degraded" if name == "llm" and c.state == "down" and not llm_critical else c.state)
    return max(states, key=lambda s: RANK[s], default="ok")


@router.get(
    "/api/health/detailed",
    response_model=DetailedHealth,
    dependencies=[require("admin")],
    responses=ERROR_RESPONSES,
)
async def detailed(request: Request, engine: EngineDep) -> DetailedHealth:
    """Every component checked for real, side by side: the database (a fresh connection, a query and an
    integrity check), vector search (a kNN on the live matrix), the embedding model (a probe text), the
    language model (its server's `/models`, or its file), and free disk space; plus CPU, memory and disk
    figures. Always 200: the states are in the body."""
    checks: list[dict[str, dict[str, Any]]] = []
    figures: list[SystemFigures] = []

    async def components() -> None:  # every check side by side, each bounded (ops.checks.run_checks)
        checks.append(await run_sync(lambda: run_checks(engine)))

    async def system() -> None:
        figures.append(await run_sync(lambda: system_figures(engine.settings.data_dir)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(components)
        tg.start_soon(system)
    ordered = {name: Component(**checks[0][name]) for name in CHECKS}
    return DetailedHealth(
        status=overall(ordered, engine.settings.llm.on_error == "fail"),
        version=__version__,
        uptime_s=uptime(request),
        checked_at=time.time(),
        components=ordered,
        system=figures[0],
        alerts=[Alert(**a) for a in await run_sync(lambda: alerts.open_alerts(engine))],
    )


# -- config ---------------------------------------------------------------------------------------


@router.get(
    "/api/config",
    response_model=dict[str, Any],
    dependencies=[require("admin")],
    responses=ERROR_RESPONSES,
)
async def config(settings: SettingsDep) -> dict[str, Any]:
    """The effective settings (defaults < config file < environment), every secret redacted."""
    return settings.redacted()
