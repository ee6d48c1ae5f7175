"""The operator's dashboard at `/dashboard`: an HTML shell, a script and a style sheet from the package.

The shell holds no data: the page asks for the admin key in a sign-in form, keeps it in the tab's
`sessionStorage` and sends it as `X-API-Key` on every call to the admin API (never in a URL). It shows
health and components, open alerts (with acknowledge), graphs of the monitor's samples, jobs (progress,
ETA, cancel, stage profile) and per-route latency with the slow requests, and refreshes itself.

Graphs are drawn by uPlot 1.6.32 (MIT, vendored from the `uplot` npm package: `dist/uPlot.iife.min.js`
and `dist/uPlot.min.css`, its LICENSE beside them in `static/dashboard/vendor/uplot/`). It draws on a
canvas and sets styles through the CSSOM only, so the page runs under `DASHBOARD_CSP`: nothing inline,
nothing from another origin.
"""

from __future__ import annotations

import html
from pathlib import Path

from . import STATIC

UPLOT_VERSION = "1.6.32"
DASHBOARD_STATIC = "/dashboard/static"
DASHBOARD_DIR = STATIC / "dashboard"
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def assets() -> dict[str, tuple[Path, str]]:
    """Every file the page may load, by its path under `/dashboard/static/`, with its media type: a
    request for anything else is a 404 (no path from the client ever reaches the file system)."""
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(DASHBOARD_DIR.rglob("*")):
        if path.is_file():
            rel = path.relative_to(DASHBOARD_DIR).as_posix()
            found[rel] = (path, _TYPES.get(path.suffix, "text/plain; charset=utf-8"))
    return found


def dashboard_page(title: str, root_path: str = "") -> str:
    """The shell: structure only; `dashboard.js` fills it from the API. `root_path` is where the app is
    mounted behind a proxy (the page's links and calls start with it)."""
    base = html.escape(root_path.rstrip("/"))
    s = base + DASHBOARD_STATIC
    name = html.escape(title)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{name} - dashboard</title>
<link rel="icon" type="image/svg+xml" href="{s}/favicon.svg">
<link rel="stylesheet" href="{s}/vendor/uplot/uPlot.min.css">
<link rel="stylesheet" href="{s}/dashboard.css">
</head>
<body data-base="{base}">
<header class="top">
  <h1>{name} <span class="sub">operations</span></h1>
  <div class="top-status">
    <span id="overall" class="pill" data-state="unknown">signed out</span>
    <span id="updated" class="muted"></span>
    <button id="refresh" type="button" class="quiet" hidden>Refresh</button>
    <button id="signout" type="button" class="quiet" hidden>Sign out</button>
  </div>
</header>

<section id="signin" class="panel signin" aria-labelledby="signin-title">
  <h2 id="signin-title">Sign in</h2>
  <p class="muted">Enter an API key with the <code>admin</code> scope (a fresh install writes one to
  <code>admin.key</code> in the data directory). The key stays in this browser tab only and is sent in
  the <code>X-API-Key</code> header.</p>
  <form id="signin-form" method="post" autocomplete="off">
    <label for="signin-key">Admin API key</label>
    <div class="row">
      <input id="signin-key" type="password" autocomplete="off" spellcheck="false" required>
      <button id="signin-submit" type="submit">Sign in</button>
    </div>
    <p id="signin-error" class="error" role="alert"></p>
  </form>
</section>

