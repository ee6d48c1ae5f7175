"""A peer comparison with ChromaDB: indexing throughput and semantic query latency on the same chunks.

Both sides get the same chunks (the first `--limit` chunks of the ~10k search collection, deduplicated
by hash) and embed them with the same model: Chroma through an EmbeddingFunction that calls our
LocalEmbedder. Ours is `Indexer.index_many` into a fresh data dir (chunks, FTS, vectors in SQLite);
Chroma's is `collection.add` in its largest batches into a fresh PersistentClient (cosine HNSW).
Queries are the same (semantic only: Chroma has no bm25 fusion), both embedding the query per call
(our query-vector cache is emptied before each search); ours and Chroma's calls are interleaved.

Ratios are ours/theirs: chunks/s above 1 means we index faster; latency below 1 means we answer faster.

Usage: python bench/chroma_peer.py [--limit 3000] [--queries 400] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    CACHE_DIR,
    add_common_args,
    emit,
    latency_summary,
    load_queries,
    log,
    real_sources,
    settings_for,
    shared_embedder,
    unique_texts,
    warm_up,
)
from obsidian_ai_agent.embeddings import Embedder, QueryCache
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.notes import ParsedSource

COLLECTION_CHUNKS = 10_000  # the search benchmark's base collection, whose chunks are taken in order


def make_embedding_function(embedder: Embedder) -> Any:
    """A chromadb EmbeddingFunction calling the same model our indexer uses (normalised vectors)."""
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

    class SharedModelEmbedding(EmbeddingFunction[Documents]):
        def __init__(self, emb: Embedder) -> None:
            self.emb = emb

        def __call__(self, input: Documents) -> Embeddings:
            return list(self.emb.embed(list(input)))

        @staticmethod
        def name() -> str:
            return "obsidian-ai-agent-bench"

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> SharedModelEmbedding:
            raise NotImplementedError("built in-process only")

        def default_space(self) -> Any:
            return "cosine"

    return SharedModelEmbedding(embedder)


def select(sources: list[ParsedSource], limit: int) -> tuple[list[ParsedSource], dict[str, str]]:
    """Whole sources, in order, until `limit` distinct chunk texts; the last one is cut to fit."""
    chosen: list[ParsedSource] = []
    seen: dict[str, str] = {}
    for s in sources:
        if len(seen) >= limit:
            break
        new = unique_texts([s])
        if len(seen) + len({h for h in new if h not in seen}) > limit:
            keep, room = [], limit - len(seen)
            for c in s.chunks:
                if c.hash in seen or room > 0:
                    room -= c.hash not in seen
                    keep.append(c)
                    seen.setdefault(c.hash, c.embed_text)
            if keep:
                chosen.append(dataclasses.replace(s, chunks=keep))
            break
        chosen.append(s)
        for h, t in new.items():
            seen.setdefault(h, t)
    return chosen, seen


def run(args: argparse.Namespace) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    embedder = shared_embedder()
    warm_up(embedder)
    # the collection is built in a fixed order, so its first `limit` chunks are those of a smaller build
    sources = real_sources(min(COLLECTION_CHUNKS, args.limit), embedder.counter)
    chosen, texts = select(sources, args.limit)
    log(f"{len(texts)} chunks from {len(chosen)} sources")
    queries = load_queries(args.queries)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="peer-", dir=CACHE_DIR) as tmp:
        ours_dir, chroma_dir = Path(tmp) / "ours", Path(tmp) / "chroma"

        log("ours: indexing")
        load = [os.getloadavg()[0]]
        t0 = time.perf_counter()
        with Engine(settings_for(ours_dir), embedder=embedder) as e:
            report = e.indexer.index_many(chosen)
        ours_s = time.perf_counter() - t0
        log(f"ours: {report.chunks_embedded} chunks embedded in {ours_s:.1f} s")

        load.append(os.getloadavg()[0])
        log("chroma: indexing")
        ids = list(texts)
        meta_of = {c.hash: {"path": s.path, "title": s.title} for s in chosen for c in s.chunks}
        t0 = time.perf_counter()
        client = chromadb.PersistentClient(
            path=str(chroma_dir), settings=ChromaSettings(anonymized_telemetry=False)
        )
        col = client.create_collection(
            "bench", embedding_function=make_embedding_function(embedder), metadata={"hnsw:space": "cosine"}
        )
        step = client.get_max_batch_size()
        for i in range(0, len(ids), step):
            part = ids[i : i + step]
            col.add(ids=part, documents=[texts[h] for h in part], metadatas=[meta_of[h] for h in part])
        chroma_s = time.perf_counter() - t0
        chroma_count = col.count()
        load.append(os.getloadavg()[0])
        log(f"chroma: {chroma_count} chunks in {chroma_s:.1f} s")

        log(f"querying: {len(queries)} queries, {args.warmup} warm-up, k={args.k}")
        hash_of = {(s.path, c.text): c.hash for s in chosen for c in s.chunks}
        ours_t: list[float] = []
        theirs_t: list[float] = []
        ours_r: list[float] = []
        theirs_r: list[float] = []
        same_top1 = 0
        secs, top = 0.0, None
        with Engine(settings_for(ours_dir), embedder=embedder) as e:
            searcher = e.searcher
            for q in queries[: args.warmup]:
                e.search(q, args.k, "semantic")
                col.query(query_texts=[q], n_results=args.k)
            for i, q in enumerate(queries):
                ours_first = i % 2 == 0
                if not ours_first:
                    secs, top = _timed_chroma(col, q, args.k)
                searcher.queries = QueryCache(embedder)  # a new query: its vector is not cached
                t0 = time.perf_counter()
                res = e.search(q, args.k, "semantic")
                ours_t.append(time.perf_counter() - t0)
                if ours_first:
                    secs, top = _timed_chroma(col, q, args.k)
                theirs_t.append(secs)
                # the same search with the query vector given: the stores' own cost, without the model
                vec = searcher.queries.get(q)  # cached by the search above
                t0 = time.perf_counter()
                e.search(q, args.k, "semantic")
                ours_r.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                col.query(query_embeddings=[vec.tolist()], n_results=args.k)
                theirs_r.append(time.perf_counter() - t0)
                # both search the same vectors exactly or approximately: their best chunk should agree
                if res and top is not None:
                    row = e.store.chunks([res[0].chunk_id]).get(res[0].chunk_id)
                    same_top1 += row is not None and hash_of.get((row.path, row.text)) == top
        del col, client

    ours_rate = report.chunks_embedded / ours_s if ours_s else 0.0
    theirs_rate = chroma_count / chroma_s if chroma_s else 0.0
    ours_lat, theirs_lat = latency_summary(ours_t), latency_summary(theirs_t)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "settings": {
            "limit": args.limit,
            "chunks": len(texts),
            "sources": len(chosen),
            "queries": len(queries),
            "warmup": args.warmup,
            "k": args.k,
            "model": embedder.model_id,
            "chromadb": chromadb.__version__,
            "note": "both sides embed with the same model in this process; semantic search only",
            "load_1min_before_ours_between_after_chroma": [round(x, 2) for x in load],
        },
        "ours": {
            "index_seconds": round(ours_s, 3),
            "chunks_embedded": report.chunks_embedded,
            "chunks_per_s": round(ours_rate, 2),
            "semantic": ours_lat,
            "semantic_given_vector": latency_summary(ours_r),
        },
        "chroma": {
            "index_seconds": round(chroma_s, 3),
            "chunks": chroma_count,
            "chunks_per_s": round(theirs_rate, 2),
            "semantic": theirs_lat,
            "semantic_given_vector": latency_summary(theirs_r),
        },
        "ratios_ours_over_chroma": {
            "index_chunks_per_s": ratio(ours_rate, theirs_rate),
            "query_p50": ratio(ours_lat["p50_ms"], theirs_lat["p50_ms"]),
            "query_p99": ratio(ours_lat["p99_ms"], theirs_lat["p99_ms"]),
            "query_given_vector_p50": ratio(
                latency_summary(ours_r)["p50_ms"], latency_summary(theirs_r)["p50_ms"]
            ),
            "query_given_vector_p99": ratio(
                latency_summary(ours_r)["p99_ms"], latency_summary(theirs_r)["p99_ms"]
            ),
        },
        "same_top1_chunk": {
            "queries": len(queries),
            "same": same_top1,
            "rate": round(same_top1 / len(queries), 3) if queries else None,
        },
    }


def _timed_chroma(col: Any, query: str, k: int) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    ans = col.query(query_texts=[query], n_results=k)
    secs = time.perf_counter() - t0
    top = (ans.get("ids") or [[]])[0]
    return secs, (str(top[0]) if top else None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--limit", type=int, default=3000, help="chunks indexed by each side (of the ~10k collection)"
    )
    p.add_argument("--queries", type=int, default=400, help="how many queries (0: all)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.limit = min(args.limit, 300)
        args.queries = min(args.queries, 60)
        args.warmup = min(args.warmup, 5)
    args.queries = args.queries or None
    emit("chroma_peer", run(args), args.out)


if __name__ == "__main__":
    main()
