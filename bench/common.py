"""What the benchmark scripts share: paths, corpora, query sets, timing summaries and JSON output.

Every script prints one JSON object on stdout (progress goes to stderr) and, with `--out`, writes it to a
file too. Nothing here asserts a timing: goals are reported next to the figures, never enforced.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import dataclasses
import hashlib
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from obsidian_ai_agent.config import Settings, load_settings
from obsidian_ai_agent.embeddings import LocalEmbedder, get_embedder
from obsidian_ai_agent.notes import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    ParsedSource,
    SourceError,
    TokenCounter,
    parse_source,
    parse_text,
    scan_vault,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"

SHARED = Path(os.environ.get("OAA_BENCH_SHARED", "/work/shared"))
CORPORA = SHARED / "corpora"
VAULT_OF_KNOWLEDGE = CORPORA / "vaultofknowledge"
TASKS_VAULTS = (CORPORA / "obsidian-tasks" / "docs_vault", CORPORA / "obsidian-tasks" / "Tasks-Demo_vault")
SCIFACT_CORPUS = CORPORA / "scifact" / "corpus.jsonl"
SCIFACT_QUERIES = CORPORA / "scifact" / "queries_train.jsonl"
VAULT_QUESTIONS = SHARED / "eval" / "vault_questions_dev.jsonl"

# Bump when the way a collection is built changes, so cached data dirs are rebuilt.
COLLECTION_VERSION = 1

_LOAD_AT_START = os.getloadavg()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small settings, for a smoke run")
    parser.add_argument("--fresh", action="store_true", help="rebuild cached collections")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")


# -- settings and model --------------------------------------------------------------------------


def settings_for(data_dir: Path) -> Settings:
    """The library's defaults (plus any OAA_* environment) with this data dir."""
    return load_settings(data_dir=data_dir)


def shared_embedder() -> LocalEmbedder:
    """The embedder the library would build from the default settings, loaded once per process."""
    emb = get_embedder(load_settings(data_dir=CACHE_DIR / "unused").embedding)
    if not isinstance(emb, LocalEmbedder):
        raise SystemExit("the benchmarks measure the local model; unset OAA_EMBEDDING__PROVIDER")
    return emb


def warm_up(embedder: LocalEmbedder) -> float:
    """Load the model and run it once, so no measurement pays for loading; returns seconds spent."""
    t0 = time.perf_counter()
    texts = [
        f"warm-up sentence number {i} about notes, vaults and search" for i in range(embedder.batch_size)
    ]
    embedder.model.encode(texts, batch_size=embedder.batch_size, show_progress_bar=False)
    embedder.embed_query("warm-up query")
    return time.perf_counter() - t0


# -- corpora -------------------------------------------------------------------------------------


def vault_sources(root: Path, prefix: str, counter: TokenCounter) -> Iterator[ParsedSource]:
    """A vault's notes parsed as the indexer parses them, paths under `prefix/` (unparseable ones skipped)."""
    for f in scan_vault(root, list(DEFAULT_INCLUDE), list(DEFAULT_EXCLUDE)):
        try:
            yield parse_source(f.abs_path, f"{prefix}/{f.rel_path}" if prefix else f.rel_path, counter)
        except SourceError:
            continue