<main id="app" hidden>
  <p id="banner" class="banner" role="status" hidden></p>

  <section id="health" class="panel" aria-labelledby="health-title">
    <h2 id="health-title">Health</h2>
    <p id="health-summary" class="muted">loading…</p>
    <div id="components" class="cards"></div>
    <dl id="system" class="figures"></dl>
    <p id="monitor-line" class="muted"></p>
  </section>

  <section id="alerts" class="panel" aria-labelledby="alerts-title">
    <h2 id="alerts-title">Alerts</h2>
    <p id="alerts-note" class="muted"></p>
    <div class="scroll"><table id="alerts-open" class="grid">
      <thead><tr><th>Severity</th><th>Alert</th><th>Since</th><th>Value</th><th>Acknowledged</th></tr></thead>
      <tbody></tbody>
    </table></div>
    <details id="alerts-recent-box">
      <summary>Recently resolved</summary>
      <div class="scroll"><table id="alerts-recent" class="grid">
        <thead><tr><th>Severity</th><th>Alert</th><th>Started</th><th>Resolved</th><th>Acknowledged</th></tr></thead>
        <tbody></tbody>
      </table></div>
    </details>
  </section>

  <section id="graphs" class="panel" aria-labelledby="graphs-title">
    <div class="panel-head">
      <h2 id="graphs-title">Graphs</h2>
      <div id="windows" class="segmented" role="group" aria-label="Time window">
        <button type="button" data-window="1h" aria-pressed="true">1 hour</button>
        <button type="button" data-window="1d" aria-pressed="false">1 day</button>
        <button type="button" data-window="30d" aria-pressed="false">30 days</button>
      </div>
    </div>
    <p id="graphs-note" class="muted"></p>
    <div class="charts">
      <figure class="chart" id="chart-requests"><figcaption>Requests per second</figcaption>
        <div class="plot"></div><p class="empty muted" hidden>no data in this window</p></figure>
      <figure class="chart" id="chart-errors"><figcaption>Error rate (5xx, %)</figcaption>
        <div class="plot"></div><p class="empty muted" hidden>no data in this window</p></figure>
      <figure class="chart" id="chart-latency"><figcaption>Latency p50 / p95 / p99 (ms)</figcaption>
        <div class="plot"></div><p class="empty muted" hidden>no data in this window</p></figure>
      <figure class="chart" id="chart-system"><figcaption>CPU, memory and disk (%)</figcaption>
        <div class="plot"></div><p class="empty muted" hidden>no data in this window</p></figure>
    </div>
  </section>

  <section id="jobs" class="panel" aria-labelledby="jobs-title">
    <h2 id="jobs-title">Jobs</h2>
    <p id="jobs-note" class="muted"></p>
    <div class="scroll"><table id="jobs-table" class="grid clickable">
      <thead><tr><th>Job</th><th>Kind</th><th>Status</th><th>Progress</th><th>ETA</th><th>Created</th>
      <th><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody></tbody>
    </table></div>
    <div id="job-profile" class="detail" hidden></div>
  </section>

  <section id="routes" class="panel" aria-labelledby="routes-title">
    <h2 id="routes-title">Routes</h2>
    <p id="routes-note" class="muted"></p>
    <div class="scroll"><table id="routes-table" class="grid clickable">
      <thead><tr><th>Route</th><th class="num">Requests</th><th class="num">5xx</th>
      <th class="num">Error rate</th><th class="num">p50</th><th class="num">p95</th>
      <th class="num">p99</th></tr></thead>
      <tbody></tbody>
    </table></div>
    <div id="route-detail" class="detail" hidden></div>
  </section>
</main>

<dialog id="ack-dialog" aria-labelledby="ack-title">
  <form id="ack-form" method="dialog">
    <h2 id="ack-title">Acknowledge alert</h2>
    <p id="ack-alert" class="muted"></p>
    <label for="ack-by">Your name</label>
    <input id="ack-by" type="text" maxlength="200" required autocomplete="name">
    <label for="ack-note">Note</label>
    <textarea id="ack-note" rows="3" maxlength="2000"></textarea>
    <p id="ack-error" class="error" role="alert"></p>
    <div class="row end">
      <button id="ack-cancel" type="button" class="quiet">Cancel</button>
      <button id="ack-submit" type="submit">Acknowledge</button>
    </div>
  </form>
</dialog>

<script src="{s}/vendor/uplot/uPlot.iife.min.js"></script>
<script src="{s}/dashboard.js"></script>
</body>
</html>
"""
