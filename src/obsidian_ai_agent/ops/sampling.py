"""One sample of the host and the service: what the monitor stores every `monitor.interval_s` and what its
rules read. Request figures come from the same counters and histograms as `/metrics` (summed over every
worker), as differences between one sample and the next."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from prometheus_client.metrics_core import Metric

from ..observability.metrics import PREFIX, quantile
from ..store.jobs import JobStore
from .checks import RANK, run_checks

if TYPE_CHECKING:
    from ..engine import Engine

Families = Callable[[], list[Metric]]
# Figures of the monitor's own reads are left out of the service's request figures.
_QUIET_ROUTES = frozenset({"/metrics"})


class RequestTotals:
    """Cumulative request count, 5xx count and latency buckets over every route, at one moment."""

    def __init__(self, count: float, errors: float, buckets: dict[float, float]) -> None:
        self.count = count
        self.errors = errors
        self.buckets = buckets

    @classmethod
    def read(cls, families: list[Metric]) -> RequestTotals:
        count = errors = 0.0
        buckets: dict[float, float] = defaultdict(float)
        for family in families:
            for s in family.samples:
                if s.labels.get("route") in _QUIET_ROUTES:
                    continue
                if s.name == f"{PREFIX}_http_requests_total":
                    count += s.value
                    if int(s.labels.get("status", "0")) >= 500:
                        errors += s.value
                elif s.name == f"{PREFIX}_http_request_duration_seconds_bucket":
                    buckets[float(s.labels["le"])] += s.value
        return cls(count, errors, dict(buckets))

    def since(self, before: RequestTotals | None, seconds: float) -> dict[str, float | None]:
        """Rate, error rate and latency percentiles of the requests between `before` and this; a
        counter that went down (the service restarted) counts from zero."""
        if before is None or self.count < before.count:
            before = RequestTotals(0.0, 0.0, {})
        n = self.count - before.count
        out: dict[str, float | None] = {
            "requests": n,
            "request_rate": round(n / seconds, 4) if seconds > 0 else None,
            "error_rate": round((self.errors - before.errors) / n, 4) if n > 0 else None,
        }
        delta = [(le, c - before.buckets.get(le, 0.0)) for le, c in self.buckets.items()]
        for q, name in ((0.5, "latency_p50_s"), (0.95, "latency_p95_s"), (0.99, "latency_p99_s")):
            v = quantile(q, delta) if n > 0 else None
            out[name] = None if v is None else round(v, 4)
        return out


class LogErrors:
    """Counts ERROR lines appended to the service's log since the last read (rotation-aware)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset: int | None = None
        self.inode: int | None = None

    def read(self) -> int | None:
        """ERROR lines since the last call (None: no log file configured or readable yet)."""
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        if self.offset is None:  # the first read starts at the end: old errors are not news
            self.offset, self.inode = st.st_size, st.st_ino
            return 0
        if st.st_ino != self.inode or st.st_size < self.offset:  # rotated: the new file from its start
            self.offset, self.inode = 0, st.st_ino
        count = 0
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read(8 * 1_048_576)
            end = chunk.rfind(b"\n") + 1  # whole lines only; the rest is read next time
            for line in chunk[:end].splitlines():
                count += _is_error(line)
            self.offset += end
        return count


def _is_error(line: bytes) -> int:
    if b"ERROR" not in line and b"CRITICAL" not in line:
        return 0
    try:
        record = json.loads(line)
    except ValueError:
        return int(b" ERROR " in line or b" CRITICAL " in line)
    return int(isinstance(record, dict) and record.get("level") in ("ERROR", "CRITICAL"))


def service_processes() -> list[psutil.Process]:
    """This process and, when it is a worker of `serve --workers N`, its supervisor and every worker."""
    me = psutil.Process()
    if multiprocessing.parent_process() is None:
        return [me]
    try:
        parent = me.parent()
        if parent is None:
            return [me]
        return [parent, *parent.children()]
    except psutil.Error:
        return [me]


class Sampler:
    """Takes samples for one monitor; keeps the previous request totals and log offset between them."""

    def __init__(self, engine: Engine, families: Families | None, log_file: Path | None) -> None:
        self.engine = engine
        self.families = families
        self.log = LogErrors(log_file)
        self.jobs = JobStore(engine.store)
        self._totals: RequestTotals | None = None
        self._at: float | None = None
        psutil.cpu_percent(interval=None)  # primes the counter: the next call measures from here
        self.log.read()

    def sample(self) -> dict[str, Any]:
        now = time.time()
        s = self.engine.settings
        elapsed = now - self._at if self._at is not None else None
        mem = psutil.virtual_memory()
        disk = shutil.disk_usage(s.data_dir)
        rss = 0
        for p in service_processes():
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        figures: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "load1": round(os.getloadavg()[0], 2),
            "memory_percent": mem.percent,
            "disk_percent": round(100 * disk.used / disk.total, 2) if disk.total else 0.0,
            "disk_free_mb": disk.free // 1_048_576,
            "rss_mb": round(rss / 1_048_576, 1),
        }
        if self.families is not None:
            totals = RequestTotals.read(self.families())
            if elapsed is not None:
                figures.update(totals.since(self._totals, elapsed))
            self._totals = totals
        figures.update(self._jobs(now, elapsed))
        errors = self.log.read()
        if errors is not None and elapsed:
            figures["error_log_lines"] = errors
            figures["error_log_lines_per_min"] = round(errors * 60 / elapsed, 2)
        if s.monitor.checks:
            checks = run_checks(self.engine)
            figures["components"] = {name: RANK[c["state"]] for name, c in checks.items()}
            figures["component_worst"] = max(figures["components"].values(), default=0)
            figures["component_messages"] = {
                name: c["message"] for name, c in checks.items() if c["state"] != "ok"
            }
        self._at = now
        return figures

    def _jobs(self, now: float, elapsed: float | None) -> dict[str, Any]:
        counts = self.jobs.counts()
        running = self.jobs.running()
        stuck = sum(1 for j in running if j.lease_expires is not None and j.lease_expires < now)
        out: dict[str, Any] = {
            "jobs_queued": counts.get("queued", 0),
            "jobs_running": counts.get("running", 0),
            "jobs_stuck": stuck,
        }
        if elapsed is not None:
            since = now - elapsed
            out["jobs_failed"] = sum(1 for j in self.jobs.finished_jobs(since) if j.status == "failed")
        return out
