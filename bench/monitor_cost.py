"""What the built-in monitor costs: `/api/search` throughput with and without it, and the store's growth.

1. Throughput: `serve --workers 2` on the docs vault index, started alternately with the monitor off and
   on (off, on, off, on, ...: the same run, so drift of the shared machine hits both alike), each time
   `--clients` concurrent clients sending `/api/search` (a different query each request) for
   `--seconds`. The monitor samples every `--interval` seconds (default 1 s: thirty times more often than
   the default 30 s, so the cost shown bounds the default's from above) with every component check.
2. Store growth: real samples taken by the monitor's sampler (checks included) give the size of one
   sample; a day of them at the default 30 s is written to an index file, then a year of days, thinned
   every day as the monitor does, and the file's size is reported each time.

Usage: python bench/monitor_cost.py [--pairs 3] [--clients 8] [--seconds 20] [--interval 1] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    CACHE_DIR,
    REPO_DIR,
    TASKS_VAULTS,
    add_common_args,
    emit,
    latency_summary,
    load_queries,
    log,
)
from http_service import ensure_index, free_port, stop_server, wait_ready

CLI = [sys.executable, "-m", "obsidian_ai_agent.cli"]


def start(data: Path, port: int, monitor: bool, interval: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
        "OAA_LOG_LEVEL": "WARNING",
        "OAA_CACHE__ENABLED": "false",  # every search does the work: the cache would hide the cost
        "OAA_MONITOR__ENABLED": "true" if monitor else "false",
        "OAA_MONITOR__INTERVAL_S": str(interval),
    }
    return subprocess.Popen(
        [*CLI, "--data-dir", str(data), "serve", "--no-index", "--workers", "2", "--port", str(port)],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def load(url: str, key: str, queries: list[str], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(n: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        rng = random.Random(n)
        while time.monotonic() < deadline:
            q = rng.choice(queries)
            t0 = time.perf_counter()
            r = await http.post("/api/search", json={"query": q, "k": 10}, headers={"X-API-Key": key})
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        started = time.monotonic()
        await asyncio.gather(*(client(n, http) for n in range(clients)))
        took = time.monotonic() - started
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / took, 1),
            **latency_summary(latencies)}  # fmt: skip


def throughput(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    queries = load_queries(500)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for pair in range(args.pairs):
        for mode in ("off", "on"):
            port = free_port()
            proc = start(data, port, mode == "on", args.interval)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(url, proc)
                key = (data / "admin.key").read_text().strip()
                asyncio.run(load(url, key, queries, args.clients, 3))  # warm both workers
                if mode == "on":  # the monitor samples from its first interval on
                    time.sleep(max(0.0, args.interval * 2 - 3))
                got = asyncio.run(load(url, key, queries, args.clients, args.seconds))
                if mode == "on":
                    st = httpx.get(url + "/api/monitor", headers={"X-API-Key": key}, timeout=30).json()
                    got["monitor_samples"] = sum(st["samples"].values())
            finally:
                stop_server(proc)
            got["load_average"] = [round(x, 2) for x in os.getloadavg()]
            runs[mode].append(got)
            log(
                f"pair {pair + 1} monitor {mode}: {got['rps']} req/s, "
                f"p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms"
            )
    med = {m: statistics.median(r["rps"] for r in rs) for m, rs in runs.items()}
    p99 = {m: statistics.median(r["p99_ms"] for r in rs) for m, rs in runs.items()}
    return {
        "runs": runs,
        "median_rps": med,
        "median_p99_ms": p99,
        "throughput_change_percent": round(100 * (med["on"] - med["off"]) / med["off"], 1),
        "spread_percent_off": round(
            100 * (max(r["rps"] for r in runs["off"]) - min(r["rps"] for r in runs["off"])) / med["off"], 1
        ),
    }


def growth(data: Path) -> dict[str, Any]:
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.engine import Engine
    from obsidian_ai_agent.ops.sampling import Sampler
    from obsidian_ai_agent.store import Store
    from obsidian_ai_agent.store.monitoring import MonitorStore

    with Engine(load_settings(data_dir=data)) as engine:
        sampler = Sampler(engine, None, None)
        real = []
        for _ in range(5):
            time.sleep(0.5)
            real.append(sampler.sample())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.sqlite"
        store = Store(path)
        monitor = MonitorStore(store)
        empty = path.stat().st_size
        day, interval = 86400.0, 30.0
        start = time.time() - 366 * day
        rng = random.Random(7)

        def one_day(d: int) -> None:
            rows = []
            for i in range(int(day / interval)):
                f = dict(real[i % len(real)])
                f["cpu_percent"] = round(rng.uniform(0, 100), 1)
                f["rss_mb"] = round(rng.uniform(300, 900), 1)
                rows.append((start + d * day + i * interval, f))
            monitor.add_samples(rows)

        one_day(0)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after_day = path.stat().st_size
        sizes = {}
        t0 = time.perf_counter()
        for d in range(1, 366):
            one_day(d)
            monitor.thin(start + (d + 1) * day, retention_days=30)
            if d in (30, 90, 365):
                store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                sizes[f"after_{d}_days_mb"] = round(path.stat().st_size / 1_048_576, 2)
        counts = monitor.sample_counts()
        store._db.execute("VACUUM")
        vacuumed = path.stat().st_size
        store.close()
    return {
        "sample_json_bytes": round(statistics.mean(len(str(s)) for s in real)),
        "one_day_raw_mb": round((after_day - empty) / 1_048_576, 2),
        **sizes,
        "after_365_days_vacuumed_mb": round(vacuumed / 1_048_576, 2),
        "rows_after_a_year": {str(k): v for k, v in counts.items()},
        "simulate_year_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-growth", action="store_true")
    add_common_args(ap)
    args = ap.parse_args()
    data = CACHE_DIR / "monitor-docs"
    if not (data / "index.sqlite").exists():
        log("indexing the docs vault once ...")
        ensure_index(data, TASKS_VAULTS[0])
    result: dict[str, Any] = {"interval_s": args.interval, "clients": args.clients, "seconds": args.seconds}
    if not args.skip_throughput:
        result["throughput"] = throughput(data, args)
    if not args.skip_growth:
        result["store_growth"] = growth(data)
    emit("monitor_cost", result, args.out)


if __name__ == "__main__":
    main()
