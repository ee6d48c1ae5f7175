"""Search over the real Tasks docs vault with the real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.search import SearchError, make_snippet, obsidian_link, query_terms, with_numerals
from obsidian_ai_agent.store.sqlite import fts_match

from .conftest import DOCS_VAULT


@pytest.fixture(scope="module")
def docs(docs_index: Path, embedder) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    with Engine(load_settings(data_dir=docs_index), embedder=embedder) as engine:
        yield engine


@pytest.mark.parametrize("mode", ["hybrid", "keyword", "semantic"])
def test_each_mode_finds_the_note_about_recurring_tasks(docs: Engine, mode: str) -> None:
    results = docs.search("make a task repeat every week", k=5, mode=mode)
    assert "Getting Started/Recurring Tasks.md" in {r.path for r in results}


def test_a_result_carries_everything_needed_to_open_and_trust_it(docs: Engine) -> None:
    r = next(r for r in docs.search("cancelled date emoji", k=5) if r.path == "Getting Started/Dates.md")
    assert r.title == "Dates"
    assert r.heading_path and r.start_line and r.end_line and r.start_line <= r.end_line
    lines = (DOCS_VAULT / r.path).read_text(encoding="utf-8").splitlines()[r.start_line - 1 : r.end_line]
    assert any(r.heading_path[-1] in line for line in lines if line.startswith("#"))
    assert r.snippet and len(r.snippet) <= 245
    assert r.link.startswith("obsidian://open?vault=docs_vault&file=Getting%20Started%2FDates%23")
    assert r.keyword_rank is not None or r.semantic_rank is not None
    assert r.score > 0


def test_hybrid_ranks_carry_both_sides(docs: Engine) -> None:
    results = docs.search("urgency score calculation", k=10, mode="hybrid")
    assert any(r.keyword_rank and r.semantic_rank for r in results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


def test_keyword_mode_ranks_only_by_bm25_and_semantic_only_by_vectors(docs: Engine) -> None:
    assert all(r.semantic_rank is None for r in docs.search("priority", k=5, mode="keyword"))
    assert all(r.keyword_rank is None for r in docs.search("priority", k=5, mode="semantic"))


def test_a_title_match_outranks_body_mentions_in_keyword_mode(docs: Engine) -> None:
    assert docs.search("Urgency", k=1, mode="keyword")[0].title == "Urgency"


def test_aliases_are_searchable(docs: Engine) -> None:
    # migration.md declares `aliases: [Migration to Publish]` in its frontmatter (read in the file).
    text = (DOCS_VAULT / "migration.md").read_text(encoding="utf-8")
    assert "Migration to Publish" in text.split("---")[1]
    assert docs.store.source_by_path("migration.md").aliases == ["Migration to Publish"]  # type: ignore[union-attr]
    results = docs.search("migration to publish", k=3, mode="keyword")
    assert results[0].path == "migration.md"


def test_the_folder_filter_keeps_only_that_folder(docs: Engine) -> None:
    results = docs.search("filter tasks by date", k=20, folder="Queries")
    assert results and all(r.path.startswith("Queries/") for r in results)
    assert docs.search("filter tasks by date", k=5, folder="No Such Folder") == []


def test_the_kind_filter_keeps_only_that_kind(docs: Engine) -> None:
    assert docs.search("dates", k=5, kind="pdf") == []
    assert all(r.kind == "note" for r in docs.search("dates", k=5, kind="note"))


HOSTILE = [
    '"',
    '""',
    "'",
    "(",
    ")",
    "((",
    "[",
    "]",
    "{",
    "*",
    "-",
    "^",
    ":",
    "NEAR(a b)",
    "a AND",
    "OR",
    "NOT",
    "AND OR NOT",
    'title:"x',
    "body:* OR",
    "#tag",
    "[[Dates]]",
    "![[embed]]",
    "\\",
    "%",
    "_",
    "😀",
    "🔁 every week",
    "select * from chunks; drop table chunks;--",
    "a" * 1500,
    "\x00",
    "  ",
    "the of and",
    "🔁",
    "日本語",
]


@pytest.mark.parametrize("query", HOSTILE)
@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_any_user_string_searches_without_error(docs: Engine, query: str, mode: str) -> None:
    results = docs.search(query, k=5, mode=mode)
    assert isinstance(results, list)
    assert docs.store.integrity_check() == "ok"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_arbitrary_text_never_breaks_keyword_search(docs: Engine, text: str) -> None:
    docs.search(text, k=3, mode="keyword")


def test_fts_expressions_quote_every_term() -> None:
    assert fts_match(query_terms('NEAR(a "b") OR title:c')) == '"near" OR "b" OR "title" OR "c"'
    assert query_terms("what is the due date") == ["due", "date"]
    assert query_terms("the of") == ["the", "of"]


def test_a_bad_mode_or_k_is_a_clear_error(docs: Engine) -> None:
    with pytest.raises(SearchError, match="unknown search mode 'fuzzy'; use one of"):
        docs.search("x", mode="fuzzy")
    with pytest.raises(SearchError, match="k must be between 1 and 1000"):
        docs.search("x", k=0)


def test_related_notes_combine_similarity_and_links(docs: Engine) -> None:
    related = docs.related("Getting Started/Dates.md", k=10)
    paths = [r.path for r in related]
    assert "Getting Started/Dates.md" not in paths and len(paths) == 10
    assert any(r.links_to for r in related) and any(r.linked_from for r in related)
    assert all(-1.0 <= r.similarity <= 1.0 for r in related)
    with pytest.raises(SearchError, match="not in the index"):
        docs.related("nope.md")


def test_snippets_centre_on_the_query_and_links_encode_headings() -> None:
    text = "word " * 100 + "the special needle sits here " + "word " * 100
    snip = make_snippet(text, ["needle"])
    assert "needle" in snip and snip.startswith("…") and snip.endswith("…")
    assert (
        obsidian_link("My Vault", "a/b c.md", ["H 1", "Sub"])
        == "obsidian://open?vault=My%20Vault&file=a%2Fb%20c%23Sub"
    )
    assert obsidian_link("v", "doc.pdf") == "obsidian://open?vault=v&file=doc.pdf"
    assert obsidian_link("v", "https://example.org/a?b=1", ["Intro"]) == "https://example.org/a?b=1"


def test_the_tag_filter_includes_nested_tags(docs: Engine) -> None:
    def tags(path: str) -> list[str]:
        return docs.store.source_by_path(path).tags  # type: ignore[union-attr]

    nested = docs.search("status", k=50, tag="feature/statuses")
    parent = docs.search("settings", k=50, tag="#feature")
    assert nested and all("feature/statuses" in tags(r.path) for r in nested)
    assert parent and all(
        any(t == "feature" or t.startswith("feature/") for t in tags(r.path)) for r in parent
    )
    assert {t for r in parent for t in tags(r.path) if t.startswith("feature/")} - {"feature/statuses"}


def test_a_pdf_result_links_to_its_page() -> None:
    assert (
        obsidian_link("v", "Papers/doc.pdf", [], page=3)
        == "obsidian://open?vault=v&file=Papers%2Fdoc.pdf%23page%3D3"
    )
    assert obsidian_link("v", "a.md", ["H"], page=None) == "obsidian://open?vault=v&file=a%23H"


def test_a_small_number_written_as_a_word_finds_its_numeral(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    assert with_numerals(["every", "two", "weeks"]) == ["every", "two", "weeks", "2"]
    assert with_numerals(["3", "3"]) == ["3", "three"]
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "Plants.md").write_text("# Plants\n\nWater the ferns 🔁 every 3 days.\n", "utf-8")
    (vault / "Cat.md").write_text("# Cat\n\nFeed the cat in the morning.\n", "utf-8")
    with Engine(load_settings(data_dir=tmp_path / "data"), embedder=embedder) as engine:
        engine.index(vault)
        assert [r.path for r in engine.search("three", k=5, mode="keyword")] == ["Plants.md"]
