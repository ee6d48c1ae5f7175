"""Search latency per mode (keyword, semantic, hybrid) at growing collection sizes.

The smallest size is a base collection of distinct real sources (the obsidian-tasks vaults, then
vaultofknowledge notes and SciFact documents in turn), embedded once and cached under bench/.cache/.
Each larger size is a copy of that database grown with copies of the same sources under `copy-NN/`
prefixes through `Indexer.index_many`: their vectors are reused by chunk hash (nothing is re-embedded),
but the chunk table, the FTS index and the in-memory matrix really grow to that size.

Queries: the vault questions, then SciFact train queries. After a warm-up, every query is run once per
mode (modes interleaved per query), with the searcher's query-vector cache emptied before each call, so
semantic and hybrid timings include embedding the query, as a new query from a user does. For reference,
`query_embedding` times the model alone on each query, and `cached_query_vector` repeats each semantic
and hybrid search with the vector cached (retrieval without the model).

Usage: python bench/search_latency.py [--sizes 10000 100000] [--queries 400] [--fresh] [--quick] [--out F]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from common import (
    CACHE_DIR,
    COLLECTION_VERSION,
    add_common_args,
    chunk_count,
    collection_digest,
    copies,
    copy_database,
    emit,
    goal,
    latency_summary,
    load_queries,
    log,
    read_marker,
    real_sources,
    settings_for,
    shared_embedder,
    warm_up,
    write_marker,
)
from obsidian_ai_agent.embeddings import Embedder, QueryCache
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.notes import ParsedSource
from obsidian_ai_agent.search import MODES

WRITE_BATCH = 2000  # sources per index_many call when growing a collection


def build_base(
    data_dir: Path, sources: list[ParsedSource], embedder: Embedder, fresh: bool
) -> dict[str, Any]:
    """The base collection, embedded once; reused while its sources (paths and chunk hashes) are the same."""
    digest = collection_digest(sources)
    marker = read_marker(data_dir)
    if not fresh and marker and marker.get("digest") == digest:
        log(f"base collection cached at {data_dir} ({marker['chunks']} chunks)")
        return {**marker, "cached": True}
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    log(f"embedding the base collection: {len(sources)} sources, {chunk_count(sources)} chunks")
    t0 = time.perf_counter()
    with Engine(settings_for(data_dir), embedder=embedder) as e:
        report = e.indexer.index_many(sources)
        status = e.status()
    info = {
        "digest": digest,
        "version": COLLECTION_VERSION,
        "sources": status["sources"],
        "chunks": status["chunks"],
        "build_seconds": round(time.perf_counter() - t0, 3),
        "chunks_embedded": report.chunks_embedded,
        "chunks_reused": report.chunks_reused,
    }
    write_marker(data_dir, info)
    log(f"base collection built in {info['build_seconds']} s")
    return {**info, "cached": False}


def build_grown(
    data_dir: Path,
    base_dir: Path,
    base: dict[str, Any],
    extra: list[ParsedSource],
    embedder: Embedder,
    fresh: bool,
) -> dict[str, Any]:
    """The base database copied and grown with `extra` (copies of its sources; vectors reused)."""
    digest = f"{base['digest']}+{collection_digest(extra)}"
    marker = read_marker(data_dir)
    if not fresh and not base.get("rebuilt") and marker and marker.get("digest") == digest:
        log(f"grown collection cached at {data_dir} ({marker['chunks']} chunks)")
        return {**marker, "cached": True}
    shutil.rmtree(data_dir, ignore_errors=True)
    copy_database(base_dir / "index.sqlite", data_dir / "index.sqlite")
    log(f"growing a copy of the base by {len(extra)} sources, {chunk_count(extra)} chunks")
    t0 = time.perf_counter()
    embedded = reused = 0
    with Engine(settings_for(data_dir), embedder=embedder) as e:
        for i in range(0, len(extra), WRITE_BATCH):
            report = e.indexer.index_many(extra[i : i + WRITE_BATCH])
            embedded += report.chunks_embedded
            reused += report.chunks_reused
        status = e.status()
    seconds = time.perf_counter() - t0
    info = {
        "digest": digest,
        "version": COLLECTION_VERSION,
        "sources": status["sources"],
        "chunks": status["chunks"],
        "grow_seconds": round(seconds, 3),
        "grow_chunks_written_per_s": round(chunk_count(extra) / seconds, 1) if seconds else None,
        "chunks_embedded": embedded,
        "chunks_reused": reused,
    }
    write_marker(data_dir, info)
    log(f"grown collection built in {seconds:.1f} s")
    return {**info, "cached": False}


def measure(data_dir: Path, embedder: Embedder, queries: list[str], warmup: int, k: int) -> dict[str, Any]:
    with Engine(settings_for(data_dir), embedder=embedder) as e:
        searcher = e.searcher
        t0 = time.perf_counter()
        searcher.vectors.refresh()  # the matrix loads once per process; reported, not in the latencies
        load_s = time.perf_counter() - t0
        for q in queries[:warmup]:
            for mode in MODES:
                e.search(q, k, mode)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        cached: dict[str, list[float]] = {"semantic": [], "hybrid": []}
        hits: dict[str, int] = dict.fromkeys(MODES, 0)
        embed_times: list[float] = []
        for i, q in enumerate(queries):
            order = MODES[i % 3 :] + MODES[: i % 3]
            for mode in order:
                searcher.queries = QueryCache(embedder)  # a new query: its vector is not cached
                t0 = time.perf_counter()
                res = e.search(q, k, mode)
                times[mode].append(time.perf_counter() - t0)
                hits[mode] += len(res)
                if mode in cached:  # again, its vector now cached: the retrieval cost without the model
                    t0 = time.perf_counter()
                    e.search(q, k, mode)
                    cached[mode].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            embedder.embed_query(q)
            embed_times.append(time.perf_counter() - t0)
        status = e.status()
        return {
            "chunks": status["chunks"],
            "sources": status["sources"],
            "matrix_rows": len(searcher.vectors),
            "matrix_load_seconds": round(load_s, 3),
            "modes": {
                m: {**latency_summary(times[m]), "mean_results": round(hits[m] / len(queries), 2)}
                for m in MODES
            },
            "query_embedding": latency_summary(embed_times),
            "cached_query_vector": {m: latency_summary(v) for m, v in cached.items()},
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(set(args.sizes))
    embedder = shared_embedder()
    warm_up(embedder)
    counter = embedder.counter
    log(f"collecting about {sizes[0]} chunks of real sources")
    sources = real_sources(sizes[0], counter)
    base_n = chunk_count(sources)
    base_dir = CACHE_DIR / f"search-base-{sizes[0]}"
    base = build_base(base_dir, sources, embedder, args.fresh)
    base["rebuilt"] = not base["cached"]
    queries = load_queries(args.queries)
    log(f"{len(queries)} queries, {args.warmup} warm-up")

    tiers: list[dict[str, Any]] = []
    for size in sizes:
        if size == sizes[0]:
            data_dir, built = base_dir, {k: v for k, v in base.items() if k != "rebuilt"}
        else:
            data_dir = CACHE_DIR / f"search-{size}-from-{sizes[0]}"
            extra = copies(sources, size, base_n)
            built = build_grown(data_dir, base_dir, base, extra, embedder, args.fresh)
        log(f"measuring at {built['chunks']} chunks")
        m = measure(data_dir, embedder, queries, args.warmup, args.k)
        tiers.append({"target_chunks": size, "collection": built, **m})
        log(
            "  "
            + ", ".join(
                f"{mode} p50 {m['modes'][mode]['p50_ms']} p99 {m['modes'][mode]['p99_ms']} ms"
                for mode in MODES
            )
        )

    largest = tiers[-1]
    hybrid_p99 = largest["modes"]["hybrid"]["p99_ms"]
    return {
        "settings": {
            "sizes": sizes,
            "queries": len(queries),
            "warmup": args.warmup,
            "k": args.k,
            "candidates": settings_for(base_dir).search.candidates,
            "model": embedder.model_id,
            "query_cache": "emptied before every timed search",
        },
        "tiers": tiers,
        "goal_hybrid_p99_ms_at_largest": {**goal(hybrid_p99, "<=", 60.0), "chunks": largest["chunks"]},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000], help="collection sizes in chunks"
    )
    p.add_argument("--queries", type=int, default=400, help="how many queries (0: all 832)")
    p.add_argument("--warmup", type=int, default=20, help="queries run per mode before timing")
    p.add_argument("--k", type=int, default=10)
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [500, 5000]
        args.queries = min(args.queries, 60)
        args.warmup = min(args.warmup, 5)
    args.queries = args.queries or None
    emit("search_latency", run(args), args.out)


if __name__ == "__main__":
    main()