def scifact_sources(counter: TokenCounter, prefix: str = "scifact") -> Iterator[ParsedSource]:
    """SciFact documents as plain-text sources named `scifact/<_id>` (as `index_beir_corpus` parses them)."""
    with open(SCIFACT_CORPUS, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            doc_id = str(d.get("_id", ""))
            title = str(d.get("title") or doc_id)
            try:
                yield parse_text(str(d.get("text") or ""), f"{prefix}/{doc_id}", title, "note", counter)
            except SourceError:
                continue


def _round_robin(*its: Iterator[ParsedSource]) -> Iterator[ParsedSource]:
    live = list(its)
    while live:
        for it in list(live):
            try:
                yield next(it)
            except StopIteration:
                live.remove(it)


def real_sources(target_chunks: int, counter: TokenCounter) -> list[ParsedSource]:
    """Distinct real sources totalling about `target_chunks` chunks (never more than one source over).

    The obsidian-tasks vaults first (the vault questions are about them), then vaultofknowledge notes and
    SciFact documents taken in turn. Every source has its own path; no text is repeated on purpose.
    """
    out: list[ParsedSource] = []
    total = 0
    streams = [
        *(vault_sources(v, v.name, counter) for v in TASKS_VAULTS),
        _round_robin(
            vault_sources(VAULT_OF_KNOWLEDGE, VAULT_OF_KNOWLEDGE.name, counter), scifact_sources(counter)
        ),
    ]
    for stream in streams:
        for src in stream:
            if total >= target_chunks:
                return out
            out.append(src)
            total += len(src.chunks)
    return out


def copies(sources: Sequence[ParsedSource], target_chunks: int, have: int) -> list[ParsedSource]:
    """Copies of `sources` under `copy-NN/` prefixes until the collection reaches `target_chunks` chunks.

    A copy's chunks have the same text (so the same hashes: the store reuses their vectors, nothing is
    embedded), but each copy is a new source with its own rows in the chunk table, FTS index and matrix.
    """
    out: list[ParsedSource] = []
    n = 1
    while have < target_chunks:
        n += 1
        for src in sources:
            if have >= target_chunks:
                break
            out.append(dataclasses.replace(src, path=f"copy-{n:02d}/{src.path}"))
            have += len(src.chunks)
    return out


def chunk_count(sources: Iterable[ParsedSource]) -> int:
    return sum(len(s.chunks) for s in sources)


def unique_texts(sources: Iterable[ParsedSource]) -> dict[str, str]:
    """chunk hash -> embed_text, first occurrence order (what the indexer sends to the model)."""
    out: dict[str, str] = {}
    for s in sources:
        for c in s.chunks:
            out.setdefault(c.hash, c.embed_text)
    return out


def collection_digest(sources: Iterable[ParsedSource]) -> str:
    h = hashlib.sha256(f"v{COLLECTION_VERSION}".encode())
    for s in sources:
        h.update(s.path.encode())
        for c in s.chunks:
            h.update(c.hash.encode())
    return h.hexdigest()[:16]


def load_queries(limit: int | None) -> list[str]:
    """The vault questions, then SciFact train queries, up to `limit` in all (all of them when None)."""
    qs: list[str] = []
    for path, field in ((VAULT_QUESTIONS, "question"), (SCIFACT_QUERIES, "text")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    text = str(json.loads(line).get(field) or "").strip()
                    if text:
                        qs.append(text)
    qs = list(dict.fromkeys(qs))
    return qs[:limit] if limit is not None else qs


# -- cached data dirs ----------------------------------------------------------------------------


def read_marker(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / "bench-complete.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(data_dir: Path, info: dict[str, Any]) -> None:
    (data_dir / "bench-complete.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def copy_database(src: Path, dst: Path) -> None:
    """A consistent copy of an SQLite database (WAL included) through the backup API."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


# -- timing --------------------------------------------------------------------------------------


def percentile(sorted_xs: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    if not sorted_xs:
        return float("nan")
    pos = (len(sorted_xs) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "max_ms": round(ms[-1], 2) if ms else None,
    }


def goal(value: float | None, op: str, target: float) -> dict[str, Any]:
    """A goal stated next to its figure: `met` is informational, nothing fails on it."""
    met = None
    if value is not None:
        met = value >= target if op == ">=" else value <= target
    return {"target": f"{op} {target:g}", "value": value, "met": met}


def machine() -> dict[str, Any]:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", False
    import numpy
    import torch

    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in _LOAD_AT_START],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "git": rev + ("+dirty-src" if dirty else ""),
    }


def emit(name: str, result: dict[str, Any], out: Path | None) -> None:
    doc = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result}
    doc["machine"] = {**machine(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
