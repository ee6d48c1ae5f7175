"""Maintenance mode: while it is on, writes are refused with the operator's message (reads go on), the
monitor mutes its notifications and the public status page says "Maintenance".

The state is one row of the index's meta table (key `maintenance`, JSON `{"on", "message", "until",
"since", "by"}`), so every worker and every process of one data directory sees the same state: the CLI
turns it on, the service's workers refuse writes. Maintenance with an `until` that has passed ends by
itself. `MaintenanceCache` is what a worker's middleware reads: at most one meta read per second.

`public_status` is what the status page shows: maintenance first, then "degraded" while a critical alert
is open or the latest monitor sample says a component is down, else "operational"; never anything
internal (no rule, host, path, version or count).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..store import StoreError
from ..store.monitoring import MonitorStore

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("obsidian_ai_agent.ops")

META_KEY = "maintenance"
MESSAGE_MAX_CHARS = 500
DEFAULT_RETRY_AFTER = 300
"""Seconds a refused writer is told to wait when the maintenance names no end."""
CACHE_TTL = 1.0
MAX_AHEAD = 366 * 86400.0
"""An expected end further ahead than this is refused (a typo, most likely)."""
SAMPLE_FRESH_S = 300.0
"""A monitor sample older than this (or three monitor intervals, if longer) says nothing about now."""

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FORMS = (
    "an ISO 8601 time such as 2025-06-01T14:30 (local time unless it names a zone, e.g. +02:00 or Z) "
    "or a duration from now such as 90s, 30m, 2h or 1h30m"
)
_HOW = f"give {_FORMS}"


@dataclass(frozen=True)
class Maintenance:
    """Maintenance in effect: the operator's message, its expected end (unix time, None when open-ended),
    when it began and who turned it on."""

    message: str
    until: float | None
    since: float
    by: str

    def ended(self, now: float | None = None) -> bool:
        return self.until is not None and self.until <= (time.time() if now is None else now)

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the expected end (at least 1), else `DEFAULT_RETRY_AFTER`."""
        if self.until is None:
            return DEFAULT_RETRY_AFTER
        return max(1, math.ceil(self.until - (time.time() if now is None else now)))

    def to_dict(self) -> dict[str, Any]:
        return {"on": True, "message": self.message, "until": self.until, "since": self.since, "by": self.by}


OFF: dict[str, Any] = {"on": False, "message": None, "until": None, "since": None, "by": None}


def state_dict(m: Maintenance | None) -> dict[str, Any]:
    """The state as the API and `--json` show it: `{"on", "message", "until", "since", "by"}`."""
    return m.to_dict() if m is not None else dict(OFF)


