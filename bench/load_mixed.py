"""Mixed load on `serve --workers 2`: 20 clients for 60 s, search / ask (extractive) / health.

Against a real server on a loopback port over a copy of the obsidian-tasks docs vault (indexed first):
- each client loops for `--seconds`, picking a route at random: 50% `/api/search`, 30% `/api/ask`
  (extractive), 20% `/health`; questions are the vault questions and paraphrases of them, so most asks
  are not answered from the cache;
- the RSS of every worker process (psutil children of the server) is sampled every `--sample` seconds
  during the load and for `--idle` seconds after it (does the memory level off, is it released?);
- per route: p50/p90/p99, errors by kind; the load average at the end.

Rate limits are switched off (the point is the service's own capacity, not the limiter).

Usage: python bench/load_mixed.py [--workers 2] [--clients 20] [--seconds 60] [--quick] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from common import (
    CACHE_DIR,
    REPO_DIR,
    TASKS_VAULTS,
    VAULT_QUESTIONS,
    add_common_args,
    emit,
    goal,
    log,
    percentile,
)

CLI = [sys.executable, "-m", "obsidian_ai_agent.cli"]
MIX = (("search", 0.5), ("ask", 0.3), ("health", 0.2))
# Ways a user asks the same thing: the answers differ in cache key, not in what they need.
PARAPHRASES = (
    "{q}",
    "In the Tasks plugin, {ql}",
    "Quick question: {ql}",
    "{q} Please cite the note.",
    "Can you tell me {ql}",
    "I am new to Obsidian Tasks. {q}",
    "{q} Thanks!",
    "According to my notes, {ql}",
)


def questions() -> list[str]:
    base = [
        str(json.loads(line)["question"]).strip()
        for line in VAULT_QUESTIONS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    out = []
    for template in PARAPHRASES:
        for q in base:
            out.append(template.format(q=q, ql=q[:1].lower() + q[1:]))
    random.Random(7).shuffle(out)
    return out


def search_queries(qs: list[str]) -> list[str]:
    """Short keyword forms of the questions, as a search box gets them."""
    stop = {"a", "an", "the", "i", "do", "does", "how", "what", "which", "is", "are", "to", "of", "in", "my"}
    out = []
    for q in qs:
        words = [w.strip("?.,!:") for w in q.split()]
        out.append(" ".join(w for w in words if w and w.lower() not in stop)[:120])
    return list(dict.fromkeys(out))


def prepare(data: Path, vault_src: Path) -> tuple[Path, dict[str, Any]]:
    """A private copy of the vault, indexed into `data` (incremental: reused across runs)."""
    vault = data.parent / "vault"
    if not vault.exists():
        shutil.copytree(vault_src, vault)
    started = time.perf_counter()
    run = subprocess.run(
        [*CLI, "--data-dir", str(data), "index", str(vault), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
    )
    if run.returncode != 0:
        raise SystemExit(f"indexing {vault} failed: {run.stderr[-2000:]}")
    seconds = time.perf_counter() - started
    # What indexing queued (the answer sentences of new chunks, `answer_vectors`) runs before the load,
    # as it would on a service that has been up for a while.
    started = time.perf_counter()
    work = subprocess.run(
        [*CLI, "--data-dir", str(data), "jobs", "work", "--until-idle", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
    )
    if work.returncode != 0:
        raise SystemExit(f"running the queued jobs failed: {work.stderr[-2000:]}")
    return vault, {"seconds": round(seconds, 1), "queued_jobs_s": round(time.perf_counter() - started, 1)}


def start_server(data: Path, workers: int, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
        "OAA_LOG_LEVEL": "WARNING",
        "OAA_LLM__PROVIDER": "extractive",
    }
    cmd = [*CLI, "--data-dir", str(data), "serve", "--no-index", "--workers", str(workers)]
    return subprocess.Popen(
        [*cmd, "--port", str(port)],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def workers_of(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The server's worker processes (uvicorn's children that are Python, not its resource tracker)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "multiprocessing.resource_tracker" not in " ".join(k.cmdline()):
                out.append(k)
        except psutil.Error:
            continue
    return out


class RssSampler:
    """RSS of each worker every `every` seconds, in MB, with the time since the load started."""

    def __init__(self, proc: subprocess.Popen[bytes], every: float) -> None:
        self.proc = proc
        self.every = every
        self.series: dict[str, list[list[float]]] = {}
        self.t0 = time.monotonic()

    def sample(self, phase: str) -> None:
        t = round(time.monotonic() - self.t0, 1)
        for w in workers_of(self.proc):
            try:
                mb = round(w.memory_info().rss / 2**20, 1)
            except psutil.Error:
                continue
            self.series.setdefault(str(w.pid), []).append([t, mb, 1.0 if phase == "load" else 0.0])

    async def run(self, stop: asyncio.Event, phase: str) -> None:
        while not stop.is_set():
            self.sample(phase)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pid, rows in self.series.items():
            load = [mb for _, mb, ph in rows if ph]
            idle = [mb for _, mb, ph in rows if not ph]
            out[pid] = {
                "series_mb": [[t, mb] for t, mb, _ in rows],
                "first_mb": rows[0][1],
                "peak_mb": max(mb for _, mb, _ in rows),
                "end_of_load_mb": load[-1] if load else None,
                "after_idle_mb": idle[-1] if idle else None,
            }
        return out


async def load(
    url: str, key: str, clients: int, seconds: float, sampler: RssSampler, seed: int
) -> dict[str, Any]:
    qs = questions()
    sq = search_queries(qs)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    times: dict[str, list[float]] = {name: [] for name, _ in MIX}
    errors: dict[str, dict[str, int]] = {name: {} for name, _ in MIX}
    cached = 0
    counter = 0
    fresh: list[float] = []  # asks answered for real, not from the answer cache
    names = [n for n, _ in MIX]
    weights = [w for _, w in MIX]

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=180) as c:
        # Warm each worker (model, matrix): a few of each route, not measured.
        await asyncio.gather(*(c.post("/api/search", json={"query": q, "k": 10}) for q in sq[:8]))
        await asyncio.gather(*(c.post("/api/ask", json={"question": q}) for q in qs[-4:]))
        # The answer cache lives in the index and outlives a run: start every run from an empty one.
        cleared = await c.post("/api/performance/cache/clear")
        if cleared.status_code != 200:
            raise SystemExit(f"could not clear the cache: {cleared.status_code} {cleared.text[:200]}")
        sampler.t0 = time.monotonic()
        sampler.sample("load")
        end = time.monotonic() + seconds

        async def client(i: int) -> None:
            nonlocal cached, counter
            rng = random.Random(seed + i)
            while time.monotonic() < end:
                route = rng.choices(names, weights)[0]
                counter += 1
                n = counter
                t = time.perf_counter()
                try:
                    if route == "health":
                        r = await c.get("/health")
                    elif route == "search":
                        r = await c.post("/api/search", json={"query": sq[n % len(sq)], "k": 10})
                    else:
                        r = await c.post("/api/ask", json={"question": qs[n % len(qs)]})
                    if r.status_code != 200:
                        errors[route][str(r.status_code)] = errors[route].get(str(r.status_code), 0) + 1
                    elif route == "ask" and r.json().get("cached"):
                        cached += 1
                    elif route == "ask":
                        fresh.append(time.perf_counter() - t)
                except httpx.HTTPError as e:
                    errors[route][type(e).__name__] = errors[route].get(type(e).__name__, 0) + 1
                times[route].append(time.perf_counter() - t)

        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop, "load"))
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - started
        stop.set()
        await sampling
    routes: dict[str, Any] = {}
    for name in names:
        ms = sorted(x * 1000 for x in times[name])
        routes[name] = {
            "requests": len(ms),
            "errors": sum(errors[name].values()),
            "errors_by_kind": errors[name],
            "p50_ms": round(percentile(ms, 50), 1),
            "p90_ms": round(percentile(ms, 90), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(ms[-1], 1) if ms else None,
        }
    routes["ask"]["answered_from_cache"] = cached
    ms = sorted(x * 1000 for x in fresh)
    routes["ask"]["not_from_cache"] = {
        "requests": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
    }
    total = sum(len(v) for v in times.values())
    return {"wall_s": round(wall, 1), "requests": total, "requests_per_s": round(total / wall, 1), **routes}


async def idle(sampler: RssSampler, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(stop, "idle"))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def main() -> None:
    from http_service import free_port, stop_server, wait_ready

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--data-dir", type=Path, default=CACHE_DIR / "load-mixed" / "data")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--sample", type=float, default=5, help="seconds between RSS samples")
    p.add_argument("--idle", type=float, default=20, help="seconds of RSS sampling after the load")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.seconds, args.idle = 15, 5
    data: Path = args.data_dir
    if args.fresh and data.parent.exists():
        shutil.rmtree(data.parent)
    data.mkdir(parents=True, exist_ok=True)
    log(f"indexing a copy of {TASKS_VAULTS[0]} into {data}")
    _, index = prepare(data, TASKS_VAULTS[0])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(data, args.workers, port)
    try:
        startup = wait_ready(url, proc)
        key = (data / "admin.key").read_text().strip()
        sampler = RssSampler(proc, args.sample)
        log(f"{args.clients} clients for {args.seconds:g} s ...")
        routes = asyncio.run(load(url, key, args.clients, args.seconds, sampler, args.seed))
        log(f"idle for {args.idle:g} s ...")
        asyncio.run(idle(sampler, args.idle))
        load_avg = [round(x, 2) for x in os.getloadavg()]
    finally:
        stop_server(proc)
    rss = sampler.summary()
    result = {
        "vault": str(TASKS_VAULTS[0]),
        "workers": args.workers,
        "clients": args.clients,
        "seconds": args.seconds,
        "mix": dict(MIX),
        "index": index,
        "startup_s": round(startup, 2),
        "routes": routes,
        "rss_per_worker": rss,
        "load_average": load_avg,
        "goals": {
            "ask_p99_ms": goal(routes["ask"]["p99_ms"], "<=", 3000),
            "ask_not_from_cache_p99_ms": goal(routes["ask"]["not_from_cache"]["p99_ms"], "<=", 3000),
            "errors": goal(sum(routes[n]["errors"] for n, _ in MIX), "<=", 0),
            "peak_worker_rss_mb": goal(max((w["peak_mb"] for w in rss.values()), default=None), "<=", 1500),
        },
    }
    emit("load_mixed", result, args.out)


if __name__ == "__main__":
    main()
