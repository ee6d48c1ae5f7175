"""Hostile notes get a bounded outcome (issue 9, holes 1 and 4): YAML alias amplification in the
frontmatter, and tens of thousands of tags or aliases, are indexed with a warning, in bounded time and
memory, with bounded rows, and the other notes of the batch are indexed as well.

Each hostile note is built here. Memory bounds (traced, so the same on a busy machine) are generous: they
prove the work is not unbounded (the old parser stored a 200 MB frontmatter row for the alias note).
The time it takes, and how it grows with the note (the old parser spent 32-65 s de-duplicating aliases
and tags), is measured by `bench/hostile_notes.py`, not asserted on this shared machine.
"""

from __future__ import annotations

import shutil
import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.notes import ParsedSource, default_token_counter, parse_markdown
from obsidian_ai_agent.notes.markdown import (
    FRONTMATTER_MAX_STORED_BYTES,
    MAX_ALIASES,
    MAX_LINKS,
    MAX_TAGS,
)
from obsidian_ai_agent.notes.model import TokenCounter

DOCS_VAULT = Path("/work/shared/corpora/obsidian-tasks/docs_vault")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return default_token_counter()


def alias_bomb(refs: int = 3_000, anchor_bytes: int = 20_000) -> bytes:
    """A ~60 KB note: one 20 KB anchored string referenced `refs` times (60 MB once expanded)."""
    refs_yaml = ", ".join(["*big"] * refs)
    return (
        f'---\ntitle: Alias bomb\nanchor: &big "{"x" * anchor_bytes}"\nrefs: [{refs_yaml}]\n---\n'
        "# Alias bomb\n\nThe body of a note whose frontmatter expands a lot.\n"
    ).encode()


def many_aliases(n: int) -> bytes:
    items = ", ".join(f"a{i}" for i in range(n))
    return f"---\naliases: [{items}]\n---\n# Many aliases\n\nA body.\n".encode()


def many_tags(n: int) -> bytes:
    lines = [" ".join(f"#t{i}" for i in range(j, min(j + 20, n))) for j in range(0, n, 20)]
    return ("# Many tags\n\n" + "\n".join(lines) + "\n").encode()


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(result, peak traced bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_yaml_alias_bomb_is_parsed_with_a_warning_in_bounded_time_and_memory(counter: TokenCounter) -> None:
    raw = alias_bomb()
    assert len(raw) < 80_000
    parse_markdown(b"# warm\n\ntext\n", "w.md", counter)
    parsed, peak = peak_memory(lambda: parse_markdown(raw, "bomb.md", counter))
    assert isinstance(parsed, ParsedSource)
    assert any("frontmatter expands to over" in w for w in parsed.warnings), parsed.warnings
    assert parsed.frontmatter == {}
    assert parsed.title == "bomb"  # the frontmatter is ignored whole, the note itself is indexed
    assert parsed.chunks and "expands a lot" in parsed.chunks[0].text
    # Expanding it would take 60 MB of JSON; the budget stops at 2 MB.
    assert peak < 20 * MB, peak


def test_tens_of_thousands_of_aliases_are_capped_with_a_warning_in_linear_time(counter: TokenCounter) -> None:
    small = parse_markdown(many_aliases(20_000), "a.md", counter)
    big, peak = peak_memory(lambda: parse_markdown(many_aliases(80_000), "a.md", counter))
    for parsed in (small, big):
        assert parsed.aliases == [f"a{i}" for i in range(MAX_ALIASES)]
        assert any(f"more than {MAX_ALIASES} aliases" in w for w in parsed.warnings), parsed.warnings
        assert any(f"over {FRONTMATTER_MAX_STORED_BYTES // 1024} KB as JSON" in w for w in parsed.warnings)
        assert len(str(parsed.frontmatter)) <= FRONTMATTER_MAX_STORED_BYTES
    assert peak < 200 * MB, peak


def test_a_hundred_thousand_inline_tags_are_capped_with_a_warning_in_linear_time(
    counter: TokenCounter,
) -> None:
    small = parse_markdown(many_tags(27_500), "t.md", counter)
    big = parse_markdown(many_tags(110_000), "t.md", counter)
    for parsed in (small, big):
        assert len(parsed.tags) == MAX_TAGS and parsed.tags[:3] == ["t0", "t1", "t2"]
        assert any(f"more than {MAX_TAGS} distinct tags" in w for w in parsed.warnings), parsed.warnings
    assert "#t109999" in big.chunks[-1].text  # the text itself is all indexed
    _, peak = peak_memory(lambda: parse_markdown(many_tags(55_000), "t.md", counter))
    assert peak < 200 * MB, peak  # ~440 KB of note


def test_links_beyond_the_limit_are_dropped_with_a_warning(counter: TokenCounter) -> None:
    body = "\n".join(f"[[Note {i}]] and [md](Other%20{i}.md)" for i in range(MAX_LINKS))
    parsed = parse_markdown(f"# Links\n\n{body}\n".encode(), "l.md", counter)
    assert len(parsed.links) == MAX_LINKS
    assert parsed.links[0].target == "Note 0" and parsed.links[1].target == "Other 0"
    assert any(f"only the first {MAX_LINKS} are kept" in w for w in parsed.warnings)


def test_hostile_notes_in_a_batch_are_indexed_with_warnings_and_bounded_rows_beside_normal_ones(
    tmp_path: Path, embedder: Any
) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "bomb.md").write_bytes(alias_bomb())
    (vault / "aliases.md").write_bytes(many_aliases(80_000))
    for rel in ("Getting Started/Priority.md", "Getting Started/Dates.md"):
        (vault / Path(rel).name).write_bytes((DOCS_VAULT / rel).read_bytes())
    data = tmp_path / "data"
    with Engine(load_settings(data_dir=data), embedder=embedder) as engine:
        report = engine.index(vault)
        assert report.failed == [] and report.indexed == 4, report.to_dict()
        warned = {w["path"] for w in report.warnings}
        assert {"bomb.md", "aliases.md"} <= warned
        hits = engine.search("priority signifiers", k=5, mode="keyword")
        assert hits and hits[0].path == "Priority.md"
        assert engine.search("expands a lot", k=3, mode="keyword")[0].path == "bomb.md"
    db = sqlite3.connect(data / "index.sqlite")
    try:
        fm, aliases, warnings = db.execute(
            "SELECT max(length(frontmatter)), max(length(aliases)), max(length(warnings)) FROM sources"
        ).fetchone()
    finally:
        db.close()
    assert fm <= FRONTMATTER_MAX_STORED_BYTES and aliases < 4_000 and warnings < 2_000
    size = sum(p.stat().st_size for p in data.glob("index.sqlite*"))
    assert size < 8 * MB, size  # the old parser stored a 200 MB row for the bomb alone
    shutil.rmtree(vault)
