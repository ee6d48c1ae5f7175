"""Retrieval quality: BEIR-format benchmarks (nDCG@10, recall@100, MRR@10) and vault question sets.

Formats are those of `shared/eval/README.md`: BEIR corpus/queries JSONL with a qrels TSV, and question
lines with `question`, `relevant` note paths and a `kind`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .config import Settings
from .engine import Engine
from .extract import answer_words
from .indexer import Indexer, IndexReport, ProgressFn
from .notes import parse_text
from .notes.model import SourceError


class EvalError(ValueError):
    """An evaluation input that cannot be read; the message names the file and line."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise EvalError(f"{path}:{n}: not a JSON line ({e.msg})") from e
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e.strerror}") from e
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and parts[0] == "query-id":
                continue
            if len(parts) < 3:
                if line.strip():
                    raise EvalError(f"{path}:{n}: expected query-id<TAB>corpus-id<TAB>score")
                continue
            qrels[parts[0]][parts[1]] = int(parts[2])
    return dict(qrels)


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mrr_at(ranked: list[str], relevant: Iterable[str], k: int = 10) -> float:
    rel = set(relevant)
    for i, d in enumerate(ranked[:k]):
        if d in rel:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked: list[str], relevant: Iterable[str], k: int = 100) -> float:
    rel = {d for d in relevant}
    return len(rel & set(ranked[:k])) / len(rel) if rel else 0.0


def _unique_paths(results: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(r.path for r in results))


