"""The store on real SQLite files: migrations, one-transaction writes, model mismatch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from obsidian_ai_agent.notes.model import Chunk, Link, ParsedSource
from obsidian_ai_agent.store import ModelMismatchError, Store, StoreError
from obsidian_ai_agent.store.migrations import MIGRATIONS


def source(path: str, texts: list[str]) -> ParsedSource:
    chunks = [Chunk(i, t, f"{path}\n\n{t}", ["H"], i + 1, i + 1) for i, t in enumerate(texts)]
    return ParsedSource(
        path,
        "note",
        Path(path).stem,
        f"hash-{path}-{len(texts)}",
        chunks=chunks,
        tags=["project/alpha"],
        links=[Link("Other", heading="Top", line=2)],
    )


def vectors(src: ParsedSource, dim: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {c.hash: rng.random(dim, dtype=np.float32) for c in src.chunks}


def test_a_new_store_is_built_by_every_migration_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.sqlite")
    assert store.schema_version == len(MIGRATIONS)
    db = sqlite3.connect(tmp_path / "i.sqlite")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sources", "chunks", "chunks_fts", "links", "meta", "source_tags", "failures"} <= tables
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    # Reopening applies nothing twice.
    assert Store(tmp_path / "i.sqlite").schema_version == len(MIGRATIONS)


def test_a_store_newer_than_the_program_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "i.sqlite").close()
    db = sqlite3.connect(tmp_path / "i.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path / "i.sqlite")


def test_replacing_a_source_swaps_all_its_rows_and_bumps_the_generation(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.sqlite")
    a = source("a.md", ["one", "two", "three"])
    gen1 = store.replace_source(a, vectors(a))
    b = source("a.md", ["only"])
    gen2 = store.replace_source(b, vectors(b))
    assert gen2 == gen1 + 1 == store.generation
    assert store.counts()["chunks"] == 1
    db = sqlite3.connect(tmp_path / "i.sqlite")
    assert db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM links").fetchone()[0] == 1
    assert store.filter_source_ids(tag="project") == store.filter_source_ids(tag="project/alpha") != []
    assert store.integrity_check() == "ok"


def test_a_write_that_fails_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.sqlite")
    a = source("a.md", ["one", "two"])
    store.replace_source(a, vectors(a))
    bad = source("a.md", ["new one", "new two"])
    vecs = vectors(bad)
    vecs[bad.chunks[1].hash] = "not a vector"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        store.replace_source(bad, vecs)
    rows = store.chunks(list(range(1, 10)))
    assert sorted(r.text for r in rows.values()) == ["one", "two"]
    assert store.counts()["chunks"] == 2 and store.integrity_check() == "ok"


def test_a_source_without_every_vector_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.sqlite")
    a = source("a.md", ["one", "two"])
    with pytest.raises(StoreError, match="no vector"):
        store.replace_source(a, {})


def test_an_index_built_with_another_model_refuses_to_mix_vectors(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.sqlite")
    store.check_embedding_model("all-MiniLM-L6-v2", 384)
    store.check_embedding_model("all-MiniLM-L6-v2", 384)
    with pytest.raises(ModelMismatchError) as e:
        store.check_embedding_model("openai:nomic-embed-text", 768)
    msg = str(e.value)
    assert "all-MiniLM-L6-v2" in msg and "nomic-embed-text" in msg and "768" in msg and "--data-dir" in msg


def test_removed_chunks_are_recorded_for_other_processes_to_catch_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.sqlite")
    a = source("a.md", ["one", "two"])
    store.replace_source(a, vectors(a))
    g = store.generation
    assert store.delete_source("a.md") and not store.delete_source("a.md")
    assert sorted(store.removed_chunks(g).tolist()) == [1, 2]
    assert store.generation == g + 1


def test_conversations_from_before_per_owner_ids_keep_their_turns_after_the_migration(tmp_path: Path) -> None:
    from obsidian_ai_agent.store import conversations as convo

    path = tmp_path / "i.sqlite"
    db = sqlite3.connect(path)
    with db:
        for migrate in MIGRATIONS[:7]:  # the schema before conversation ids were per owner
            migrate(db)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '7')")
        db.execute("INSERT INTO conversations VALUES ('trip', 'k1', 'Trip', 1.0, 1.0)")
        db.execute(
            "INSERT INTO conversation_turns (conversation_id, role, content, created_at)"
            " VALUES ('trip', 'user', 'what do I pack?', 1.0)"
        )
    db.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert [t.content for t in convo.conversation_turns(store, "trip", "k1")] == ["what do I pack?"]
    convo.ensure_conversation(store, "trip", "k2")  # the same id, another owner: a conversation of its own
    assert convo.conversation_turns(store, "trip", "k2") == []
    assert [c["id"] for c in convo.list_conversations(store, "k1")] == ["trip"]
    store.close()


def test_reads_from_threads_that_come_and_go_leave_no_connection_open(tmp_path: Path) -> None:
    """Request threads read on connections of their own; a thread that ends must not leave its connection
    (and its file descriptor) behind, or a long-running service would run out of them."""
    import gc
    import threading

    import psutil

    store = Store(tmp_path / "i.sqlite")
    store.replace_source(src := source("a.md", ["one"]), vectors(src))

    def opened() -> int:
        return sum(1 for f in psutil.Process().open_files() if f.path == str(tmp_path / "i.sqlite"))

    before = opened()
    results: list[int] = []
    for _ in range(40):
        t = threading.Thread(target=lambda: results.append(len(store._query("SELECT id FROM sources"))))
        t.start()
        t.join()
    gc.collect()
    assert results == [1] * 40
    assert opened() <= before + 1
    store.close()
    assert opened() == 0
