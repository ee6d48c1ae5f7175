"""What the monitor keeps: samples (thinned with age), alerts with their history, the notification outbox,
and leases (one monitor per data directory)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .base import StoreError

if TYPE_CHECKING:
    from .base import IndexStore

# Sample resolutions, seconds: 0 is the monitor's own interval; older samples become 5-minute and then
# hourly means (see MonitorStore.thin).
RAW, FIVE_MIN, HOURLY = 0, 300, 3600


def m010_monitoring(db: sqlite3.Connection) -> None:
    """Schema for the monitor: samples, alerts, alert events, the notification outbox, leases."""
    db.execute(
        "CREATE TABLE monitor_samples ( at REAL NOT NULL, resolution INTEGER NOT NULL, figures TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX monitor_samples_at ON monitor_samples(resolution, at)")
    db.execute(
        "CREATE TABLE alerts ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " rule TEXT NOT NULL, severity TEXT NOT NULL, state TEXT NOT NULL,"
        " summary TEXT NOT NULL, value REAL, threshold REAL, rollback INTEGER NOT NULL DEFAULT 0,"
        " started_at REAL NOT NULL, updated_at REAL NOT NULL, resolved_at REAL,"
        " last_notified_at REAL, notifications INTEGER NOT NULL DEFAULT 0,"
        " acked_by TEXT, acked_at REAL, ack_note TEXT)"
    )
    # Deduplication: at most one open alert per rule and severity, whatever the number of processes.
    db.execute("CREATE UNIQUE INDEX alerts_open ON alerts(rule, severity) WHERE state = 'firing'")
    db.execute("CREATE INDEX alerts_started ON alerts(started_at)")
    db.execute(
        "CREATE TABLE alert_events ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL REFERENCES alerts(id),"
        " at REAL NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE INDEX alert_events_alert ON alert_events(alert_id, at)")
    db.execute(
        "CREATE TABLE alert_deliveries ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER, channel TEXT NOT NULL,"
        " event TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, delivered_at REAL,"
        " gave_up_at REAL, error TEXT)"
    )
    db.execute(
        "CREATE INDEX alert_deliveries_due ON alert_deliveries(next_at)"
        " WHERE delivered_at IS NULL AND gave_up_at IS NULL"
    )
    db.execute(
        "CREATE TABLE leases ("
        " name TEXT PRIMARY KEY, holder TEXT NOT NULL, acquired_at REAL NOT NULL, expires_at REAL NOT NULL)"
    )


@dataclass
class AlertRow:
    id: int
    rule: str
    severity: str
    state: str
    """`firing` or `resolved`."""
    summary: str
    value: float | None
    threshold: float | None
    rollback: bool
    started_at: float
    updated_at: float
    resolved_at: float | None
    last_notified_at: float | None
    notifications: int
    acked_by: str | None
    acked_at: float | None
    ack_note: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ALERT_COLUMNS = (
    "id, rule, severity, state, summary, value, threshold, rollback, started_at, updated_at, resolved_at,"
    " last_notified_at, notifications, acked_by, acked_at, ack_note"
)


def _alert(r: sqlite3.Row | tuple[Any, ...]) -> AlertRow:
    values = list(r)
    values[7] = bool(values[7])
    return AlertRow(*values)


_DELIVERY_COLUMNS = ("channel", "event", "created_at", "attempts", "delivered_at", "gave_up_at", "error")


@dataclass
class Delivery:
    id: int
    alert_id: int | None
    channel: str
    event: str
    payload: dict[str, Any]
    attempts: int


class MonitorStore:
    """Named operations on the monitor's tables of one index database."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    # -- leases -------------------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, seconds: float, now: float | None = None) -> bool:
        """Take or renew the lease `name` for `holder`: True when it holds it for `seconds` from now (it
        had it, nobody had it, or the last holder let it expire)."""
        now = time.time() if now is None else now
        with self.store._write() as db:
            row = db.execute("SELECT holder, expires_at FROM leases WHERE name=?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            acquired = now if row is None or row[0] != holder else None
            if acquired is None:
                db.execute("UPDATE leases SET expires_at=? WHERE name=?", (now + seconds, name))
            else:
                db.execute(
                    "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET holder=excluded.holder,"
                    " acquired_at=excluded.acquired_at, expires_at=excluded.expires_at",
                    (name, holder, acquired, now + seconds),
                )
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.store._write() as db:
            db.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))

    def lease(self, name: str) -> dict[str, Any] | None:
        rows = self.store._query("SELECT holder, acquired_at, expires_at FROM leases WHERE name=?", (name,))
        if not rows:
            return None
        return {"holder": rows[0][0], "acquired_at": rows[0][1], "expires_at": rows[0][2]}

    # -- samples ------------------------------------------------------------------------------------

    def add_sample(self, at: float, figures: dict[str, Any]) -> None:
        self.add_samples([(at, figures)])

    def add_samples(self, samples: list[tuple[float, dict[str, Any]]]) -> None:
        """Raw samples, (time, figures) each, in one transaction."""
        with self.store._write() as db:
            db.executemany(
                "INSERT INTO monitor_samples (at, resolution, figures) VALUES (?, ?, ?)",
                [(at, RAW, json.dumps(figures, sort_keys=True)) for at, figures in samples],
            )

    def samples(self, since: float, resolution: int | None = None, until: float | None = None) -> list[dict]:
        """Samples from `since` (oldest first), each its figures plus `at`; `resolution` None: every
        resolution, so a long window reads the thinned means where raw samples are gone."""
        until = time.time() + 1 if until is None else until
        if resolution is None:
            rows = self.store._query(
                "SELECT at, figures FROM monitor_samples WHERE at >= ? AND at <= ? ORDER BY at",
                (since, until),
            )
        else:
            rows = self.store._query(
                "SELECT at, figures FROM monitor_samples"
                " WHERE resolution=? AND at >= ? AND at <= ? ORDER BY at",
                (resolution, since, until),
            )
        return [{**json.loads(r[1]), "at": r[0]} for r in rows]

    def latest_sample(self) -> dict[str, Any] | None:
        rows = self.store._query(
            "SELECT at, figures FROM monitor_samples WHERE resolution=? ORDER BY at DESC LIMIT 1", (RAW,)
        )
        return {**json.loads(rows[0][1]), "at": rows[0][0]} if rows else None

    def sample_counts(self) -> dict[int, int]:
        rows = self.store._query("SELECT resolution, COUNT(*) AS n FROM monitor_samples GROUP BY resolution")
        return {int(r[0]): int(r[1]) for r in rows}

    def thin(self, now: float, retention_days: int) -> dict[str, int]:
        """Raw samples older than a day become 5-minute means, 5-minute means older than
        `retention_days` become hourly means, hourly means older than a year (or the retention, if
        longer) go; returns how many rows each step replaced."""
        day = 86400.0
        done = {"five_min": 0, "hourly": 0, "deleted": 0}
        with self.store._write() as db:
            done["five_min"] = _roll_up(db, RAW, FIVE_MIN, now - day)
            done["hourly"] = _roll_up(db, FIVE_MIN, HOURLY, now - retention_days * day)
            keep = max(365, retention_days) * day
            cur = db.execute(
                "DELETE FROM monitor_samples WHERE resolution=? AND at < ?", (HOURLY, now - keep)
            )
            done["deleted"] = cur.rowcount
        return done

    # -- alerts -------------------------------------------------------------------------------------

    def open_alert(self, rule: str, severity: str) -> AlertRow | None:
        rows = self.store._query(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule=? AND severity=? AND state='firing'",  # nosec B608
            (rule, severity),
        )
        return _alert(rows[0]) if rows else None

    def fire(
        self, rule: str, severity: str, summary: str, value: float | None, threshold: float, rollback: bool
    ) -> tuple[AlertRow, bool]:
        """The open alert of `rule` at `severity`, made now if there is none: (alert, made now). Writes are
        serial on every backend, and the partial unique index `alerts_open` turns a second writer's insert
        into nothing (`ON CONFLICT DO NOTHING`): two monitors never open two."""
        now = time.time()
        with self.store._write() as db:
            made_id = None
            row = self._firing(db, rule, severity)
            if row is None:
                made_id = db.execute(
                    "INSERT INTO alerts (rule, severity, state, summary, value, threshold, rollback,"
                    " started_at, updated_at) VALUES (?, ?, 'firing', ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (rule, severity) WHERE state = 'firing' DO NOTHING RETURNING id",
                    (rule, severity, summary, value, threshold, int(rollback), now, now),
                ).fetchone()
                if made_id is None:  # another writer opened it meanwhile
                    row = self._firing(db, rule, severity)
            if made_id is None:
                if row is None:
                    raise StoreError(f"alert {rule}/{severity} is neither open nor could it be opened")
                db.execute(
                    "UPDATE alerts SET value=?, summary=?, updated_at=? WHERE id=?",
                    (value, summary, now, row[0]),
                )
                return _alert(row), False
            alert_id = int(made_id[0])
            db.execute(
                "INSERT INTO alert_events (alert_id, at, event, detail) VALUES (?, ?, 'firing', ?)",
                (alert_id, now, summary),
            )
            made = db.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id=?", (alert_id,)).fetchone()  # nosec B608
        return _alert(made), True

    @staticmethod
    def _firing(db: Any, rule: str, severity: str) -> Any:
        return db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule=? AND severity=? AND state='firing'",  # nosec B608
            (rule, severity),
        ).fetchone()

    def resolve(self, alert_id: int, detail: str = "") -> AlertRow | None:
        """Mark a firing alert resolved (None when it was not firing)."""
        now = time.time()
        with self.store._write() as db:
            cur = db.execute(
                "UPDATE alerts SET state='resolved', resolved_at=?, updated_at=?"
                " WHERE id=? AND state='firing'",
                (now, now, alert_id),
            )
            if not cur.rowcount:
                return None
            db.execute(
                "INSERT INTO alert_events (alert_id, at, event, detail) VALUES (?, ?, 'resolved', ?)",
                (alert_id, now, detail),
            )
            row = db.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id=?", (alert_id,)).fetchone()  # nosec B608
        return _alert(row)

    def acknowledge(self, alert_id: int, by: str, note: str) -> AlertRow | None:
        """Record who acknowledged an alert, when, and their note (None: no such alert). An acknowledged
        alert is not repeated; it still resolves on its own."""
        now = time.time()
        with self.store._write() as db:
            cur = db.execute(
                "UPDATE alerts SET acked_by=?, acked_at=?, ack_note=?, updated_at=? WHERE id=?",
                (by, now, note, now, alert_id),
            )
            if not cur.rowcount:
                return None
            db.execute(
                "INSERT INTO alert_events (alert_id, at, event, detail) VALUES (?, ?, 'acknowledged', ?)",
                (alert_id, now, json.dumps({"by": by, "note": note})),
            )
            row = db.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id=?", (alert_id,)).fetchone()  # nosec B608
        return _alert(row)

    def notified(self, alert_id: int, when: float) -> None:
        with self.store._write() as db:
            db.execute(
                "UPDATE alerts SET last_notified_at=?, notifications=notifications+1 WHERE id=?",
                (when, alert_id),
            )

    def alert(self, alert_id: int) -> AlertRow | None:
        rows = self.store._query(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id=?", (alert_id,))  # nosec B608
        return _alert(rows[0]) if rows else None

    def open_alerts(self) -> list[AlertRow]:
        rows = self.store._query(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state='firing' ORDER BY started_at DESC"  # nosec B608
        )
        return [_alert(r) for r in rows]

    def alerts(self, since: float = 0.0, limit: int = 1000, state: str | None = None) -> list[AlertRow]:
        """Alerts started since `since`, newest first: the incident log."""
        where = "started_at >= ?"
        params: list[Any] = [since]
        if state is not None:
            where += " AND state=?"
            params.append(state)
        rows = self.store._query(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {where} ORDER BY started_at DESC, id DESC LIMIT ?",  # nosec B608
            (*params, limit),
        )
        return [_alert(r) for r in rows]

    def events(self, alert_id: int) -> list[dict[str, Any]]:
        rows = self.store._query(
            "SELECT at, event, detail FROM alert_events WHERE alert_id=? ORDER BY at, id", (alert_id,)
        )
        return [{"at": r[0], "event": r[1], "detail": r[2]} for r in rows]

    def add_event(self, alert_id: int, event: str, detail: str = "") -> None:
        with self.store._write() as db:
            db.execute(
                "INSERT INTO alert_events (alert_id, at, event, detail) VALUES (?, ?, ?, ?)",
                (alert_id, time.time(), event, detail),
            )

    # -- the notification outbox --------------------------------------------------------------------

    def queue_delivery(self, alert_id: int | None, channel: str, event: str, payload: dict[str, Any]) -> None:
        now = time.time()
        with self.store._write() as db:
            db.execute(
                "INSERT INTO alert_deliveries (alert_id, channel, event, payload, created_at, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, channel, event, json.dumps(payload), now, now),
            )

    def due_deliveries(self, now: float, limit: int = 100) -> list[Delivery]:
        rows = self.store._query(
            "SELECT id, alert_id, channel, event, payload, attempts FROM alert_deliveries"
            " WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_at <= ? ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        return [Delivery(int(r[0]), r[1], r[2], r[3], json.loads(r[4]), int(r[5])) for r in rows]

    def delivered(self, delivery_id: int) -> None:
        with self.store._write() as db:
            db.execute(
                "UPDATE alert_deliveries SET delivered_at=?, attempts=attempts+1, error=NULL WHERE id=?",
                (time.time(), delivery_id),
            )

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        """Record a failed attempt: tried again at `retry_at`, or given up when it is None."""
        now = time.time()
        with self.store._write() as db:
            if retry_at is None:
                db.execute(
                    "UPDATE alert_deliveries SET attempts=attempts+1, error=?, gave_up_at=? WHERE id=?",
                    (error, now, delivery_id),
                )
            else:
                db.execute(
                    "UPDATE alert_deliveries SET attempts=attempts+1, error=?, next_at=? WHERE id=?",
                    (error, retry_at, delivery_id),
                )

    def deliveries(self, alert_id: int) -> list[dict[str, Any]]:
        rows = self.store._query(
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM alert_deliveries WHERE alert_id=? ORDER BY id",  # nosec B608
            (alert_id,),
        )
        return [dict(zip(_DELIVERY_COLUMNS, r, strict=True)) for r in rows]


def _roll_up(db: Any, source: int, target: int, before: float) -> int:
    """Replace samples of resolution `source` older than `before` by one mean per `target` seconds:
    numbers are averaged, maxima of `*_max` figures kept, anything else taken from the last sample."""
    before = (before // target) * target  # whole buckets only: a bucket is merged once
    rows = db.execute(
        "SELECT at, figures FROM monitor_samples WHERE resolution=? AND at < ? ORDER BY at", (source, before)
    ).fetchall()
    if not rows:
        return 0
    buckets: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for at, figures in rows:
        buckets.setdefault(int(at // target), []).append((at, json.loads(figures)))
    merged = []
    for bucket, items in buckets.items():
        out: dict[str, Any] = {}
        keys = {k for _, f in items for k in f}
        for k in keys:
            values = [f[k] for _, f in items if k in f]
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if numbers and len(numbers) == len(values):
                out[k] = max(numbers) if k.endswith("_max") else round(sum(numbers) / len(numbers), 6)
            else:
                out[k] = values[-1]
        out["samples"] = sum(int(f.get("samples", 1)) for _, f in items)
        merged.append(((bucket + 0.5) * target, target, json.dumps(out, sort_keys=True)))
    cur = db.execute("DELETE FROM monitor_samples WHERE resolution=? AND at < ?", (source, before))
    removed = cur.rowcount
    db.executemany("INSERT INTO monitor_samples (at, resolution, figures) VALUES (?, ?, ?)", merged)
    return int(removed)
