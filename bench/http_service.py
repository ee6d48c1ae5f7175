"""The HTTP service under load: `serve` with its default workers (one per core) on the vaultofknowledge index.

Measures, against a real server on a loopback port (uvicorn, `--workers` processes):
- `/health` latency over keep-alive (sequential requests);
- `/api/search` with 100 requests in flight at once (several rounds, a different query each request):
  errors, p50/p99 latency and requests per second;
- `/api/ask` answered from the cache (the same question again) against a first, uncached answer.

Then (unless `--no-peer`), with our server stopped, the same `/api/search` load against the Chroma stack
(`chroma_service.py`: chromadb's PersistentClient and the same model on torch behind FastAPI/uvicorn, the
same number of workers), on a collection built from our index's own chunks and vectors: `peer_chroma`, and
`ratios_ours_over_chroma` for p50, p99 and requests/s. Chroma's search is semantic only; ours is hybrid.

Rate limits are switched off for the run (the point is the service's own capacity, not the limiter).
The index is built once into `--data-dir` (default bench/.cache/http-vok) and reused.

Usage: python bench/http_service.py [--workers N] [--concurrency 100] [--rounds 5] [--no-peer] [--quick]
       [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    CACHE_DIR,
    REPO_DIR,
    VAULT_OF_KNOWLEDGE,
    add_common_args,
    emit,
    goal,
    latency_summary,
    load_queries,
    log,
)
from obsidian_ai_agent.config import default_workers

CLI = [sys.executable, "-m", "obsidian_ai_agent.cli"]
CHROMA_SERVICE = [sys.executable, str(Path(__file__).resolve().parent / "chroma_service.py")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_index(data: Path, vault: Path) -> dict[str, Any]:
    started = time.perf_counter()
    run = subprocess.run(
        [*CLI, "--data-dir", str(data), "index", str(vault), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
    )
    if run.returncode != 0:
        raise SystemExit(f"indexing {vault} failed: {run.stderr[-2000:]}")
    return {"seconds": round(time.perf_counter() - started, 1)}


def start_server(data: Path, workers: int, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
        "OAA_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [
            *CLI,
            "--data-dir",
            str(data),
            "serve",
            "--no-index",
            "--workers",
            str(workers),
            "--port",
            str(port),
        ],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 300, log_file: Path | None = None
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file and log_file.is_file() else ""
            raise SystemExit(f"the server exited with {proc.returncode}" + (f": {tail}" if tail else ""))
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not come up")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def health_latency(url: str, n: int) -> dict[str, Any]:
    times = []
    with httpx.Client(base_url=url) as c:
        for _ in range(20):
            c.get("/health")
        for _ in range(n):
            t = time.perf_counter()
            r = c.get("/health")
            times.append(time.perf_counter() - t)
            r.raise_for_status()
    return latency_summary(times)


async def search_load(
    url: str, key: str, queries: list[str], concurrency: int, rounds: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    times: list[float] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as c:
        # Warm every worker: its model and matrix load on the first search it serves.
        await asyncio.gather(*(c.post("/api/search", json={"query": q, "k": 10}) for q in queries[:16]))

        async def one(q: str) -> None:
            t = time.perf_counter()
            try:
                r = await c.post("/api/search", json={"query": q, "k": 10})
                ok = r.status_code == 200 and isinstance(r.json().get("results"), list)
                if not ok:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            times.append(time.perf_counter() - t)

        wall = 0.0
        for r in range(rounds):
            batch = [queries[(r * concurrency + i) % len(queries)] for i in range(concurrency)]
            started = time.perf_counter()
            await asyncio.gather(*(one(q) for q in batch))
            wall += time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "rounds": rounds,
        "requests": len(times),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "requests_per_s": round(len(times) / wall, 1) if wall else None,
        **latency_summary(times),
    }


def ask_latency(url: str, key: str, question: str, n: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        t = time.perf_counter()
        first = c.post("/api/ask", json={"question": question})
        first_s = time.perf_counter() - t
        first.raise_for_status()
        times = []
        cached = 0
        for _ in range(n):
            t = time.perf_counter()
            r = c.post("/api/ask", json={"question": question})
            times.append(time.perf_counter() - t)
            r.raise_for_status()
            cached += bool(r.json().get("cached"))
    return {
        "first_answer_ms": round(first_s * 1000, 1),
        "cached_answers": cached,
        "cached": latency_summary(times),
    }


def build_chroma(data: Path, chroma_dir: Path, fresh: bool) -> dict[str, Any]:
    """The Chroma collection from our index's chunks and vectors, built (or reused) in its own process."""
    cmd = [*CHROMA_SERVICE, "build", "--index", str(data / "index.sqlite"), "--chroma-dir", str(chroma_dir)]
    run = subprocess.run(
        [*cmd, *(["--fresh"] if fresh else [])], stdout=subprocess.PIPE, text=True, cwd=REPO_DIR
    )
    if run.returncode != 0:
        raise SystemExit(f"building the Chroma collection failed ({run.returncode})")
    info: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return info


