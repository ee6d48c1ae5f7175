"""Extractive answer latency over the dev questions, warm: the model loaded and the index in memory, no
answer cache (every question is answered for real). The sentence vectors kept in the index are cleared
first, so the first pass embeds every sentence unit it scores; the second finds them in memory, as a
running service would for notes asked about before; the third is a fresh answerer (another worker, or
the service after a restart) that finds them in the index. Last, the vectors are cleared again and
prepared for every chunk as the `answer_vectors` job does after indexing (timed), and a fresh answerer
asks the questions.

Usage: python bench/answer_latency.py [--passes 2] [--out FILE]
Goal (issue 8): p50 <= 150 ms.
"""

from __future__ import annotations

import argparse
import json
import time

from common import (
    CACHE_DIR,
    SHARED,
    add_common_args,
    emit,
    goal,
    latency_summary,
    log,
    settings_for,
    shared_embedder,
    warm_up,
)
from obsidian_ai_agent.answer import Answerer
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.store import unitvectors

VAULT = SHARED / "corpora" / "obsidian-tasks" / "docs_vault"
QUESTIONS = SHARED / "eval" / "vault_questions_dev.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text("utf-8").splitlines() if line]
    embedder = shared_embedder()
    warm_s = warm_up(embedder)
    data = CACHE_DIR / "answer-latency"
    settings = settings_for(data)
    with Engine(settings, embedder=embedder) as engine:
        log("indexing the docs vault (nothing is embedded when it is unchanged)")
        engine.index(VAULT)
        answerer = Answerer(engine.searcher, settings.llm, answer=settings.answer)
        answerer.ask("warm-up question about recurring tasks")  # vectors and FTS pages in memory
        log(f"cleared {unitvectors.clear(engine.store)} kept sentence vectors")
        passes = []
        for n in range(args.passes + 1):
            kind = "fresh" if n == 0 else "memory" if n < args.passes else "index (new answerer)"
            if n == args.passes:
                answerer = Answerer(engine.searcher, settings.llm, answer=settings.answer)
            seconds, declined = [], 0
            for q in questions:
                t0 = time.perf_counter()
                a = answerer.ask(q)
                seconds.append(time.perf_counter() - t0)
                declined += a.declined
            summary = latency_summary(seconds)
            passes.append({"pass": n + 1, "sentence_vectors": kind, **summary, "declined": declined})
            log(f"pass {n + 1} ({kind}): p50 {passes[-1]['p50_ms']} ms")
        # What the service does after indexing (`answer.prepare_unit_vectors`, the `answer_vectors` job):
        # every chunk's sentences embedded ahead of the questions; then a fresh answerer asks.
        unitvectors.clear(engine.store)
        t0 = time.perf_counter()
        prepared = Answerer(engine.searcher, settings.llm, answer=settings.answer).prepare_unit_vectors()
        prepare_s = time.perf_counter() - t0
        log(f"prepared {prepared['units']} units of {prepared['chunks']} chunks in {prepare_s:.1f} s")
        answerer = Answerer(engine.searcher, settings.llm, answer=settings.answer)
        seconds = []
        for q in questions:
            t0 = time.perf_counter()
            answerer.ask(q)
            seconds.append(time.perf_counter() - t0)
        passes.append({"pass": len(passes) + 1, "sentence_vectors": "prepared (answer_vectors job)",
                       **latency_summary(seconds)})  # fmt: skip
        log(f"pass {len(passes)} (prepared): p50 {passes[-1]['p50_ms']} ms")
    result = {
        "questions": len(questions),
        "provider": "extractive",
        "model_load_s": round(warm_s, 2),
        "passes": passes,
        "prepare": {
            "chunks": prepared["chunks"],
            "units": prepared["units"],
            "seconds": round(prepare_s, 1),
            "units_per_s": round(prepared["units"] / prepare_s, 1) if prepare_s else None,
        },
        "goal_p50_ms_first_pass": goal(passes[0]["p50_ms"], "<=", 150),
        "goal_p50_ms_prepared": goal(passes[-1]["p50_ms"], "<=", 150),
    }
    emit("answer_latency", result, args.out)


if __name__ == "__main__":
    main()
