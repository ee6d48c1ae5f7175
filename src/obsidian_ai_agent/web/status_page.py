"""The public status page (`GET /status-page`): Operational, Maintenance (with the operator's message and
the expected end) or Degraded, rendered on the server. No script, nothing from elsewhere: one stylesheet
from the package, and a refresh every minute. It says nothing internal (no rule, host, path, version or
count): what it shows is only the `PublicStatus` given to it.
"""

from __future__ import annotations

import datetime as dt
import html

from . import DOCS_STATIC

STYLESHEET = f"{DOCS_STATIC}/status/status.css"
REFRESH_S = 60
STATUS_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)

_LABEL = {"operational": "Operational", "maintenance": "Maintenance", "degraded": "Degraded"}
_SUMMARY = {
    "operational": "Everything is working normally.",
    "maintenance": "The service is under maintenance: searching and reading go on, changes are paused.",
    "degraded": "Some parts of the service are not working as they should. We are working on it.",
}


def utc_text(ts: float) -> str:
    """`2025-06-01 14:30 UTC` (to the second when it is not on a whole minute)."""
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if when.second else "%Y-%m-%d %H:%M UTC")


def utc_iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative(seconds: float) -> str:
    """`in 45 s`, `in 20 min`, `in 1 h 20 min`, `in 3 days` (or `... ago` for a time gone by)."""
    ahead = seconds >= 0
    s = abs(round(seconds))
    if s < 60:
        text = f"{s} s"
    elif s < 3600:
        text = f"{round(s / 60)} min"
    elif s < 2 * 86400:
        h, m = divmod(round(s / 60), 60)
        text = f"{h} h {m} min" if m else f"{h} h"
    else:
        text = f"{round(s / 86400)} days"
    return f"in {text}" if ahead else f"{text} ago"


def _time(ts: float) -> str:
    return f'<time datetime="{utc_iso(ts)}">{html.escape(utc_text(ts))}</time>'


def render(status: str, message: str | None, until: float | None, updated_at: float) -> str:
    """The page for one state; `message` (the operator's, for maintenance) is shown verbatim, escaped."""
    label = _LABEL.get(status, "Unknown")
    parts = [f'<p class="summary">{html.escape(_SUMMARY.get(status, ""))}</p>']
    if status == "maintenance":
        if message:
            # Escaped, and its line breaks kept without relying on the stylesheet.
            lines = "<br>\n".join(html.escape(line) for line in message.splitlines())
            parts.append(f'<blockquote class="message"><p>{lines}</p></blockquote>')
        if until is not None:
            parts.append(
                f'<p class="until">Expected back: {_time(until)} '
                f"({html.escape(relative(until - updated_at))}).</p>"
            )
        else:
            parts.append('<p class="until">No end time has been announced yet.</p>')
    body = "\n".join(parts)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="robots" content="noindex">
<title>{label} - Service status</title>
<link rel="stylesheet" href="{STYLESHEET}">
</head>
<body class="state-{html.escape(status)}">
<main>
<h1>Service status</h1>
<section class="state" aria-live="polite">
<h2><span class="dot" aria-hidden="true"></span>{label}</h2>
{body}
</section>
<footer>
<p>Last updated {_time(updated_at)}. This page refreshes every minute.</p>
</footer>
</main>
</body>
</html>
"""