def start_chroma(chroma_dir: Path, workers: int, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "wb") as out:
        return subprocess.Popen(
            [
                *CHROMA_SERVICE,
                "serve",
                "--chroma-dir",
                str(chroma_dir),
                "--workers",
                str(workers),
                "--port",
                str(port),
            ],
            cwd=REPO_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def chroma_peer(
    data: Path, chroma_dir: Path, args: argparse.Namespace, queries: list[str], ours: dict[str, Any]
) -> dict[str, Any]:
    """The same search load against the Chroma stack (our server already stopped: one stack at a time)."""
    collection = build_chroma(data, chroma_dir, args.fresh)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = chroma_dir / "service.log"
    log(f"chroma: serving {chroma_dir} with {args.workers} workers ...")
    proc = start_chroma(chroma_dir, args.workers, port, log_file)
    try:
        startup = wait_ready(url, proc, log_file=log_file)
        log("chroma: search under load ...")
        # the peer checks no key: the header is sent (as to ours) and ignored
        search = asyncio.run(search_load(url, "unchecked", queries, args.concurrency, args.rounds))
    finally:
        stop_server(proc)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "peer_chroma": {
            "what": "chromadb PersistentClient + all-MiniLM-L6-v2 (sentence-transformers, torch) behind"
            " FastAPI/uvicorn, same workers; semantic only (ours is hybrid: keyword + semantic, fused)",
            "chromadb": collection["chromadb"],
            "workers": args.workers,
            "collection": collection,
            "chunks": collection["chunks"],
            "startup_s": round(startup, 2),
            "search_concurrent": search,
        },
        "ratios_ours_over_chroma": {
            "search_p50": ratio(ours["p50_ms"], search["p50_ms"]),
            "search_p99": ratio(ours["p99_ms"], search["p99_ms"]),
            "search_requests_per_s": ratio(ours["requests_per_s"], search["requests_per_s"]),
            "note": "latency below 1: we answer faster; requests/s above 1: we serve more",
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--data-dir", type=Path, default=CACHE_DIR / "http-vok")
    p.add_argument("--vault", type=Path, default=VAULT_OF_KNOWLEDGE)
    p.add_argument(
        "--workers", type=int, default=default_workers(), help="default: serve's (one per core, at most 4)"
    )
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--health", type=int, default=2000)
    p.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also put the Chroma stack under the same search load (default: on)",
    )
    p.add_argument("--chroma-dir", type=Path, default=CACHE_DIR / "http-vok-chroma")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.health = 2, 300
    if args.peer and importlib.util.find_spec("chromadb") is None:
        raise SystemExit("the Chroma peer needs chromadb: pip install -e '.[bench]', or pass --no-peer")

    data: Path = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    log(f"indexing {args.vault} into {data} (incremental; the first run embeds the whole vault)")
    index = ensure_index(data, args.vault)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(data, args.workers, port)
    try:
        startup = wait_ready(url, proc)
        key = (data / "admin.key").read_text().strip()
        queries = load_queries(2000)
        log("health ...")
        health = health_latency(url, args.health)
        log("search under load ...")
        search = asyncio.run(search_load(url, key, queries, args.concurrency, args.rounds))
        log("ask ...")
        ask = ask_latency(url, key, "How do I make a task recur every week?", 50)
    finally:
        stop_server(proc)
    peer = chroma_peer(data, args.chroma_dir, args, queries, search) if args.peer else {}
    result = {
        "vault": str(args.vault),
        "workers": args.workers,
        "index": index,
        "startup_s": round(startup, 2),
        "health": health,
        "search_concurrent": search,
        "ask": ask,
        **peer,
        "goals": {
            "health_p99_ms": goal(health["p99_ms"], "<=", 10),
            "search_p99_ms_at_100": goal(search["p99_ms"], "<=", 1000),
            "search_errors": goal(search["errors"], "<=", 0),
            "cached_ask_p50_ms": goal(ask["cached"]["p50_ms"], "<=", 20),
        },
        "seed_slas": {
            "health_p99_ms": goal(health["p99_ms"], "<=", 100),
            "search_p99_ms": goal(search["p99_ms"], "<=", 1000),
            "cached_ask_p99_ms": goal(ask["cached"]["p99_ms"], "<=", 500),
        },
    }
    emit("http_service", result, args.out)


if __name__ == "__main__":
    main()
