"""ETA accuracy and job-machinery overhead, on a real vault with the real model.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/jobs_eta.py [VAULT] [--subset N]

1. Reindexes VAULT (default: the shared vaultofknowledge) into a fresh store as a `reindex` job and
   records the job's ETA when 10 %, 50 % and 90 % of the source bytes are done; compares the predicted
   finish with the actual one. Prints `jobs stats` for that run.
2. Overhead: the first N notes (default 200) indexed by a plain `Indexer.index_vault` loop and by the job
   path, each into a fresh store, same embedder; and an unchanged re-scan of the whole vault both ways
   (no embedding: the machinery's own cost shows).
Prints one JSON object per measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from obsidian_ai_agent import jobs
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.embeddings import LocalEmbedder
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.indexer import Progress
from obsidian_ai_agent.notes import scan_vault

DEFAULT_VAULT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "vaultofknowledge"


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def eta_run(vault: Path, base: Path, embedder: LocalEmbedder) -> None:
    with Engine(load_settings(data_dir=base / "eta"), embedder=embedder) as engine:
        job_id = jobs.submit_reindex(engine, vault)
        started = time.time()
        marks = [0.10, 0.50, 0.90]
        seen: list[dict[str, Any]] = []

        def listen(p: Progress) -> None:
            if not marks or not p.bytes_total:
                return
            frac = p.bytes_done / p.bytes_total
            if frac >= marks[0]:
                row = engine.jobs.get(job_id)
                seen.append(
                    {
                        "mark": marks.pop(0),
                        "bytes_fraction": round(frac, 3),
                        "at": time.time(),
                        "eta_at": row.eta_at if row else None,
                    }
                )

        job = jobs.run(engine, job_id, progress=listen)
        finished = job.finished_at or time.time()
        total = finished - started
        for s in seen:
            actual_left = finished - s["at"]
            predicted_left = (s["eta_at"] - s["at"]) if s["eta_at"] else None
            emit(
                {
                    "measure": "eta",
                    "mark": s["mark"],
                    "elapsed_fraction": round((s["at"] - started) / total, 3),
                    "predicted_remaining_s": round(predicted_left, 1) if predicted_left is not None else None,
                    "actual_remaining_s": round(actual_left, 1),
                    "finish_error_s": round(predicted_left - actual_left, 1)
                    if predicted_left is not None
                    else None,
                    "finish_error_of_total": round((predicted_left - actual_left) / total, 3)
                    if predicted_left is not None
                    else None,
                }
            )
        emit(
            {
                "measure": "reindex",
                "job": job.id,
                "status": job.status,
                "seconds": round(total, 1),
                "result": {k: v for k, v in (job.result or {}).items() if k not in ("warnings", "failed")},
                "failed": len((job.result or {}).get("failed", [])),
            }
        )
        emit({"measure": "jobs_stats", **jobs.job_stats(engine.jobs)})


def overhead(vault: Path, base: Path, embedder: LocalEmbedder, n: int) -> None:
    subset = base / "subset"
    for f in scan_vault(vault)[:n]:
        dst = subset / f.rel_path
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f.abs_path, dst)
    timings: dict[str, float] = {}
    for how in ("plain", "job", "plain2", "job2"):
        data = base / f"over-{how}"
        with Engine(load_settings(data_dir=data), embedder=embedder) as engine:
            t0 = time.perf_counter()
            if how.startswith("plain"):
                engine.index(subset)
            else:
                jobs.run(engine, jobs.submit_reindex(engine, subset))
            timings[how] = time.perf_counter() - t0
    plain = timings["plain"] + timings["plain2"]
    job = timings["job"] + timings["job2"]
    emit(
        {
            "measure": "overhead_embedding",
            "notes": n,
            **{k: round(v, 2) for k, v in timings.items()},
            "job_over_plain": round(job / plain, 3),
        }
    )
    # The unchanged whole vault, both ways: scan and bookkeeping only.
    data = base / "eta"
    with Engine(load_settings(data_dir=data), embedder=embedder) as engine:
        rounds = {"plain": [], "job": []}  # type: dict[str, list[float]]
        for _ in range(3):
            for how in ("plain", "job"):
                t0 = time.perf_counter()
                if how == "plain":
                    engine.index(vault)
                else:
                    jobs.run(engine, jobs.submit_reindex(engine, vault))
                rounds[how].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in rounds.items()}
    emit(
        {
            "measure": "overhead_unchanged_rescan",
            "plain_s": round(best["plain"], 3),
            "job_s": round(best["job"], 3),
            "job_minus_plain_s": round(best["job"] - best["plain"], 3),
        }
    )


def main() -> None:
    args = sys.argv[1:]
    n = 200
    if "--subset" in args:
        i = args.index("--subset")
        n = int(args[i + 1])
        del args[i : i + 2]
    vault = Path(args[0]) if args else DEFAULT_VAULT
    embedder = LocalEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        eta_run(vault, base, embedder)
        overhead(vault, base, embedder, n)


if __name__ == "__main__":
    main()
