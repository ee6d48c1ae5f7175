"""The query encoder on single short inputs: torch (sentence-transformers) against ONNX Runtime.

Both run the packaged all-MiniLM-L6-v2 in this process: torch as indexing runs it (`SentenceTransformer
.encode` of one text), ONNX Runtime as queries now run (`onnx_encoder.OnnxEncoder`, the graph exported
from the same weights). For each thread count (`--threads`, default 1 and 2), every query is encoded
once by each runtime, the two interleaved per query, after a warm-up. Reported per runtime: p50/p95/p99,
and the cosine between the two vectors of each query (min and mean): the vectors must stay
interchangeable with an index built by torch. A batch of 64 SciFact abstracts (256 tokens) is timed too,
which is why indexing stays on torch.

Usage: python bench/query_encoder.py [--queries 400] [--threads 1 2] [--quick] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import SCIFACT_CORPUS, add_common_args, emit, goal, latency_summary, load_queries, log
from obsidian_ai_agent import onnx_encoder
from obsidian_ai_agent.embeddings import LocalEmbedder


def run_threads(threads: int, queries: list[str], abstracts: list[str], cache: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    emb = LocalEmbedder(runtime="torch")
    st = emb.model
    ort = onnx_encoder.load_cached(emb.path, emb.model_id, cache, emb.max_tokens, threads)
    if ort is None:
        ort = onnx_encoder.export(st, emb.path, emb.model_id, cache, emb.max_tokens, threads)

    def by_torch(q: str) -> np.ndarray:
        return np.asarray(st.encode([q], normalize_embeddings=True, show_progress_bar=False))[0]

    def by_ort(q: str) -> np.ndarray:
        return ort.encode([q])[0]

    for q in queries[:20]:
        by_torch(q), by_ort(q)
    torch_t: list[float] = []
    ort_t: list[float] = []
    torch_v, ort_v = [], []
    for i, q in enumerate(queries):  # interleaved, the order swapped every other query
        pair = ((by_torch, torch_t, torch_v), (by_ort, ort_t, ort_v))
        for fn, times, vecs in pair if i % 2 == 0 else reversed(pair):
            t0 = time.perf_counter()
            vecs.append(fn(q))
            times.append(time.perf_counter() - t0)
    cos = (np.vstack(torch_v) * np.vstack(ort_v)).sum(axis=1)

    t0 = time.perf_counter()
    st.encode(abstracts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    torch_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    order = sorted(range(len(abstracts)), key=lambda i: len(abstracts[i]))
    for i in range(0, len(order), 32):
        ort.encode([abstracts[j] for j in order[i : i + 32]])
    ort_batch = time.perf_counter() - t0
    torch_s, ort_s = latency_summary(torch_t), latency_summary(ort_t)
    return {
        "threads": threads,
        "torch": torch_s,
        "onnxruntime": ort_s,
        "ratio_p99_ort_over_torch": round(ort_s["p99_ms"] / torch_s["p99_ms"], 3),
        "cosine_min": round(float(cos.min()), 7),
        "cosine_mean": round(float(cos.mean()), 7),
        "batch_256_tokens_chunks_per_s": {
            "torch": round(len(abstracts) / torch_batch, 1),
            "onnxruntime": round(len(abstracts) / ort_batch, 1),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--queries", type=int, default=400)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    if args.quick:
        args.queries = 60
    queries = load_queries(args.queries)
    with open(SCIFACT_CORPUS, encoding="utf-8") as f:
        abstracts = [
            json.loads(line)["text"] for line, _ in zip(f, range(16 if args.quick else 64), strict=False)
        ]
    load = [os.getloadavg()[0]]
    runs = []
    with tempfile.TemporaryDirectory(prefix="onnx-") as cache:
        for n in args.threads:
            log(f"{len(queries)} queries, {n} thread(s) ...")
            runs.append(run_threads(n, queries, abstracts, Path(cache)))
            load.append(os.getloadavg()[0])
    best = min(runs, key=lambda r: r["onnxruntime"]["p99_ms"])
    emit(
        "query_encoder",
        {
            "queries": len(queries),
            "runs": runs,
            "load_average_1m": [round(x, 2) for x in load],
            "goals": {
                "vectors_interchangeable_cosine_min": goal(
                    min(r["cosine_min"] for r in runs), ">=", onnx_encoder.MIN_COSINE
                ),
                "onnxruntime_p99_ms": goal(best["onnxruntime"]["p99_ms"], "<=", best["torch"]["p99_ms"]),
            },
        },
        args.out,
    )


if __name__ == "__main__":
    main()
