"""Incremental indexing by content hash, on a copy of real notes."""

from __future__ import annotations

import shutil
from pathlib import Path

from obsidian_ai_agent.engine import Engine

from .conftest import PDFS


def test_an_unchanged_vault_reindexes_with_no_embedding(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    before = engine.status()
    report = engine.index(vault)
    assert report.chunks_embedded == 0 and report.indexed == 0 and report.removed == 0
    assert report.unchanged == before["sources"]
    assert engine.status()["index_generation"] == before["index_generation"]


def test_touching_a_file_without_changing_it_embeds_nothing(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    note = vault / "Getting Started" / "Priority.md"
    note.write_bytes(note.read_bytes())
    report = engine.index(vault)
    assert report.chunks_embedded == 0 and report.unchanged == engine.status()["sources"]


def test_editing_one_section_reembeds_only_that_sections_chunks(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    note = vault / "Getting Started" / "Recurring Tasks.md"
    text = note.read_text(encoding="utf-8")
    marker = "## Examples"
    assert marker in text
    note.write_text(
        text.replace(marker, marker + "\n\nA fortnightly review: `🔁 every 2 weeks on Friday`.\n"), "utf-8"
    )
    chunks_before = engine.store.counts()["chunks"]
    report = engine.index(vault)
    assert report.indexed == 1
    assert 1 <= report.chunks_embedded <= 2, report.to_dict()
    assert report.chunks_reused >= 10
    assert engine.store.counts()["chunks"] in (chunks_before, chunks_before + 1)
    hits = engine.search("fortnightly review", k=3, mode="keyword")
    assert (
        hits
        and hits[0].path == "Getting Started/Recurring Tasks.md"
        and hits[0].heading_path[-1] == "Examples"
    )


def test_a_deleted_note_disappears_from_every_kind_of_search(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    (vault / "Getting Started" / "Task Dependencies.md").unlink()
    report = engine.index(vault)
    assert report.removed == 1 and report.chunks_embedded == 0
    for mode in ("keyword", "semantic", "hybrid"):
        paths = {r.path for r in engine.search("task dependencies blocked by id", k=20, mode=mode)}
        assert "Getting Started/Task Dependencies.md" not in paths


def test_a_moved_and_renamed_note_keeps_its_vectors(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    (vault / "Archive").mkdir()
    shutil.move(vault / "Getting Started" / "Priority.md", vault / "Archive" / "Task Priorities.md")
    before = engine.store.counts()
    report = engine.index(vault)
    assert report.moved == 1 and report.chunks_embedded == 0 and report.removed == 0
    assert engine.store.counts()["chunks"] == before["chunks"]
    hits = engine.search("lowest priority", k=5, mode="hybrid")
    assert any(h.path == "Archive/Task Priorities.md" for h in hits)
    assert all(h.path != "Getting Started/Priority.md" for h in hits)
    assert engine.store.source_by_path("Archive/Task Priorities.md").title == "Task Priorities"  # type: ignore[union-attr]


def test_a_broken_file_is_reported_and_the_batch_goes_on(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    shutil.copy(PDFS / "malformed" / "synthetic_zero-byte.pdf", vault / "broken.pdf")
    shutil.copy(PDFS / "text_known" / "pdfminer_simple1.pdf", vault / "hello.pdf")
    (vault / "New note.md").write_text("# Fresh\n\nA brand new note about quarterly planning.\n", "utf-8")
    report = engine.index(vault)
    assert report.failed == [{"path": "broken.pdf", "error": report.failed[0]["error"]}]
    assert "empty" in report.failed[0]["error"]
    assert report.indexed == 2
    assert engine.search("quarterly planning", k=1)[0].path == "New note.md"
    pdf_hit = engine.search("Hello World", k=5, kind="pdf")
    assert pdf_hit and pdf_hit[0].path == "hello.pdf" and pdf_hit[0].page == 1
    assert pdf_hit[0].link.endswith("&file=hello.pdf%23page%3D1")  # the citation opens the page
    assert engine.store.failures() == [{"path": "broken.pdf", "error": report.failed[0]["error"]}]
    # Once the file is gone, so is its failure.
    (vault / "broken.pdf").unlink()
    engine.index(vault)
    assert engine.store.failures() == []


def test_the_same_text_in_two_notes_is_embedded_once(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    shutil.copy(vault / "Getting Started" / "Dates.md", vault / "Dates.md")
    report = engine.index(vault)
    # Same file name -> same title -> identical embedded text: every vector is found by hash.
    assert report.indexed == 1 and report.chunks_embedded == 0 and report.chunks_reused > 5


def test_an_index_holds_one_vault(example: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, _ = example
    other = tmp_path / "other"
    other.mkdir()
    try:
        engine.index(other)
    except ValueError as e:
        assert "holds the vault" in str(e) and "--data-dir" in str(e)
    else:
        raise AssertionError("indexing a second vault into one index must be refused")


# -- unchanged sources and moves through the one-file path (watch, PUT /api/notes) --------------------


def test_an_unchanged_file_indexed_again_writes_nothing_and_keeps_the_generation(
    example: tuple[Engine, Path],
) -> None:
    from obsidian_ai_agent import jobs

    engine, vault = example
    rel = "Getting Started/Priority.md"
    note = vault / rel
    note.write_bytes(note.read_bytes())  # a save without an edit: new mtime, same bytes
    gen = engine.store.generation
    report = engine.indexer.index_file(vault, rel)
    assert report.unchanged == 1 and report.indexed == 0 and report.chunks_embedded == 0
    assert engine.store.generation == gen
    st = note.stat()
    state = engine.store.source_states()[rel]
    assert (state.size, state.mtime_ns) == (st.st_size, st.st_mtime_ns)  # the new stat is remembered
    # The way a plugin's PUT and a watch event take: an upsert job.
    job = jobs.run(engine, jobs.submit_notes(engine, [rel], vault))
    assert job.status == "succeeded" and job.result and job.result["unchanged"] == 1
    assert engine.store.generation == gen


def test_a_file_moved_within_the_vault_keeps_its_vectors_through_the_one_file_path(
    example: tuple[Engine, Path],
) -> None:
    engine, vault = example
    old, new = "Getting Started/Priority.md", "Archive/Priority (moved).md"
    (vault / "Archive").mkdir()
    (vault / old).rename(vault / new)
    report = engine.indexer.index_file(vault, new)
    assert report.moved == 1 and report.indexed == 1 and report.chunks_embedded == 0, report.to_dict()
    states = engine.store.source_states()
    assert new in states and old not in states
    assert {r.path for r in engine.search("priority signifiers", k=5, mode="keyword")} >= {new}


def test_chunks_keep_where_their_merged_sections_start_and_search_names_the_specific_heading(
    tmp_path: Path, embedder: object
) -> None:
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.notes import heading_at

    from .conftest import DEMO_VAULT

    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "Tasks.md").write_bytes((DEMO_VAULT / "Tasks.md").read_bytes())
    with Engine(load_settings(data_dir=tmp_path / "data"), embedder=embedder) as engine:  # type: ignore[arg-type]
        engine.index(vault)
        hit = engine.search("Due before 6th of December", k=1, mode="keyword")[0]
        row = engine.store.chunks([hit.chunk_id])[hit.chunk_id]
        assert row.heading_path == ["Tasks"] and len(row.section_starts) == 4
        assert heading_at(row, line=16) == ["Tasks", "Due before 6th of December"]
        # The result names the section that holds the matched words, and its link opens it.
        assert hit.heading_path == ["Tasks", "Due before 6th of December"]
        assert hit.link.endswith("&file=Tasks%23Due%20before%206th%20of%20December")