def eval_index_dir(settings: Settings, name: str, key: str) -> Path:
    """A data dir of its own per evaluated collection, so repeated runs re-embed nothing."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return settings.data_dir / "eval" / f"{name}-{digest}"


def index_beir_corpus(engine: Engine, corpus: Path, progress: ProgressFn | None = None) -> IndexReport:
    """Index a BEIR corpus: each document becomes a source named by its `_id`."""
    docs = _read_jsonl(corpus)
    indexer: Indexer = engine.indexer
    have = engine.store.source_states(kinds=("note",))
    report = IndexReport()
    todo = []
    for d in docs:
        doc_id = str(d.get("_id", ""))
        body = str(d.get("text") or "")
        digest = hashlib.sha256((str(d.get("title", "")) + "\0" + body).encode()).hexdigest()
        if doc_id in have and have[doc_id].content_hash == digest:
            report.unchanged += 1
            continue
        try:
            parsed = parse_text(body, doc_id, str(d.get("title") or doc_id), "note", engine.embedder.counter)
        except SourceError as e:
            report.failed.append({"path": doc_id, "error": str(e)})
            continue
        parsed.content_hash = digest
        todo.append(parsed)
    sub = indexer.index_many(todo, progress)
    report.indexed, report.chunks_embedded = sub.indexed, sub.chunks_embedded
    return report


def eval_beir(
    engine: Engine,
    queries: Path,
    qrels: Path,
    mode: str = "hybrid",
    on_query: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    qrel = read_qrels(qrels)
    qs = [q for q in _read_jsonl(queries) if str(q.get("_id")) in qrel]
    if not qs:
        raise EvalError(f"no query in {queries} has judgements in {qrels}")
    ndcg = recall = mrr = 0.0
    for i, q in enumerate(qs):
        rels = qrel[str(q["_id"])]
        ranked = _unique_paths(engine.search(str(q["text"]), k=300, mode=mode))[:100]
        positive = [d for d, s in rels.items() if s > 0]
        ndcg += ndcg_at(ranked, rels, 10)
        recall += recall_at(ranked, positive, 100)
        mrr += mrr_at(ranked, positive, 10)
        if on_query:
            on_query(i + 1, len(qs))
    n = len(qs)
    return {
        "mode": mode,
        "queries": n,
        "ndcg@10": round(ndcg / n, 4),
        "recall@100": round(recall / n, 4),
        "mrr@10": round(mrr / n, 4),
    }


def eval_questions(
    engine: Engine, questions: Path, mode: str = "hybrid", answers: bool = False
) -> dict[str, Any]:
    """hit@5 and MRR@10 of the relevant note paths over the answerable questions, overall and per kind;
    with `answers`, also `answer_ok` (the answer holds every answer keyword and cites a relevant note)
    and `declined_ok` (a negative question is declined), overall and per kind, with timings."""
    rows = _read_jsonl(questions)
    per_kind: dict[str, list[tuple[float, float]]] = defaultdict(list)
    overall: list[tuple[float, float]] = []
    misses = []
    for n, q in enumerate(rows, 1):
        if "question" not in q or "relevant" not in q:
            raise EvalError(f"{questions}:{n}: needs 'question' and 'relevant'")
        relevant = list(q["relevant"])
        if not relevant:
            continue
        ranked = _unique_paths(engine.search(str(q["question"]), k=50, mode=mode))
        hit = 1.0 if set(ranked[:5]) & set(relevant) else 0.0
        mrr = mrr_at(ranked, relevant, 10)
        overall.append((hit, mrr))
        per_kind[str(q.get("kind", "unknown"))].append((hit, mrr))
        if not hit:
            misses.append(
                {"id": q.get("id"), "question": q["question"], "top": ranked[:5], "relevant": relevant}
            )

    def summary(xs: list[tuple[float, float]]) -> dict[str, Any]:
        if not xs:
            return {"questions": 0, "hit@5": 0.0, "mrr@10": 0.0}
        return {
            "questions": len(xs),
            "hit@5": round(sum(h for h, _ in xs) / len(xs), 4),
            "mrr@10": round(sum(m for _, m in xs) / len(xs), 4),
        }

    result: dict[str, Any] = {
        "mode": mode,
        **summary(overall),
        "per_kind": {k: summary(v) for k, v in sorted(per_kind.items())},
        "misses": misses,
    }
    if answers:
        result.update(_eval_answers(engine, rows, mode, result["per_kind"]))
    return result


def _eval_answers(
    engine: Engine, rows: list[dict[str, Any]], mode: str, per_kind: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    from .answer import Answerer

    # No cache: every question is answered for real, so the timings are those of a first ask.
    answerer = Answerer(engine.searcher, engine.settings.llm, answer=engine.settings.answer)
    ok: dict[str, list[float]] = defaultdict(list)
    first: list[float] = []
    total: list[float] = []
    listed = []
    for q in rows:
        kind = str(q.get("kind", "unknown"))
        answer = answerer.ask(str(q["question"]), mode=mode)
        first.append(answer.timings.get("first_token_ms", 0.0))
        total.append(answer.timings.get("total_ms", 0.0))
        relevant = set(q["relevant"])
        text = answer.text.lower()
        missing = [str(w) for w in q.get("answer_keywords", []) if str(w).lower() not in text]
        cites = any(c.path in relevant for c in answer.citations)
        if relevant:
            good = not missing and cites and not answer.declined
            why = (
                "declined" if answer.declined
                else "; ".join(filter(None, [
                    f"missing keywords: {', '.join(missing)}" if missing else "",
                    "cites no relevant note" if not cites else "",
                ])) or "ok"
            )  # fmt: skip
        else:
            good = answer.declined
            why = "ok" if good else "answered a question the notes do not cover"
        ok[kind].append(1.0 if good else 0.0)
        listed.append(
            {"id": q.get("id"), "kind": kind, "question": q["question"], "ok": good, "verdict": why,
             "mode": answer.mode, "text": answer.text, "words": answer_words(answer.text),
             "cited": [{"path": c.path, "heading_path": c.heading_path, "link": c.link}
                       for c in answer.citations],
             "relevant": sorted(relevant), "evidence": answer.evidence,
             "total_ms": answer.timings.get("total_ms", 0.0)}
        )  # fmt: skip
    answerable = [x for k, xs in ok.items() if k != "negative" for x in xs]
    negative = ok.get("negative", [])
    for kind, xs in ok.items():
        key = "declined_ok" if kind == "negative" else "answer_ok"
        per_kind.setdefault(kind, {"questions": len(xs)})[key] = round(sum(xs) / len(xs), 4)

    def pct(xs: list[float], p: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else 0.0

    return {
        "answer_ok": round(sum(answerable) / len(answerable), 4) if answerable else 0.0,
        "declined_ok": round(sum(negative) / len(negative), 4) if negative else 0.0,
        "answers": {
            "provider": answerer.provider,
            "model": answerer.model_name,
            "questions": len(answerable) + len(negative),
            "first_token_ms": {"p50": pct(first, 0.5), "p90": pct(first, 0.9)},
            "total_ms": {
                "p50": pct(total, 0.5),
                "p90": pct(total, 0.9),
                "mean": round(sum(total) / len(total), 1),
            },
            "words": {
                "p50": pct([float(x["words"]) for x in listed], 0.5),
                "max": max((x["words"] for x in listed), default=0),
            },
        },
        "questions_answered": listed,
    }
