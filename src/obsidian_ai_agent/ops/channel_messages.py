"""What the alert channels say: the one-line message, the email, the Slack payload and the plain JSON.

Everything here is pure formatting over a `Notification` (see ops/channels.py). The summary is the
operator's own text, sent verbatim; only Slack's mrkdwn needs escaping (&, < and >).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..monitoring_config import ROLLBACK

if TYPE_CHECKING:
    from .channels import Notification

# The colour bar of a Slack attachment: by severity while firing, green once resolved.
SLACK_COLOURS = {"critical": "#d40e0d", "warning": "#e8a317", "info": "#439fe0"}
SLACK_RESOLVED = "#2eb67d"
SLACK_TEST = "#9e9e9e"
_SECTION_MAX = 3000  # Slack: a section's text, at most 3000 characters
_FIELD_MAX = 2000  # Slack: each of a section's fields


def headline(n: Notification) -> str:
    """FIRING / STILL FIRING / RESOLVED / TEST, as the message starts."""
    return {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED", "test": "TEST"}[n.event]


def number(v: float | None) -> str:
    if v is None:
        return "-"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if abs(v) >= 0.001:
        return f"{v:.3f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def duration(seconds: float) -> str:
    """`45 s`, `5 min 12 s`, `3 h 5 min`, `2 d 4 h`."""
    s = max(0, round(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def lasted(n: Notification) -> str | None:
    """How long a resolved alert lasted, or how long a repeated one has been firing."""
    if n.event == "resolved" and n.resolved_at is not None:
        return duration(n.resolved_at - n.started_at)
    return None


def _needs_rollback_note(n: Notification) -> bool:
    return n.rollback and n.event != "resolved" and ROLLBACK not in n.summary.lower()


def one_line(summary: str) -> str:
    return " ".join(summary.split())


def message(n: Notification) -> str:
    """The human line: what happened, to what, and what to do about it."""
    if n.event == "test":
        return f"TEST: {one_line(n.summary)} ({n.service})"
    parts = [f"{headline(n)} [{n.severity}] {n.rule}: {one_line(n.summary)}"]
    if _needs_rollback_note(n):
        parts.append(ROLLBACK)
    if n.event == "resolved":
        took = lasted(n)
        parts.append(f"resolved after {took}" if took else "resolved")
    elif n.event == "repeat":
        parts.append(f"firing since {iso(n.started_at)}")
    if n.acknowledged_by:
        parts.append(f"acknowledged by {n.acknowledged_by}")
    line = " - ".join(parts) + f" ({n.service})"
    if n.dashboard_url:
        line += f" {n.dashboard_url}"
    return line


# --- email -------------------------------------------------------------------------------------------


def email_subject(n: Notification) -> str:
    summary = one_line(n.summary)
    if n.event == "resolved":
        return f"[RESOLVED] {summary}"
    if n.event == "test":
        return f"[TEST] {summary}"
    return f"[{n.severity.upper()}] {headline(n)}: {summary}"


def email_body(n: Notification) -> str:
    lines = [f"{headline(n)}: {n.summary}", ""]
    if n.event == "test":
        lines += [
            "This is a test notification: if you read it, this channel delivers alerts.",
            "",
            f"Service:    {n.service}",
        ]
    else:
        if n.rollback and n.event != "resolved":
            lines += ["Rollback recommended: this alert is a rollback criterion of the deployment.", ""]
        lines += [f"Rule:       {n.rule}", f"Severity:   {n.severity}"]
        if n.value is not None or n.threshold is not None:
            lines.append(f"Value:      {number(n.value)} (threshold {number(n.threshold)})")
        lines.append(f"Started:    {iso(n.started_at)}")
        if n.event == "resolved":
            when = iso(n.resolved_at) if n.resolved_at is not None else "now"
            took = lasted(n)
            lines.append(f"Resolved:   {when}" + (f" (lasted {took})" if took else ""))
        elif n.event == "repeat":
            lines.append("Still firing: this is a reminder; it repeats until resolved or acknowledged.")
        if n.acknowledged_by:
            lines.append(f"Acknowledged by: {n.acknowledged_by}")
        lines.append(f"Service:    {n.service}")
        if n.alert_id is not None:
            lines.append(f"Alert id:   {n.alert_id}")
    if n.dashboard_url:
        lines.append(f"Dashboard:  {n.dashboard_url}")
    lines += ["", "-- ", "Sent by the monitor of obsidian-ai-agent."]
    return "\n".join(lines) + "\n"


# --- Slack -------------------------------------------------------------------------------------------


def mrkdwn(text: str) -> str:
    """Slack's escaping for mrkdwn text: only &, < and > (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_date(ts: float) -> str:
    # Shown in each reader's time zone; the text after | is the fallback.
    return f"<!date^{int(ts)}^{{date_short_pretty}} at {{time_secs}}|{iso(ts)}>"


