"""`store copy` moves a real index between SQLite and PostgreSQL without re-embedding, resumably, and
the copy answers searches as the original does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.evaluate import eval_questions
from obsidian_ai_agent.security.keys import create_key, revoke_key, verify
from tests.conftest import QUESTIONS

CLI = [str(Path(sys.executable).parent / "obsidian-ai-agent")]


def cli(*args: str, data: Path) -> Any:
    env = {**os.environ, "OAA_DATA_DIR": str(data)}
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def questions(n: int = 12) -> list[str]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows][:n]


def results(engine: Engine, query: str, mode: str) -> list[tuple[str, tuple[str, ...], int | None]]:
    return [
        (r.path, tuple(r.heading_path), r.start_line) for r in engine.searcher.search(query, k=10, mode=mode)
    ]


@pytest.fixture
def docs_copy(tmp_path: Path, docs_index: Path) -> Path:
    data = tmp_path / "sqlite"
    data.mkdir()
    shutil.copy2(docs_index / "index.sqlite", data / "index.sqlite")
    return data


def test_an_index_copied_to_postgresql_and_back_answers_every_search_as_the_original(
    docs_copy: Path, pg_url: str, tmp_path: Path, embedder: Any
) -> None:
    with Engine(load_settings(data_dir=docs_copy), embedder=embedder) as original:
        key = create_key(original.store, "laptop", ["read"])
        status = original.status()
    report = cli("store", "copy", "--to", pg_url, "--json", data=docs_copy)
    assert report["sources_copied"] == status["sources"] and report["chunks_copied"] == status["chunks"]
    assert report["verified"]["ok"] and report["verified"]["counts"]["chunks"] == status["chunks"]
    assert report["verified"]["nearest_identical"] == report["verified"]["nearest_checked"] == 20
    assert "***" in report["to"] or "@" not in report["to"]  # a password never printed

    pg_settings = load_settings(data_dir=tmp_path / "pg-data", database={"url": pg_url})
    with (
        Engine(load_settings(data_dir=docs_copy), embedder=embedder) as sqlite,
        Engine(pg_settings, embedder=embedder) as pg,
    ):
        assert pg.status()["chunks"] == status["chunks"] and pg.status()["database"].startswith(
            "postgresql://"
        )
        assert verify(pg.store, key.secret) is not None  # keys moved with the index
        for q in questions():
            assert results(pg, q, "semantic") == results(sqlite, q, "semantic"), q
        # Keyword ranking is PostgreSQL's own (BM25-like over ts_rank, not FTS5's bm25): held to the
        # same retrieval goal on the dev questions as the SQLite index.
        quality = eval_questions(pg, QUESTIONS, "hybrid")
        assert quality["hit@5"] >= 0.95 and quality["mrr@10"] >= 0.80, quality

    back = tmp_path / "back"
    back.mkdir()
    again = cli(
        "store", "copy", "--from", pg_url, "--to", str(back / "index.sqlite"), "--json", data=tmp_path
    )
    assert again["verified"]["ok"] and again["sources_copied"] == status["sources"]
    with (
        Engine(load_settings(data_dir=docs_copy), embedder=embedder) as sqlite,
        Engine(load_settings(data_dir=back), embedder=embedder) as returned,
    ):
        for q in questions(8):
            for mode in ("keyword", "hybrid"):
                assert results(returned, q, mode) == results(sqlite, q, mode), (q, mode)


def test_an_interrupted_copy_resumes_and_a_second_copy_changes_nothing(docs_copy: Path, pg_url: str) -> None:
    with Engine(load_settings(data_dir=docs_copy)) as engine:
        total = engine.status()["sources"]
        key = create_key(engine.store, "phone", ["read"])

        def stop_after_ten(done: int, _total: int, _path: str) -> None:
            if done == 10:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            engine.copy_store(pg_url, progress=stop_after_ten)
        resumed = engine.copy_store(pg_url, check=False)
        assert resumed["sources_unchanged"] == 10 and resumed["sources_copied"] == total - 10
        revoke_key(engine.store, key.key.id)
        engine.store.delete_source(sorted(engine.store.source_states())[0])
        third = engine.copy_store(pg_url)
        assert third["sources_copied"] == 0 and third["sources_removed"] == 1
        assert third["verified"]["ok"]
        with Engine(load_settings(data_dir=docs_copy, database={"url": pg_url})) as pg:
            assert verify(pg.store, key.secret) is None  # the revocation moved too
            assert pg.status()["sources"] == total - 1


def test_a_copy_onto_itself_or_to_an_unknown_scheme_is_refused_with_what_to_give(docs_copy: Path) -> None:
    with Engine(load_settings(data_dir=docs_copy)) as engine:
        with pytest.raises(ValueError, match="is the index it copies from"):
            engine.copy_store(str(docs_copy))
        from obsidian_ai_agent.store import StoreError

        with pytest.raises(StoreError, match="give a postgresql:// URL or an SQLite file"):
            engine.copy_store("mysql://db/x")
