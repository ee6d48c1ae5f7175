"""Tool-call latency of `search` over MCP (streamable HTTP at /mcp) against the same search over
/api/search, in the same run, on the same server.

A real server (`serve --no-index`, uvicorn, `--workers` processes, default 1) on a loopback port, over the
docs vault index (built once into `--data-dir`, default bench/.cache/mcp-docs). One warm MCP session (the
SDK's own client, initialized once) and one keep-alive HTTP client; for each query, an untimed
/api/search first (so the query's vector is cached and both sides do the same retrieval work), then the
MCP `search` tool call and the /api/search request, timed, in alternating order. k=10, hybrid. What is
left between the two is the transport: JSON-RPC framing, the SDK's dispatch, argument validation and
result conversion against plain FastAPI.

Rate limits are switched off for the run. Reports p50/p95/p99 per path, the ratio MCP / API, and the
load average before and after each phase.

Usage: python bench/mcp_latency.py [--queries 300] [--workers 1] [--quick] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from common import CACHE_DIR, TASKS_VAULTS, add_common_args, emit, latency_summary, load_queries, log
from http_service import ensure_index, free_port, start_server, stop_server, wait_ready


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def measure(url: str, key: str, queries: list[str], warmup: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    mcp_times: list[float] = []
    api_times: list[float] = []
    errors = {"mcp": 0, "api": 0}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as api,
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url + "/mcp", http_client=http)) as mcp,
    ):

        async def via_mcp(q: str) -> float:
            t = time.perf_counter()
            r = await mcp.call_tool("search", {"query": q, "k": 10})
            took = time.perf_counter() - t
            errors["mcp"] += bool(r.is_error)
            return took

        async def via_api(q: str) -> float:
            t = time.perf_counter()
            r = await api.post("/api/search", json={"query": q, "k": 10})
            took = time.perf_counter() - t
            errors["api"] += r.status_code != 200
            return took

        for q in queries[:warmup]:  # warm both paths (sessions, pools, the worker's model and matrix)
            await via_api(q)
            await via_mcp(q)
        load_before = load()
        for i, q in enumerate(queries):
            await api.post("/api/search", json={"query": q, "k": 10})  # caches the query's vector
            if i % 2:
                api_times.append(await via_api(q))
                mcp_times.append(await via_mcp(q))
            else:
                mcp_times.append(await via_mcp(q))
                api_times.append(await via_api(q))
        load_after = load()
    m, a = latency_summary(mcp_times), latency_summary(api_times)
    return {
        "mcp_search": m,
        "api_search": a,
        "ratio_mcp_over_api": {
            "p50": round(m["p50_ms"] / a["p50_ms"], 2) if a["p50_ms"] else None,
            "p99": round(m["p99_ms"] / a["p99_ms"], 2) if a["p99_ms"] else None,
        },
        "overhead_ms": {
            "p50": round(m["p50_ms"] - a["p50_ms"], 2),
            "p99": round(m["p99_ms"] - a["p99_ms"], 2),
        },
        "errors": errors,
        "load_average": {"before": load_before, "after": load_after},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--data-dir", type=Path, default=CACHE_DIR / "mcp-docs")
    p.add_argument("--vault", type=Path, default=TASKS_VAULTS[0])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    args = p.parse_args()
    if args.quick:
        args.queries, args.warmup = 60, 10

    data: Path = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    log(f"indexing {args.vault} into {data} (incremental)")
    index = ensure_index(data, args.vault)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(data, args.workers, port)
    try:
        startup = wait_ready(url, proc)
        key = (data / "admin.key").read_text().strip()
        queries = load_queries(args.queries)
        log(f"{len(queries)} queries, each over /mcp and /api/search ...")
        result = asyncio.run(measure(url, key, queries, args.warmup))
    finally:
        stop_server(proc)
    emit(
        "mcp_latency",
        {
            "settings": {
                "vault": str(args.vault),
                "workers": args.workers,
                "queries": len(queries),
                "warmup": args.warmup,
                "k": 10,
                "mode": "hybrid",
                "query_vector": "cached (an untimed /api/search first), so both sides do the same work",
            },
            "index": index,
            "server_startup_seconds": round(startup, 1),
            **result,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
