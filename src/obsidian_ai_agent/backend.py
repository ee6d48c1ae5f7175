"""The HTTP service: `create_app(settings)` builds it; `uvicorn obsidian_ai_agent.backend:app` runs `app`.

Routes live in `api/`, one router per area, each calling the library the CLI calls. Around them, from the
outside in: CORS (preflight answered without auth), request id + security headers, logging and metrics,
body limit, request timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from . import __version__, observability
from .api import errors, routers
from .api.middleware import CORS, BodyLimit, BodyTimeout, RequestContext, Timeout
from .config import Settings, load_settings
from .embeddings import Embedder
from .engine import Engine
from .mcp import http as mcp_http
from .security import keys
from .security.errors import Refused
from .vectors import one_blas_thread
from .web import install_docs

log = logging.getLogger("obsidian_ai_agent.api")

UPLOAD_PATHS = ("/api/index_pdf",)
API_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "Accept")
# So that a client in a web page can speak MCP's streamable HTTP to /mcp.
MCP_HEADERS = ("Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID")


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """The app for `settings` (default: loaded from the environment and config file); `embedder` lets
    tests share one loaded model."""
    s = settings or load_settings()
    observability.setup_logging(s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        one_blas_thread()
        engine = Engine(s, embedder=embedder)
        app.state.engine = engine
        app.state.started = time.time()
        keys.ensure_admin_key(engine.store, s)
        # Warm before this worker takes requests (uvicorn serves once the lifespan has started), so the
        # first search does not wait ~9 s for the model; `/status` reports how it went.
        try:
            seconds = await anyio.to_thread.run_sync(engine.warm)
            app.state.warmup = {"ready": True, "seconds": round(seconds, 3), "error": None}
            log.info("warmed the embedding model and the vector matrix in %.1f s", seconds)
        except Exception as e:  # the service still starts: /status says why it is not ready
            log.error("warm-up failed: %s", e)
            app.state.warmup = {"ready": False, "seconds": None, "error": str(e)}
        runner = watcher = None
        if s.server.run_jobs:
            from .jobs import JobRunner

            runner = JobRunner(engine).start()
        if s.server.watch and s.vault:
            from .jobs.watch import Watcher

            watcher = Watcher(engine, s.vault, runner)
            threading.Thread(target=watcher.run, name="watch", daemon=True).start()
        app.state.runner = runner
        scheduler = None
        if s.backup.schedule and runner is not None:
            from .ops.backup import BackupScheduler

            scheduler = BackupScheduler(engine).start()
        monitor = None
        if s.monitor.enabled:
            from .observability.logs import log_path
            from .ops.monitor import Monitor

            metrics = observability.get_observer(app).metrics
            monitor = Monitor(engine, metrics.request_families, log_path(s)).start()
        app.state.monitor = monitor
        try:
            async with mcp_http.serving(app, s, engine):  # the MCP session manager, for /mcp
                yield
        finally:
            if monitor is not None:
                monitor.stop()
            if scheduler is not None:
                scheduler.stop()
            if watcher is not None:
                watcher.stop()
            if runner is not None:
                runner.stop()
            engine.close()

    app = FastAPI(
        title="Obsidian AI Agent",
        version=__version__,
        description="Search and answers over an Obsidian vault, from the notes only, with citations.",
        lifespan=lifespan,
        debug=s.server.debug,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: ours are served from the package.
        docs_url=None,
        redoc_url=None,
    )
    app.state.warmup = {"ready": False, "seconds": None, "error": "starting"}
    install_docs(app)
    app.state.settings = s
    app.state.started = time.time()
    errors.install(app)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return errors.error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    for router in routers:
        app.include_router(router)
    app.router.routes.append(mcp_http.ROUTE)  # streamable HTTP, behind the same keys and limits

    # Added inside-out: the last one added is the outermost.
    app.add_middleware(Timeout, seconds=s.server.request_timeout)
    app.add_middleware(
        BodyLimit,
        limit=s.server.max_body_bytes,
        upload_limit=s.server.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
    )
    app.add_middleware(BodyTimeout, seconds=s.server.body_timeout)
    observability.install(app, s)
    app.add_middleware(RequestContext)
    app.add_middleware(
        CORS,
        allow_origins=s.server.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=[*API_HEADERS, *MCP_HEADERS],
        expose_headers=[
            "Mcp-Session-Id",
            "X-Request-ID",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        max_age=600,
    )
    return app


def __getattr__(name: str) -> FastAPI:
    # `app` is built on first use, so importing this module (tests, the CLI) reads no settings.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
