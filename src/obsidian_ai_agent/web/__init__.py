"""The pages the service serves itself, with every asset from the package (no CDN: they work offline).

`/docs` is Swagger UI 5 (vendored from the `swagger-ui-dist` npm package, Apache-2.0; its LICENSE and
NOTICE sit beside it in `static/swagger-ui/`), started by a small local script so that the page runs
under a Content-Security-Policy that allows nothing from elsewhere.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER_UI_VERSION = "5.35.0"
DOCS_STATIC = "/docs/static"
# Swagger UI sets inline styles and draws icons from data: URLs; scripts and fetches stay on this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def docs_page(title: str, openapi_url: str) -> str:
    s = DOCS_STATIC
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - API docs</title>
<link rel="stylesheet" href="{s}/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="{s}/swagger-ui/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{s}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{s}/docs/init.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """`GET /docs` and its assets under `/docs/static/`; build the app with `docs_url=None` and
    `redoc_url=None` (FastAPI's own pages load their scripts from a CDN)."""
    app.mount(DOCS_STATIC, StaticFiles(directory=STATIC), name="docs-static")
    page = docs_page(app.title, app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"})
