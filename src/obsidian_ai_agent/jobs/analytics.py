"""Workflow analytics: success rates, duration and throughput percentiles per lane and stage, slowest
sources. Computed from the job rows the store keeps, for `jobs stats` (and the API later)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from ..store.jobs import JobStore
from .profiler import STAGES


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`, None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _r(x: float | None, digits: int = 3) -> float | None:
    return round(x, digits) if x is not None else None


def job_stats(jobs: JobStore, *, since: float | None = None, slowest: int = 10) -> dict[str, Any]:
    """Per lane: jobs by status, success rate, p50/p95 duration and items/s; per lane and stage: p50/p95
    seconds and items/s; the slowest sources."""
    finished = jobs.finished_jobs(since)
    lanes: dict[str, dict[str, Any]] = {}
    by_lane: dict[str, list[Any]] = defaultdict(list)
    for job in finished:
        by_lane[job.lane].append(job)
    counts = jobs.counts()
    for lane, items in sorted(by_lane.items()):
        ok = [j for j in items if j.status == "succeeded"]
        durations = [j.duration for j in ok if j.duration is not None]
        rates = [j.done / j.duration for j in ok if j.duration and j.done]
        lanes[lane] = {
            "jobs": len(items),
            "succeeded": len(ok),
            "failed": sum(1 for j in items if j.status == "failed"),
            "timed_out": sum(1 for j in items if j.timed_out),
            "cancelled": sum(1 for j in items if j.status == "cancelled"),
            "success_rate": _r(len(ok) / len(items)),
            "duration_p50": _r(percentile(durations, 50)),
            "duration_p95": _r(percentile(durations, 95)),
            "items_per_s_p50": _r(percentile(rates, 50), 2),
            "items_per_s_p95": _r(percentile(rates, 95), 2),
            "stages": {},
        }
    per_stage: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for _job_id, lane, _kind, t in jobs.stage_history(since=since):
        per_stage[(lane, t.stage)].append(t)
    for (lane, stage), timings in sorted(
        per_stage.items(), key=lambda kv: (kv[0][0], STAGES.index(kv[0][1]) if kv[0][1] in STAGES else 9)
    ):
        seconds = [t.seconds for t in timings]
        rates = [t.items / t.seconds for t in timings if t.seconds > 0 and t.items]
        byte_rates = [t.bytes / t.seconds for t in timings if t.seconds > 0 and t.bytes]
        lanes.setdefault(lane, {"stages": {}})["stages"][stage] = {
            "jobs": len(timings),
            "seconds_total": _r(sum(seconds)),
            "seconds_p50": _r(percentile(seconds, 50)),
            "seconds_p95": _r(percentile(seconds, 95)),
            "items": sum(t.items for t in timings),
            "items_per_s_p50": _r(percentile(rates, 50), 2),
            "items_per_s_p95": _r(percentile(rates, 95), 2),
            "kb_per_s_p50": _r((percentile(byte_rates, 50) or 0) / 1024, 1) if byte_rates else None,
        }
    return {
        "generated_at": time.time(),
        "queue": counts,
        "lanes": lanes,
        "slowest_sources": [
            {
                "job_id": job_id,
                "path": s.path,
                "seconds": _r(s.seconds),
                "parse": _r(s.parse),
                "embed": _r(s.embed),
                "write": _r(s.write),
                "chunks": s.chunks,
                "bytes": s.bytes,
            }
            for job_id, s in jobs.items(limit=slowest)
        ],
    }


def job_detail(jobs: JobStore, job_id: int, slowest: int = 10) -> dict[str, Any] | None:
    """One job with its per-stage breakdown and slowest items (the profiler's view)."""
    job = jobs.get(job_id)
    if job is None:
        return None
    stages = jobs.stages(job_id)
    total = sum(t.seconds for t in stages) or 0.0
    return {
        **job.to_dict(),
        "stages": [
            {
                "stage": t.stage,
                "seconds": _r(t.seconds),
                "share": _r(t.seconds / total) if total else None,
                "items": t.items,
                "bytes": t.bytes,
                "items_per_s": _r(t.items / t.seconds, 2) if t.seconds > 0 else None,
            }
            for t in stages
        ],
        "slowest_items": [
            {
                "path": s.path,
                "seconds": _r(s.seconds),
                "parse": _r(s.parse),
                "embed": _r(s.embed),
                "write": _r(s.write),
                "chunks": s.chunks,
                "bytes": s.bytes,
            }
            for _, s in jobs.items(job_id, limit=slowest)
        ],
    }
