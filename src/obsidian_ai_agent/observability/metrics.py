"""Prometheus metrics that hold across worker processes, and the figures /api/performance reports.

One process: values live in memory, in a registry of the app's own. Several workers: prometheus-client's
multiprocess mode, in which each process writes its values to mmap'd files in one directory and a scrape
in any worker merges every file (counters and histograms summed, the in-flight gauge summed over live
processes). See the package docstring for how the directory is chosen and cleaned.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ..cache import Cache, make_cache
from ..config import Settings

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "oaa"
# Seconds; fine enough below 100 ms that percentiles read from the buckets stay close to the truth.
BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 120.0, math.inf,
)  # fmt: skip
_PID_FILE = re.compile(r"_(\d+)\.(?:db|jsonl)$")


# -- where the values live ------------------------------------------------------------------------------


def multiprocess_dir(settings: Settings) -> Path | None:
    """The directory the workers share, or None when this process serves alone.

    `PROMETHEUS_MULTIPROC_DIR` when set; else, in a process started by a supervisor (uvicorn's
    `--workers N`, which `serve --workers N` uses, starts each worker through multiprocessing),
    `logging.metrics_dir`, the same for every worker of the server. A process that is not a spawned
    worker keeps its values in memory even when `server.workers > 1`, so an app built in-process (tests,
    tools) never writes into a shared directory."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    if multiprocessing.parent_process() is None:
        return None
    chosen = settings.logging.metrics_dir
    if chosen is None:
        return settings.data_dir / "metrics"
    chosen = chosen.expanduser()
    return chosen if chosen.is_absolute() else settings.data_dir / chosen


