"""Answer sentences embedded ahead of the questions (`answer.prepare_unit_vectors`, the `answer_vectors`
job): queued once by indexing that embedded new text, resumable, and afterwards a first question about
those notes waits for no model."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from obsidian_ai_agent import jobs
from obsidian_ai_agent.answer import Answerer
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.jobs import handlers
from obsidian_ai_agent.jobs import runner as runner_module
from obsidian_ai_agent.jobs.runner import JobRunner
from obsidian_ai_agent.search import SEARCHES
from obsidian_ai_agent.store import unitvectors

from .conftest import CORPORA

NOTES = ("Manual Testing/Smoke Testing the Tasks Plugin.md", "Manual Testing/Dependencies Samples.md")


def _engine(tmp_path: Path, embedder: Any, prepare: bool) -> Engine:
    vault = tmp_path / "vault"
    for rel in NOTES:
        (vault / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPORA / "obsidian-tasks" / "Tasks-Demo_vault" / rel, vault / rel)
    settings = load_settings(data_dir=tmp_path / "data", vault=vault)
    settings = settings.model_copy(
        update={"answer": settings.answer.model_copy(update={"prepare_unit_vectors": prepare})}
    )
    return Engine(settings, embedder=embedder)


def _count_model_calls(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the calls the model gets to embed answer sentences, from now on."""
    calls: list[int] = []
    real = engine.embedder.embed_short

    def counted(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(engine.embedder, "embed_short", counted)
    return calls


@pytest.fixture
def engine(tmp_path: Path, embedder: Any) -> Iterator[Engine]:
    with _engine(tmp_path, embedder, prepare=True) as e:
        yield e


def test_indexing_that_embeds_new_text_queues_one_job_that_prepares_every_answer_sentence(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = engine.settings.vault
    assert vault is not None
    first = jobs.run(engine, jobs.submit_reindex(engine, vault))
    assert first.result is not None and first.result["chunks_embedded"] > 0
    queued = engine.jobs.recent(kind="answer_vectors")
    assert [j.status for j in queued] == ["queued"] and queued[0].lane == "bulk"
    jobs.run(engine, jobs.submit_reindex(engine, vault, full=True))  # nothing new embedded: no second job
    assert len(engine.jobs.recent(kind="answer_vectors")) == 1

    done = jobs.run(engine, queued[0].id)
    assert done.status == "succeeded" and done.result is not None
    assert done.result["chunks"] == engine.store.counts()["chunks"] and done.result["units"] > 0
    assert unitvectors.count(engine.store) > 0

    # A fresh answerer (another worker, or after a restart) asks: the model embeds no sentence.
    calls = _count_model_calls(engine, monkeypatch)
    answerer = Answerer(engine.searcher, engine.settings.llm, answer=engine.settings.answer)
    answer = answerer.ask("What is a smoke test?")
    assert "preliminary testing" in answer.text and calls == []


def test_preparing_resumes_above_the_last_chunk_it_reached(engine: Engine) -> None:
    vault = engine.settings.vault
    assert vault is not None
    engine.index(vault)
    answerer = engine.answerer
    last = max(unitvectors.chunk_ids_after(engine.store, 0, 10_000))
    seen: list[int] = []
    part = answerer.prepare_unit_vectors(0, check=seen.append, batch=5)
    assert seen and seen[-1] == last and seen == sorted(seen) and part["after"] == last
    assert answerer.prepare_unit_vectors(last) == {"chunks": 0, "units": 0, "after": last}
    assert answerer.prepare_unit_vectors() == {"chunks": 0, "units": 0, "after": last}  # where it ended
    (Path(str(engine.settings.vault)) / "New.md").write_text("# New\n\nA note written later.\n", "utf-8")
    engine.index(Path(str(engine.settings.vault)))
    again = answerer.prepare_unit_vectors()
    assert again["chunks"] == 1 and again["after"] > last  # only the new chunk


def test_with_the_setting_off_indexing_queues_nothing(tmp_path: Path, embedder: Any) -> None:
    with _engine(tmp_path, embedder, prepare=False) as engine:
        assert engine.settings.vault is not None
        done = jobs.run(engine, jobs.submit_reindex(engine, engine.settings.vault))
        assert done.result is not None and done.result["chunks_embedded"] > 0
        assert engine.jobs.recent(kind="answer_vectors") == []


def test_the_job_waits_between_batches_while_searches_run_but_a_steady_stream_cannot_stop_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = engine.settings.vault
    assert vault is not None
    jobs.run(engine, jobs.submit_reindex(engine, vault))
    [queued] = engine.jobs.recent(kind="answer_vectors")
    batches = _count_model_calls(engine, monkeypatch)
    monkeypatch.setattr(handlers, "ANSWER_VECTORS_BATCH", 2)
    monkeypatch.setattr(handlers, "ANSWER_VECTORS_PAUSE", 60.0)
    runner = threading.Thread(target=jobs.run, args=(engine, queued.id))
    with SEARCHES:  # a search is running in this process
        runner.start()
        time.sleep(2.0)
        assert len(batches) == 1  # one batch, then it waits for the search
    runner.join(timeout=60)
    assert not runner.is_alive() and len(batches) > 1
    finished = engine.jobs.get(queued.id)
    assert finished is not None and finished.status == "succeeded"

    # Searches that never stop slow the job to a batch per pause, but it still ends.
    unitvectors.clear(engine.store)
    monkeypatch.setattr(handlers, "ANSWER_VECTORS_PAUSE", 0.3)
    again = jobs.submit(engine, "answer_vectors", {"after": 0}, dedupe_key="answer_vectors-again")
    with SEARCHES:
        done = jobs.run(engine, again)
    assert done.status == "succeeded" and done.result is not None and done.result["chunks"] > 2


def test_the_job_gives_its_lane_to_a_job_queued_behind_it_and_resumes_after_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = engine.settings.vault
    assert vault is not None
    jobs.run(engine, jobs.submit_reindex(engine, vault))
    [queued] = engine.jobs.recent(kind="answer_vectors")
    monkeypatch.setattr(handlers, "ANSWER_VECTORS_BATCH", 2)
    monkeypatch.setattr(runner_module, "GIVE_WAY_DELAY", 0.3)
    behind = jobs.submit_reindex(engine, vault, full=True)  # e.g. what a person asked for, in the bulk lane
    worker = JobRunner(engine)

    first = worker.run_one()
    assert first is not None and first.id == queued.id and first.status == "queued"
    assert first.error is not None and f"gave way to job {behind} (reindex) in lane bulk" in first.error
    assert first.checkpoint is not None and first.checkpoint["after"] > 0  # one batch kept
    second = worker.run_one()
    assert second is not None and second.id == behind and second.status == "succeeded"
    time.sleep(0.4)
    third = worker.run_one()
    assert third is not None and third.id == queued.id and third.status == "succeeded"
    assert engine.jobs.recent(status="queued") == []
    last = max(unitvectors.chunk_ids_after(engine.store, 0, 10_000))
    assert third.result is not None and third.result["after"] == last


def test_a_job_run_for_its_caller_does_not_give_way(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    vault = engine.settings.vault
    assert vault is not None
    jobs.run(engine, jobs.submit_reindex(engine, vault))
    [queued] = engine.jobs.recent(kind="answer_vectors")
    monkeypatch.setattr(handlers, "ANSWER_VECTORS_BATCH", 2)
    jobs.submit_reindex(engine, vault, full=True)  # queued, and nobody runs it
    done = jobs.run(engine, queued.id)
    assert done.status == "succeeded" and done.error is None
