"""The answer and search cache: keys, bounds, backends, and staleness after a reindex."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.cache import (
    Cache,
    MemoryBackend,
    SqliteBackend,
    cache_key,
    make_cache,
    normalise_question,
)
from obsidian_ai_agent.config import CacheSettings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.store import Store

QUESTION = "How do I make a task repeat every week?"


def test_questions_that_differ_only_in_case_spacing_or_final_punctuation_share_a_key() -> None:
    assert normalise_question("  How do I   make a task repeat?? ") == "how do i make a task repeat"
    assert cache_key("answer", "Due dates?", 3, mode=None) == cache_key("answer", "due  dates", 3, mode=None)


@pytest.mark.parametrize(
    "change",
    [{"generation": 4}, {"mode": "keyword"}, {"provider": "openai"}, {"model": "x"}, {"prompt": "2"}],
)
def test_anything_an_answer_depends_on_changes_the_key(change: dict[str, Any]) -> None:
    parts: dict[str, Any] = {"mode": None, "provider": "extractive", "model": "", "prompt": "1"}
    gen = change.pop("generation", 3)
    assert cache_key("answer", "q", 3, **parts) != cache_key("answer", "q", gen, **{**parts, **change})


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_each_backend_is_bounded_and_drops_the_least_recently_used(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obsidian_ai_agent.store import conversations

    monkeypatch.setattr(conversations, "TOUCH_EVERY", -1.0)  # every hit counts as a use, here
    with Store(tmp_path / "index.sqlite") as store:
        cache = make_cache(CacheSettings(backend=backend, max_entries=3), store)  # type: ignore[arg-type]
        for i in range(3):
            cache.set(f"answer:{i}", {"i": i})
        assert cache.get("answer:0") == {"i": 0}  # now the most recently used
        cache.set("answer:3", {"i": 3})
        assert cache.get("answer:1") is None
        assert cache.get("answer:0") == {"i": 0} and cache.get("answer:3") == {"i": 3}
        stats = cache.stats()
        assert stats["backend"] == backend and stats["entries"] == 3
        assert (stats["hits"], stats["misses"]) == (3, 1)
        assert stats["per_kind"]["answer"]["hit_rate"] == 0.75
        assert cache.clear() == 3 and cache.stats()["entries"] == 0


def test_the_sqlite_cache_is_shared_by_every_process_on_the_index(tmp_path: Path) -> None:
    with Store(tmp_path / "index.sqlite") as a, Store(tmp_path / "index.sqlite") as b:
        Cache(SqliteBackend(a, 10)).set("search:k", {"results": []})
        assert Cache(SqliteBackend(b, 10)).get("search:k") == {"results": []}


def test_a_sqlite_cache_hit_writes_its_use_at_most_once_a_minute(tmp_path: Path) -> None:
    """Each write waits for the database's write lock, which every worker shares: hits read only."""
    with Store(tmp_path / "index.sqlite") as store:
        cache = Cache(SqliteBackend(store, 10))
        cache.set("answer:k", {"x": 1})
        writes: list[int] = []
        store._db.set_trace_callback(lambda sql: writes.append(1) if sql.startswith("UPDATE") else None)
        for _ in range(20):
            assert cache.get("answer:k") == {"x": 1}
        assert writes == []
        store._db.execute("UPDATE answer_cache SET used_at = used_at - 120")
        writes.clear()
        assert cache.get("answer:k") == {"x": 1} and len(writes) == 1


def test_a_disabled_cache_stores_nothing() -> None:
    cache = Cache(MemoryBackend(10), enabled=False)
    cache.set("answer:k", {"x": 1})
    assert cache.get("answer:k") is None and cache.backend.size() == 0


def _count_calls(obj: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap a real method to count its calls (it still runs)."""
    calls: list[int] = []
    real = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_a_cached_answer_skips_retrieval_and_a_changed_note_makes_it_unreachable(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, vault = example
    first = engine.ask(QUESTION)
    assert not first.cached and first.citations

    searches = _count_calls(engine.searcher, "search", monkeypatch)
    embeds = _count_calls(engine.searcher.embedder, "embed", monkeypatch)
    sentences = _count_calls(engine.searcher.embedder, "embed_short", monkeypatch)
    again = engine.ask(QUESTION.upper())
    assert again.cached and again.text == first.text and again.citations == first.citations
    assert searches == [] and embeds == [] and sentences == []  # no model call at all

    note = vault / "Getting Started" / "Recurring Tasks.md"
    note.write_text(note.read_text(encoding="utf-8") + "\n\nRepeat weekly with the zebra rule.\n", "utf-8")
    engine.index(vault)
    after = engine.ask(QUESTION)
    assert not after.cached and searches == [1]
    assert engine.answerer.cache is not None and engine.answerer.cache.stats()["hits"] >= 1