def _stored(engine: Engine) -> Maintenance | None:
    """What the meta table holds, expired or not; None when off (or unreadable, which is logged)."""
    raw = engine.store.get_meta(META_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        if not data.get("on"):
            return None
        until = data.get("until")
        return Maintenance(
            message=str(data["message"]),
            until=None if until is None else float(until),
            since=float(data["since"]),
            by=str(data.get("by") or ""),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning(
            "the maintenance state in the index is not readable (%s); treating maintenance as off: "
            "run `obsidian-ai-agent maintenance off` (or `on` again) to rewrite it",
            e,
        )
        return None


def current(engine: Engine, now: float | None = None) -> Maintenance | None:
    """The maintenance in effect, or None when it is off or its expected end has passed."""
    m = _stored(engine)
    return None if m is None or m.ended(now) else m


def check_until(until: float, now: float | None = None) -> float:
    """`until` (unix time) when it lies ahead and within a year; ValueError saying what to give."""
    now = time.time() if now is None else now
    if not math.isfinite(until):
        raise ValueError(f"the expected end {until!r} is not a time; {_HOW}")
    if until <= now:
        raise ValueError(
            f"the expected end {_utc(until)} is in the past (it is now {_utc(now)}); "
            f"give a time still to come: {_FORMS}"
        )
    if until - now > MAX_AHEAD:
        raise ValueError(
            f"the expected end {_utc(until)} is more than a year ahead; give a nearer time, "
            "or leave the end out (maintenance then lasts until `maintenance off`)"
        )
    return until


def _utc(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(ts)


def parse_until(text: str | float | None, now: float | None = None) -> float | None:
    """When maintenance is expected to end, as unix time: from an ISO 8601 time (naive means local time)
    or a duration from now (`90s`, `30m`, `2h`, `1d`, `1h30m`); a number is taken as unix time. None or
    an empty text means no expected end. ValueError, saying what to give, for a time in the past, more
    than a year ahead, or text that is neither."""
    now = time.time() if now is None else now
    if text is None:
        return None
    if isinstance(text, bool):
        raise ValueError(f"the expected end {text!r} is not a time; {_HOW}")
    if isinstance(text, int | float):
        try:
            return check_until(float(text), now)
        except OverflowError:
            raise ValueError(f"the expected end {text!r} is not a time; {_HOW}") from None
    cleaned = text.strip()
    if not cleaned:
        return None
    compact = re.sub(r"\s+", "", cleaned).lower()
    if _DURATION.fullmatch(compact):
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(compact))
        if seconds <= 0:
            raise ValueError(f"the duration {cleaned!r} is zero; {_HOW}")
        return check_until(now + seconds, now)
    try:
        when = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{cleaned!r} is neither a time nor a duration; {_HOW}") from None
    try:
        if when.tzinfo is None:
            when = when.astimezone()  # a naive time is the local time of this machine
        until = when.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{cleaned!r} is outside the times this server can use; {_HOW}") from None
    return check_until(until, now)


def turn_on(
    engine: Engine, message: str, until: float | None, by: str, now: float | None = None
) -> Maintenance:
    """Put the data directory in maintenance with `message` (shown verbatim to every refused writer and
    on the status page) until `until` (unix time, None: until turned off). Turning it on again replaces
    the message and the end and keeps when it began. ValueError for a blank or too long message or an
    end not ahead."""
    now = time.time() if now is None else now
    if not isinstance(message, str) or not message.strip():
        raise ValueError(
            "give a message: what users should read while writes are refused, "
            "e.g. 'Upgrading the index, back by 15:00'"
        )
    if len(message) > MESSAGE_MAX_CHARS:
        raise ValueError(
            f"the message is {len(message)} characters; keep it to {MESSAGE_MAX_CHARS} "
            "(the status page shows it whole)"
        )
    if until is not None:
        check_until(until, now)
    before = current(engine, now)
    m = Maintenance(message=message, until=until, since=before.since if before else now, by=by)
    engine.store.set_meta(META_KEY, json.dumps(m.to_dict(), ensure_ascii=False))
    log.info(
        "maintenance on (by %s, until %s): writes answer 503", by, _utc(until) if until else "turned off"
    )
    return m


def turn_off(engine: Engine) -> bool:
    """End maintenance; True when it was in effect (False: it was off already, or had ended by itself)."""
    was = current(engine) is not None
    if engine.store.get_meta(META_KEY) is not None:
        engine.store.set_meta(META_KEY, json.dumps({"on": False}))
    if was:
        log.info("maintenance off: writes are accepted again")
    return was


class MaintenanceCache:
    """A worker's view of the maintenance state, read from the store at most once per `ttl` seconds, so
    a write request costs at most one meta read per second per worker; an end that passes is seen at
    once. `clear()` makes the next `get` read (this process just changed the state)."""

    def __init__(self, ttl: float = CACHE_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._value: Maintenance | None = None
        self._read_at: float | None = None
        self.reads = 0
        """How many times the store was read (for tests and figures)."""

    def stale(self) -> bool:
        """Whether the next `get` reads the store."""
        with self._lock:
            return self._read_at is None or self.clock() - self._read_at >= self.ttl

    def get(self, engine: Engine) -> Maintenance | None:
        with self._lock:
            if self._read_at is None or self.clock() - self._read_at >= self.ttl:
                try:
                    self._value = _stored(engine)
                except (StoreError, sqlite3.Error) as e:
                    # Writes would fail anyway on a store that cannot be read; do not refuse them here.
                    log.error("cannot read the maintenance state (%s); treating maintenance as off", e)
                    self._value = None
                self._read_at = self.clock()
                self.reads += 1
            value = self._value
        return None if value is None or value.ended() else value

    def clear(self) -> None:
        with self._lock:
            self._read_at = None


# -- the public status ----------------------------------------------------------------------------

Status = Literal["operational", "maintenance", "degraded"]
DEGRADED_MESSAGE = "Some parts of the service are not working as they should. We are working on it."


@dataclass(frozen=True)
class PublicStatus:
    """What anyone may know: the state, the maintenance message and expected end, when it was read."""

    status: Status
    message: str | None
    until: float | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "until": self.until,
            "updated_at": self.updated_at,
        }


def _degraded(engine: Engine, now: float) -> bool:
    monitor = MonitorStore(engine.store)
    if any(a.severity == "critical" for a in monitor.open_alerts()):
        return True
    sample = monitor.latest_sample()
    if not sample:
        return False
    fresh = max(SAMPLE_FRESH_S, 3 * float(engine.settings.monitor.interval_s))
    if now - float(sample.get("at") or 0.0) > fresh:
        return False
    worst = sample.get("component_worst")
    return isinstance(worst, int | float) and worst >= 2


def public_status(engine: Engine, now: float | None = None) -> PublicStatus:
    """The status page's state. A store that cannot be read is itself a degraded service."""
    now = time.time() if now is None else now
    try:
        m = current(engine, now)
        if m is not None:
            return PublicStatus("maintenance", m.message, m.until, now)
        degraded = _degraded(engine, now)
    except (StoreError, sqlite3.Error) as e:
        log.error("the status page cannot read the index (%s); it says degraded", e)
        degraded = True
    if degraded:
        return PublicStatus("degraded", DEGRADED_MESSAGE, None, now)
    return PublicStatus("operational", None, None, now)
