"""Structured JSON logs with redaction, request timing, Prometheus metrics and slow-request traces.

Logs (`logs.py`): one JSON object per line (ts, level, logger, message, and for each request: request_id,
method, route template, path, status, latency_ms, key_id, client) to stderr and to `logging.file`, rotated
past `logging.max_bytes` with `logging.backups` files kept. Workers share the file: each write holds a
file lock, and a worker reopens the file when another has rotated it, so exactly one rotates. A filter on
every handler redacts the message, its arguments, its extra fields and tracebacks: the values of every
configured secret (each SecretStr in the settings), header values of Authorization and X-API-Key, this
service's keys (`oaa_...`), `password=` / `token=` / `api_key=` pairs and URL userinfo.

Metrics (`metrics.py`): with one process, values are kept in memory. With several workers, prometheus-
client's multiprocess mode: every worker writes its values to mmap'd files in one directory and a scrape
merges them all, so /metrics answers for the whole server whichever worker serves it. The directory is
`PROMETHEUS_MULTIPROC_DIR` when set, else `logging.metrics_dir` (default `<data dir>/metrics`) in any
process started by a supervisor: uvicorn's `--workers N` (which `serve --workers N` uses) starts each
worker through multiprocessing, and every worker of a server derives the same directory from the same
settings, so nothing has to be prepared before they start (under gunicorn, whose workers are forked, set
PROMETHEUS_MULTIPROC_DIR). Each worker cleans the directory at start: when no process that wrote there
is alive (a file's pid is gone, or was reused after the file was written), everything goes and counts
start at zero; when other workers are alive, a dead worker's counters stay so totals never go backwards,
and its live gauges are removed (`multiprocess.mark_process_dead`). Index, job and cache-size gauges are
read from the index at scrape time (the same for every worker). Cache hits and misses, counted per
worker by cache.py, are carried into counters after each request and so summed like the rest.

/api/performance/metrics reads the same merged values: per-route count, errors and p50/p95/p99 estimated
from the latency histogram (interpolated within a bucket, as Prometheus' histogram_quantile does), for all
workers. Slow requests are kept in a ring per worker and, with several workers, in a `slow_<pid>.jsonl`
per worker in the metrics directory, so any worker lists them all.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from fastapi import FastAPI

from ..config import ConfigError, Settings
from .logs import redact, setup_logging
from .metrics import Metrics, answer_cache, enable_multiprocess, multiprocess_dir
from .requests import RequestObserver, SlowRequests, client, record_span, route_template, span

__all__ = [
    "Observer",
    "get_observer",
    "install",
    "record_span",
    "redact",
    "setup_logging",
    "span",
]

access_log = logging.getLogger("obsidian_ai_agent.access")
log = logging.getLogger("obsidian_ai_agent.observability")

PERCENTILES = (
    "estimated from the latency histogram's buckets, interpolated within a bucket (as Prometheus' "
    "histogram_quantile does)"
)


class Observer:
    """What `install` attaches to the app (`app.state.observer`): metrics, slow requests, figures."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        directory = multiprocess_dir(settings)
        if directory is not None:
            try:
                enable_multiprocess(directory)
            except OSError as e:
                log.error(
                    "cannot use %s for metrics shared by the workers (%s); /metrics will answer for one "
                    "worker at a time: set logging.metrics_dir or PROMETHEUS_MULTIPROC_DIR to a writable "
                    "folder",
                    directory,
                    e.strerror or e,
                )
                directory = None
        self.metrics = Metrics(app.state, settings, directory)
        self.slow = SlowRequests(settings.logging.slow_requests, directory)
        self.started = time.time()
        from ..security.ratelimit import trusted_networks  # it imports api/, which imports this

        try:
            self.proxies = trusted_networks(settings.server.trusted_proxies)
        except ConfigError:  # reported by the rate limiter, whose setting it is
            self.proxies = []

    def finished(self, scope: dict[str, Any] | Any, status: int, t0: float, first_byte: float | None) -> None:
        """Count, time and log one request; keep it when it was slow."""
        end = time.perf_counter()
        ms = (end - t0) * 1000
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        route = route_template(scope, self.app.router.routes)
        state = scope.get("state") or {}
        request_id = state.get("request_id")
        key_id = getattr(state.get("principal"), "key_id", None)
        slow = ms > self.settings.server.slow_request_ms
        self.metrics.observe(method, route, status, ms / 1000, slow)
        self.metrics.sync_cache()
        fields = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "latency_ms": round(ms, 2),
        }
        access_log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s %d %.1f ms",
            method,
            path,
            status,
            ms,
            extra={**fields, "key_id": key_id, "client": client(scope, self.proxies)},
        )
        if slow:
            spans = dict(state.get("spans") or {})
            if first_byte is not None:
                spans["first_byte_ms"] = round((first_byte - t0) * 1000, 2)
                spans["body_ms"] = round((end - first_byte) * 1000, 2)
            now = time.time()
            self.slow.add(
                {
                    **fields,
                    "time": now,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                    "pid": os.getpid(),
                    "spans": spans,
                }
            )

    def performance(self) -> dict[str, Any]:
        """Per-route counts, errors and latency percentiles, cache hit rates, index and job figures."""
        figures = self.metrics.figures()
        engine = getattr(self.app.state, "engine", None)
        index: dict[str, int] | None = None
        jobs: dict[str, int] | None = None
        if engine is not None:
            index = {**engine.store.counts(), "generation": engine.store.generation}
            jobs = engine.jobs.counts()
        cache = answer_cache(self.app.state, self.settings)
        per_kind = {
            kind: {**c, "hit_rate": _rate(c["hits"], c["misses"])}
            for kind, c in sorted(figures["cache_lookups"].items())
        }
        hits = sum(c["hits"] for c in per_kind.values())
        misses = sum(c["misses"] for c in per_kind.values())
        started = float(getattr(self.app.state, "started", self.started))
        return {
            "scope": self.metrics.scope,
            "workers": self.metrics.workers(),
            "started": started,
            "uptime_s": round(time.time() - started, 3),
            "percentiles": PERCENTILES,
            "routes": figures["routes"],
            "cache": {
                "backend": cache.backend.name if cache is not None else self.settings.cache.backend,
                "enabled": self.settings.cache.enabled,
                "entries": cache.backend.size() if cache is not None else 0,
                "hits": hits,
                "misses": misses,
                "hit_rate": _rate(hits, misses),
                "per_kind": per_kind,
            },
            "index": index,
            "jobs": jobs,
        }

    def clear_cache(self) -> dict[str, Any]:
        """Empty the answer and search cache; what was removed, and for whom."""
        cache = answer_cache(self.app.state, self.settings)
        if cache is None:
            return {"cleared": 0, "backend": self.settings.cache.backend, "scope": "nothing to clear"}
        cleared = cache.clear()
        shared = cache.backend.name == "sqlite"
        return {
            "cleared": cleared,
            "backend": cache.backend.name,
            "scope": "every worker (the cache is a table in the index)" if shared else "this process",
        }

    def slow_requests(self, limit: int) -> dict[str, Any]:
        return {
            "threshold_ms": self.settings.server.slow_request_ms,
            "keep": self.slow.keep,
            "scope": self.slow.scope,
            "requests": self.slow.recent(limit),
        }


def _rate(hits: int, misses: int) -> float:
    return round(hits / (hits + misses), 4) if hits + misses else 0.0


def install(app: FastAPI, settings: Settings) -> None:
    """Middleware that logs each request and records its latency for /metrics and /api/performance."""
    observer = Observer(app, settings)
    app.state.observer = observer
    app.add_middleware(RequestObserver, observer=observer)


def get_observer(app: FastAPI) -> Observer:
    observer: Observer = app.state.observer
    return observer