def enable_multiprocess(path: Path) -> None:
    """Switch this process to multiprocess values in `path` (before its metrics are created)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ[ENV] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client picks the value class when first imported; this process learnt it is a
        # worker only now.
        values.ValueClass = values.MultiProcessValue()
    clean_stale(path)


def _file_is_live(path: Path, pid: int) -> bool:
    """Whether `path` belongs to a running process: the pid exists and was started before the file was
    written (a pid reused after a restart, common in containers, does not revive old files)."""
    try:
        started = psutil.Process(pid).create_time()
        return path.stat().st_mtime >= started - 1.0
    except (psutil.Error, FileNotFoundError):
        return False


def clean_stale(path: Path) -> None:
    """Files of processes that are gone: when no process is alive this is a fresh start, so all of them
    go (counts start at zero); when other workers are alive, a dead one's counters stay (the totals
    must not go backwards) and only its live gauges go, as `mark_process_dead` does."""
    files = [(f, int(m.group(1))) for f in path.iterdir() if (m := _PID_FILE.search(f.name))]
    live = {f for f, pid in files if _file_is_live(f, pid)}
    stale = [(f, pid) for f, pid in files if f not in live]
    for f, pid in stale:
        if not live:
            f.unlink(missing_ok=True)
        elif not psutil.pid_exists(pid):
            mark_process_dead(pid, str(path))
        elif f.name.startswith("gauge_live"):
            f.unlink(missing_ok=True)


def live_workers(path: Path) -> int:
    pids = {int(m.group(1)) for f in path.glob("*.db") if (m := _PID_FILE.search(f.name))}
    return sum(1 for pid in pids if psutil.pid_exists(pid))


# -- the metrics ------------------------------------------------------------------------------------------


def answer_cache(app_state: Any, settings: Settings) -> Cache | None:
    """The engine's answer/search cache without loading anything: the answerer's when it exists (it
    holds this worker's hit counts), else a handle on the configured backend."""
    engine = getattr(app_state, "engine", None)
    if engine is None:
        return None
    # `answerer` is a cached_property: reading it would load the embedding model.
    answerer = vars(engine).get("answerer")
    cache = getattr(answerer, "cache", None)
    return cache if isinstance(cache, Cache) else make_cache(settings.cache, engine.store)


class IndexCollector(Collector):
    """Gauges read from the index at scrape time: the same in every worker, so never summed."""

    def __init__(self, app_state: Any, settings: Settings) -> None:
        self.app_state = app_state
        self.settings = settings

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        engine = getattr(self.app_state, "engine", None)
        if engine is None:
            return
        counts = engine.store.counts()
        for name, help_text in (
            ("sources", "Notes, PDFs and web pages in the index"),
            ("chunks", "Chunks in the index"),
            ("vectors", "Chunks with an embedding vector"),
            ("failed", "Sources that failed to index"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_index_{name}", help_text, value=counts[name])
        yield GaugeMetricFamily(
            f"{PREFIX}_index_generation", "Index generation (moves on every change)", engine.store.generation
        )
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs by status", labels=["status"])
        for status, n in engine.jobs.counts().items():
            jobs.add_metric([status], n)
        yield jobs
        cache = answer_cache(self.app_state, self.settings)
        if cache is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_cache_entries", "Entries in the answer cache", cache.backend.size()
            )


class Metrics:
    """This app's metrics; in multiprocess mode, `directory` holds every worker's values."""

    def __init__(self, app_state: Any, settings: Settings, directory: Path | None) -> None:
        self.app_state = app_state
        self.settings = settings
        self.directory = directory
        # `_created` series double the output and multiprocess mode has none: leave them out everywhere.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from request to the end of the response body",
            ["method", "route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_http_requests_in_progress",
            "Requests being answered",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.slow = Counter(
            f"{PREFIX}_http_slow_requests",
            "Requests slower than server.slow_request_ms",
            ["route"],
            registry=r,
        )
        self.cache_lookups = Counter(
            f"{PREFIX}_cache_lookups",
            "Answer cache lookups by kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.index = IndexCollector(app_state, settings)
        if directory is None:
            r.register(self.index)
            ProcessCollector(registry=r)
        self._cache_seen: dict[tuple[str, str], int] = {}
        self._cache_ref: Cache | None = None
        self._lock = threading.Lock()

    @property
    def scope(self) -> str:
        return "all workers" if self.directory is not None else "this process"

    def workers(self) -> int:
        return live_workers(self.directory) if self.directory is not None else 1

    def observe(self, method: str, route: str, status: int, seconds: float, slow: bool) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if slow:
            self.slow.labels(route).inc()

    def sync_cache(self) -> None:
        """Carry this worker's cache hit and miss counts (kept by cache.py) over into the counters."""
        engine = getattr(self.app_state, "engine", None)
        answerer = vars(engine).get("answerer") if engine is not None else None
        cache = getattr(answerer, "cache", None)
        if not isinstance(cache, Cache):
            return
        with self._lock:
            if cache is not self._cache_ref:
                self._cache_ref, self._cache_seen = cache, {}
            for result, counts in (("hit", cache.hits), ("miss", cache.misses)):
                for kind, n in list(counts.items()):
                    seen = self._cache_seen.get((kind, result), 0)
                    if n > seen:
                        self.cache_lookups.labels(kind, result).inc(n - seen)
                        self._cache_seen[(kind, result)] = n

    def _families(self, with_index: bool) -> list[Metric]:
        self.sync_cache()
        if self.directory is None:
            if with_index:
                return list(self.registry.collect())
            return [f for m in (self.requests, self.latency, self.cache_lookups) for f in m.collect()]
        clean_stale(self.directory)
        families = list(MultiProcessCollector(None, str(self.directory)).collect())
        if with_index:
            families += list(self.index.collect())
        return families

    def request_families(self) -> list[Metric]:
        """The request and cache metrics as /metrics has them (every worker's, in multiprocess mode)."""
        return self._families(with_index=False)

    def exposition(self) -> bytes:
        """The Prometheus text format, merged over every worker in multiprocess mode."""
        if self.directory is None:
            self.sync_cache()
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(_Fixed(self._families(with_index=True)))
        return generate_latest(registry)

    def figures(self) -> dict[str, Any]:
        """Per route: count, errors, latency percentiles; cache hit rates (every worker's counts)."""
        families = self._families(with_index=False)
        return {"routes": route_figures(families), "cache_lookups": cache_figures(families)}


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


# -- figures from samples ----------------------------------------------------------------------------------


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative (upper bound, count) buckets, interpolated within the bucket it
    falls in, as Prometheus' histogram_quantile does; None without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def route_figures(families: list[Metric]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for family in families:
        for s in family.samples:
            key = (s.labels.get("route", ""), s.labels.get("method", ""))
            if s.name == f"{PREFIX}_http_requests_total":
                status = int(s.labels["status"])
                counts[key]["count"] += s.value
                counts[key]["errors"] += s.value if status >= 500 else 0
                counts[key]["client_errors"] += s.value if 400 <= status < 500 else 0
            elif s.name == f"{PREFIX}_http_request_duration_seconds_bucket":
                buckets[key][float(s.labels["le"])] += s.value
            elif s.name == f"{PREFIX}_http_request_duration_seconds_sum":
                sums[key] += s.value
    out = []
    for (route, method), c in sorted(counts.items()):
        b = list(buckets[(route, method)].items())
        n = int(c["count"])

        def ms(q: float, b: list[tuple[float, float]] = b) -> float | None:
            v = quantile(q, b)
            return None if v is None else round(v * 1000, 2)

        out.append(
            {
                "route": route,
                "method": method,
                "count": n,
                "errors": int(c["errors"]),
                "client_errors": int(c["client_errors"]),
                "error_rate": round(c["errors"] / n, 4) if n else 0.0,
                "mean_ms": round(sums[(route, method)] / n * 1000, 2) if n else None,
                "p50_ms": ms(0.50),
                "p95_ms": ms(0.95),
                "p99_ms": ms(0.99),
            }
        )
    return out


def cache_figures(families: list[Metric]) -> dict[str, dict[str, int]]:
    """Hits and misses per cache kind (answer, search) from the lookup counters."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"hits": 0, "misses": 0})
    for family in families:
        for s in family.samples:
            if s.name == f"{PREFIX}_cache_lookups_total":
                field = "hits" if s.labels["result"] == "hit" else "misses"
                out[s.labels["kind"]][field] += int(s.value)
    return dict(out)
