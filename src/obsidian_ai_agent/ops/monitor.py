"""The monitor: one per data directory, however many workers or processes start.

Every worker runs a `Monitor` thread; each interval it tries to take (or renew) the `monitor` lease in the
store. The holder samples the host and the service, stores the sample, evaluates the rules over the stored
samples, opens and resolves alerts, and queues their notifications in the store's outbox; the others only
wait. A holder that dies stops renewing, and another process takes over once the lease expires.

Notifications are sent from a small pool of threads, so a channel that hangs never holds up sampling; a
failed delivery stays in the outbox and is retried with doubling waits, then given up (and logged) after
`monitor.retry_max` attempts. The alert itself is never lost: it is in the store.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..store.monitoring import AlertRow, MonitorStore
from . import maintenance
from .channels import Channel, ChannelError, Notification, make_channels
from .rules import evaluate, steady_growth, still_firing
from .sampling import Families, Sampler

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("obsidian_ai_agent.monitor")

LEASE = "monitor"
THIN_EVERY = 3600.0
BACKOFF_MAX = 3600.0


def service_name(engine: Engine) -> str:
    s = engine.settings
    return f"obsidian-ai-agent {__version__} on {socket.gethostname()}:{s.server.port}"


def dashboard_url(engine: Engine) -> str | None:
    url = engine.settings.monitor.public_url
    return url.rstrip("/") + "/dashboard" if url else None


def notification(engine: Engine, alert: AlertRow, event: str) -> Notification:
    return Notification(
        event=event,  # type: ignore[arg-type]
        alert_id=alert.id,
        rule=alert.rule,
        severity=alert.severity,
        summary=alert.summary,
        value=alert.value,
        threshold=alert.threshold,
        started_at=alert.started_at,
        resolved_at=alert.resolved_at,
        rollback=alert.rollback,
        service=service_name(engine),
        dashboard_url=dashboard_url(engine),
        acknowledged_by=alert.acked_by,
    )


class Monitor:
    """Samples, rules, alerts and notifications for one data directory (see the module docstring)."""

    def __init__(
        self, engine: Engine, families: Families | None = None, log_file: Path | None = None
    ) -> None:
        self.engine = engine
        self.settings = engine.settings.monitor
        self.store = MonitorStore(engine.store)
        self.families = families
        self.log_file = log_file
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.channels: dict[str, Channel] = {
            c.name: c for c in make_channels(self.settings.channels, engine.settings.data_dir)
        }
        self._sampler: Sampler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._senders = ThreadPoolExecutor(2, thread_name_prefix="alert-send")
        self._sending: dict[int, Future[None]] = {}
        self._thinned = 0.0
        self.holding = False
        self._rules = self.settings.active_rules()
        # How far back a cycle reads samples: the leak window, or the longest `for` / `keep_firing_for`
        # plus the no-data allowance, with a few intervals to spare.
        longest = max((max(r.for_, r.keep_firing_for) for r in self._rules.values()), default=0.0)
        s = self.settings
        self._reach = max(s.leak_window_s, longest + s.no_data_s + 3 * s.interval_s)

    # -- the loop -----------------------------------------------------------------------------------

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._senders.shutdown(wait=False, cancel_futures=True)
        if self.holding:
            try:
                self.store.release_lease(LEASE, self.holder)
            except Exception:  # the store may be closing too: the lease then expires by itself
                log.debug("could not release the monitor lease", exc_info=True)

    def _run(self) -> None:
        interval = self.settings.interval_s
        # The first sample one interval after start: the worker warms up and takes requests first.
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.tick()
            except Exception:  # one bad cycle must not end monitoring
                log.exception("monitor cycle failed")
            next_at += interval
            if next_at < time.monotonic():  # fell behind (a slow check): start again from now
                next_at = time.monotonic()

    def tick(self) -> bool:
        """One cycle: take or renew the lease; when held, sample, evaluate and notify. True when held."""
        held = self.store.take_lease(LEASE, self.holder, self.settings.lease_seconds)
        if held and not self.holding:
            log.info("this process now runs the monitor (%s)", self.holder)
            # A monitor that takes over starts its request figures afresh.
            self._sampler = Sampler(self.engine, self.families, self.log_file)
        self.holding = held
        if not held:
            return False
        now = time.time()
        assert self._sampler is not None
        figures = self._sampler.sample()
        # One read of the stored samples serves the leak figure and every rule.
        history = self.store.samples(now - self._reach, 0)
        figures["rss_growth_mb_per_hour"] = self._leak(now, figures.get("rss_mb"), history)
        self.store.add_sample(now, figures)
        self.evaluate(now, [*history, {**figures, "at": now}])
        self.deliver(now)
        if now - self._thinned >= THIN_EVERY:
            self._thinned = now
            self.store.thin(now, self.settings.retention_days)
            prune_logs(self.engine, now)
        return True

    def _leak(self, now: float, rss: float | None, history: list[dict[str, Any]]) -> float:
        window = self.settings.leak_window_s
        points = [(s["at"], s["rss_mb"]) for s in history if s["at"] >= now - window and s.get("rss_mb")]
        if rss is not None:
            points.append((now, rss))
        return steady_growth(points, window)

    # -- rules and alerts ---------------------------------------------------------------------------

    def evaluate(self, now: float, samples: list[dict[str, Any]]) -> None:
        """Fire, repeat and resolve alerts by the rules over `samples` (oldest first, the newest last)."""
        no_data = self.settings.no_data_s
        muted = maintenance.current(self.engine) is not None
        open_now = {(a.rule, a.severity): a for a in self.store.open_alerts()}
        seen: set[tuple[str, str]] = set()
        for name, rule in self._rules.items():
            verdict = evaluate(name, rule, samples, now, no_data)
            seen.add((name, rule.severity))
            open_alert = open_now.get((name, rule.severity))
            if verdict.holds:
                alert, made = self.store.fire(
                    name, rule.severity, verdict.summary, verdict.value, rule.threshold, rule.rollback
                )
                if made:
                    log.warning("alert %s (%s) firing: %s", name, rule.severity, verdict.summary)
                quiet = muted and rule.mute_in_maintenance
                if quiet and made:
                    self.store.add_event(alert.id, "muted", "maintenance mode is on")
                if not quiet and self._due(alert, now):
                    self._queue(alert, "firing" if alert.last_notified_at is None else "repeat")
            elif open_alert is not None and not still_firing(rule, samples, now, no_data):
                self._resolve(open_alert, "the condition no longer holds", muted and rule.mute_in_maintenance)
        for key, alert in open_now.items():
            if key not in seen:  # its rule was removed or disabled
                self._resolve(alert, "the rule is no longer configured", muted)

    def _due(self, alert: AlertRow, now: float) -> bool:
        if alert.last_notified_at is None:
            return True
        if alert.acked_at is not None:  # a person is on it: no repeats
            return False
        return now - alert.last_notified_at >= self.settings.repeat_interval_s

    def _resolve(self, alert: AlertRow, why: str, quiet: bool) -> None:
        resolved = self.store.resolve(alert.id, why)
        if resolved is None:
            return
        log.info("alert %s (%s) resolved: %s", alert.rule, alert.severity, why)
        if resolved.last_notified_at is not None and not quiet:
            self._queue(resolved, "resolved")

    def _queue(self, alert: AlertRow, event: str) -> None:
        note = notification(self.engine, alert, event)
        for channel in self.channels.values():
            if channel.wants(note):
                self.store.queue_delivery(alert.id, channel.name, event, asdict(note))
        if event != "resolved":
            self.store.notified(alert.id, time.time())

    # -- delivery -----------------------------------------------------------------------------------

    def deliver(self, now: float) -> None:
        """Hand every due delivery to a sender thread (one at a time per delivery)."""
        for done in [i for i, f in self._sending.items() if f.done()]:
            del self._sending[done]
        for d in self.store.due_deliveries(now):
            if d.id in self._sending:
                continue
            channel = self.channels.get(d.channel)
            if channel is None:
                self.store.delivery_failed(d.id, f"channel {d.channel!r} is no longer configured", None)
                continue
            self._sending[d.id] = self._senders.submit(self._send, channel, d.id, d.payload, d.attempts)

    def _send(self, channel: Channel, delivery_id: int, payload: dict[str, Any], attempts: int) -> None:
        try:
            channel.send(Notification(**payload))
        except ChannelError as e:
            tries = attempts + 1
            if tries > self.settings.retry_max:
                log.error(
                    "gave up sending alert %s to %s after %d attempts: %s",
                    payload.get("rule"),
                    channel.name,
                    tries,
                    e,
                )
                self.store.delivery_failed(delivery_id, str(e), None)
                return
            wait = min(BACKOFF_MAX, self.settings.retry_backoff_s * 2 ** (tries - 1))
            log.warning(
                "sending alert %s to %s failed (%s); retrying in %.0f s",
                payload.get("rule"),
                channel.name,
                e,
                wait,
            )
            self.store.delivery_failed(delivery_id, str(e), time.time() + wait)
            return
        except Exception as e:  # a channel bug: kept as a failed attempt, never raised into the monitor
            log.exception("alert channel %s broke", channel.name)
            self.store.delivery_failed(delivery_id, f"{type(e).__name__}", time.time() + BACKOFF_MAX)
            return
        self.store.delivered(delivery_id)


def prune_logs(engine: Engine, now: float) -> int:
    """Delete rotated log files (the service log's and the alert log's `.1`, `.2`, ...) older than
    `monitor.log_retention_days`; returns how many went."""
    s = engine.settings
    keep = s.monitor.log_retention_days * 86400
    files: list[Path] = []
    if s.logging.file is not None:
        files.append(s.logging.file if s.logging.file.is_absolute() else s.data_dir / s.logging.file)
    for c in s.monitor.channels:
        if c.type == "log":
            p = c.path or Path("logs/alerts.jsonl")
            files.append(p if p.is_absolute() else s.data_dir / p)
    removed = 0
    for f in files:
        for rotated in f.parent.glob(f.name + ".*"):
            try:
                if rotated.suffix.lstrip(".").isdigit() and now - rotated.stat().st_mtime > keep:
                    rotated.unlink()
                    removed += 1
            except OSError:
                continue
    return removed