def _text(kind: str, text: str, limit: int) -> dict[str, str]:
    return {"type": kind, "text": _clip(text, limit)}


def slack_payload(n: Notification) -> dict[str, Any]:
    """An incoming-webhook payload: `text` (the notification's fallback), a headline block, and an
    attachment whose colour bar is the severity (green once resolved) holding the details."""
    head = headline(n)
    summary = mrkdwn(n.summary)
    if n.event == "test":
        title = f"*{head}* from {mrkdwn(n.service)}"
    else:
        title = f"*{head}* · {n.severity.upper()} · `{mrkdwn(n.rule)}`"
    top = f"{title}\n{summary}"
    if n.event != "resolved" and n.rollback:
        top += "\n:warning: *Rollback recommended.*"
    fields: list[dict[str, str]] = []
    if n.event == "test":
        fields.append(_text("mrkdwn", "If you read this, the channel delivers alerts.", _FIELD_MAX))
    else:
        if n.value is not None or n.threshold is not None:
            fields.append(_text("mrkdwn", f"*Value*\n{number(n.value)}", _FIELD_MAX))
            fields.append(_text("mrkdwn", f"*Threshold*\n{number(n.threshold)}", _FIELD_MAX))
        fields.append(_text("mrkdwn", f"*Started*\n{_slack_date(n.started_at)}", _FIELD_MAX))
        if n.event == "resolved":
            took = lasted(n)
            fields.append(_text("mrkdwn", f"*Lasted*\n{took or 'unknown'}", _FIELD_MAX))
        if n.acknowledged_by:
            fields.append(_text("mrkdwn", f"*Acknowledged by*\n{mrkdwn(n.acknowledged_by)}", _FIELD_MAX))
    details: list[dict[str, Any]] = [{"type": "section", "fields": fields[:10]}]
    context = [mrkdwn(n.service)]
    if n.alert_id is not None:
        context.append(f"alert {n.alert_id}")
    if n.dashboard_url:
        url = n.dashboard_url.replace("|", "%7C")
        context.append(f"<{mrkdwn(url)}|Open the dashboard>")
    details.append({"type": "context", "elements": [_text("mrkdwn", c, _SECTION_MAX) for c in context]})
    if n.event == "test":
        colour = SLACK_TEST
    elif n.event == "resolved":
        colour = SLACK_RESOLVED
    else:
        colour = SLACK_COLOURS.get(n.severity, SLACK_COLOURS["critical"])
    return {
        "text": _clip(mrkdwn(message(n)), _SECTION_MAX),
        "blocks": [{"type": "section", "text": _text("mrkdwn", top, _SECTION_MAX)}],
        "attachments": [{"color": colour, "blocks": details}],
    }


# What to do about Slack's error answers (https://api.slack.com/messaging/webhooks#handling_errors).
SLACK_HINTS = {
    "invalid_payload": "Slack refused the message's format (a bug: please report it)",
    "invalid_token": "the webhook was revoked or its URL is wrong; create a new incoming webhook",
    "no_service": "the webhook was revoked or its URL is wrong; create a new incoming webhook",
    "no_team": "the Slack workspace no longer exists; create a new incoming webhook",
    "channel_not_found": "the Slack channel is gone; create a new incoming webhook",
    "channel_is_archived": "the Slack channel is archived; unarchive it or create a new webhook",
    "action_prohibited": "a Slack admin restricted this webhook; ask them or create a new one",
    "posting_to_general_channel_denied": "only admins may post to this Slack channel; pick another",
}


# --- plain JSON (webhook, log) -----------------------------------------------------------------------


def webhook_payload(n: Notification) -> dict[str, Any]:
    return {"version": 1, "event": n.event, "alert": asdict(n), "message": message(n)}


def log_record(n: Notification, now: float) -> dict[str, Any]:
    at = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
    return {"at": at, **asdict(n), "message": message(n)}
