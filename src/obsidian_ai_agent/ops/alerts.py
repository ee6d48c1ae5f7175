"""What the front doors ask of the monitor: alerts (open, recent, one with its history), acknowledging,
the incident log as JSON or CSV, samples over a window, the monitor's own state, and test alerts."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import TYPE_CHECKING, Any

from ..store.monitoring import AlertRow, MonitorStore
from .channels import make_channels, send_test, test_notification

if TYPE_CHECKING:
    from ..engine import Engine

WINDOWS: dict[str, float] = {"1h": 3600.0, "1d": 86400.0, "30d": 30 * 86400.0}
# Graph points per window at most: a long window reads the thinned means.
MAX_POINTS = 2000
EXPORT_FIELDS = (
    "id", "rule", "severity", "state", "summary", "value", "threshold", "rollback", "started_at",
    "resolved_at", "duration_s", "notifications", "acked_by", "acked_at", "ack_note",
)  # fmt: skip


class AlertNotFound(LookupError):
    """No alert has that id."""


def _store(engine: Engine) -> MonitorStore:
    return MonitorStore(engine.store)


def open_alerts(engine: Engine) -> list[dict[str, Any]]:
    return [a.to_dict() for a in _store(engine).open_alerts()]


def overview(engine: Engine, hours: float = 24.0) -> dict[str, Any]:
    """Open alerts, and every alert started in the last `hours` (newest first)."""
    store = _store(engine)
    since = time.time() - hours * 3600
    return {
        "open": [a.to_dict() for a in store.open_alerts()],
        "recent": [a.to_dict() for a in store.alerts(since=since, limit=500)],
    }


def detail(engine: Engine, alert_id: int) -> dict[str, Any]:
    store = _store(engine)
    alert = store.alert(alert_id)
    if alert is None:
        raise AlertNotFound(f"no alert has id {alert_id}; `alerts list` shows them")
    return {**alert.to_dict(), "events": store.events(alert_id), "deliveries": store.deliveries(alert_id)}


def acknowledge(engine: Engine, alert_id: int, by: str, note: str = "") -> dict[str, Any]:
    alert = _store(engine).acknowledge(alert_id, by, note)
    if alert is None:
        raise AlertNotFound(f"no alert has id {alert_id}; `alerts list` shows them")
    return alert.to_dict()


def _row(a: AlertRow) -> dict[str, Any]:
    d = a.to_dict()
    d["duration_s"] = round((a.resolved_at or time.time()) - a.started_at, 1)
    return {k: d.get(k) for k in EXPORT_FIELDS}


def export(engine: Engine, since: float = 0.0, fmt: str = "json") -> str:
    """The incident log (every alert since `since`, oldest first) as JSON or CSV text."""
    rows = [_row(a) for a in reversed(_store(engine).alerts(since=since, limit=1_000_000))]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt != "json":
        raise ValueError(f"unknown format {fmt!r}; json or csv")
    return json.dumps(rows, indent=2, ensure_ascii=False)


def samples(engine: Engine, window: str = "1h") -> dict[str, Any]:
    """Samples over `window` (1h, 1d, 30d), oldest first, at most MAX_POINTS of them (evenly picked)."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; one of {', '.join(WINDOWS)}")
    since = time.time() - WINDOWS[window]
    rows = _store(engine).samples(since)
    if len(rows) > MAX_POINTS:
        step = len(rows) / MAX_POINTS
        rows = [rows[int(i * step)] for i in range(MAX_POINTS)]
    for r in rows:
        r.pop("component_messages", None)
    spacing = (rows[-1]["at"] - rows[0]["at"]) / (len(rows) - 1) if len(rows) > 1 else 0.0
    return {"window": window, "since": since, "resolution_s": round(spacing, 1), "samples": rows}


def status(engine: Engine) -> dict[str, Any]:
    """Whether the monitor runs, who holds it, its last sample, its rules and channels."""
    s = engine.settings.monitor
    store = _store(engine)
    lease = store.lease("monitor")
    latest = store.latest_sample()
    return {
        "enabled": s.enabled,
        "interval_s": s.interval_s,
        "holder": lease if lease and lease["expires_at"] > time.time() else None,
        "last_sample_at": latest["at"] if latest else None,
        "samples": {str(k): v for k, v in store.sample_counts().items()},
        "rules": [
            {
                "name": name,
                "metric": r.metric,
                "op": r.op,
                "threshold": r.threshold,
                "for_s": r.for_,
                "severity": r.severity,
                "rollback": r.rollback,
                "enabled": r.enabled,
            }
            for name, r in s.rules.items()
        ],
        "channels": [{"name": c.name, "type": c.type, "min_severity": c.min_severity} for c in s.channels],
    }


def test_alert(engine: Engine) -> list[dict[str, Any]]:
    """Send a test alert through every configured channel now; each channel's outcome."""
    from .monitor import dashboard_url, service_name

    channels = make_channels(engine.settings.monitor.channels, engine.settings.data_dir)
    return send_test(channels, test_notification(service_name(engine), dashboard_url(engine)))
