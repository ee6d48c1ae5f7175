"""The index operations give the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from obsidian_ai_agent.notes.model import Chunk, Link, ParsedSource
from obsidian_ai_agent.store import IndexStore, ModelMismatchError, StoreError
from obsidian_ai_agent.vectors import vectors_for

from .conftest import DIMENSION

WEIGHTS = [10.0, 8.0, 5.0, 4.0, 1.0]


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIMENSION).astype(np.float32)
    return v / np.linalg.norm(v)


def note(path: str, sections: list[tuple[list[str], str]], **kw: object) -> ParsedSource:
    chunks = [
        Chunk(
            ordinal=i, text=text, embed_text=f"{path} {' '.join(h)} {text}", heading_path=h, start_line=i + 1
        )
        for i, (h, text) in enumerate(sections)
    ]
    return ParsedSource(
        path=path,
        kind="note",
        title=str(kw.get("title", path.rsplit("/", 1)[-1].removesuffix(".md"))),
        content_hash=f"hash-{path}-{len(sections)}-{sum(len(t) for _, t in sections)}",
        aliases=list(kw.get("aliases", [])),  # type: ignore[call-overload]
        tags=list(kw.get("tags", [])),  # type: ignore[call-overload]
        links=list(kw.get("links", [])),  # type: ignore[call-overload]
        chunks=chunks,
    )


def write(store: IndexStore, parsed: ParsedSource, seed: int = 0) -> dict[str, np.ndarray]:
    vectors = {c.hash: unit(seed * 100 + c.ordinal) for c in parsed.chunks}
    store.replace_source(parsed, vectors)
    return vectors


def test_a_written_note_reads_back_with_its_chunks_vectors_links_and_tags(store: IndexStore) -> None:
    parsed = note(
        "Projects/Garden.md",
        [(["Garden"], "Tomatoes need full sun."), (["Garden", "Watering"], "Water deeply twice a week.")],
        aliases=["Allotment"],
        tags=["plants/vegetables", "home"],
        links=[Link(target="Compost", heading="Recipe", line=3)],
    )
    vectors = write(store, parsed, seed=1)
    assert store.counts() == {"sources": 1, "chunks": 2, "vectors": 2, "failed": 0}
    info = store.source_by_path("Projects/Garden.md")
    assert info is not None and info.aliases == ["Allotment"] and info.tags == ["plants/vegetables", "home"]
    ids, sids, mat = store.load_vectors()
    assert len(ids) == 2 and set(sids) == {info.id}
    assert np.allclose(mat[0], vectors[parsed.chunks[0].hash], atol=1e-6)
    rows = store.chunks(list(map(int, ids)))
    assert sorted(r.heading_path for r in rows.values()) == [["Garden"], ["Garden", "Watering"]]
    assert store.next_chunks([int(ids[0])]) == {int(ids[0]): int(ids[1])}
    assert store.links_of("Projects/Garden.md")[0]["heading"] == "Recipe"
    assert store.filter_source_ids(tag="plants") == [info.id]
    assert store.filter_source_ids(folder="Projects") == [info.id]
    assert store.filter_source_ids(folder="Elsewhere") == []
    assert store.sources_named("allotment") == ["Projects/Garden.md"]
    assert store.sources_named("garden") == ["Projects/Garden.md"]
    assert set(store.vectors_for_hashes([c.hash for c in parsed.chunks])) == {c.hash for c in parsed.chunks}


def test_keyword_search_ranks_a_title_match_above_a_body_mention_and_respects_filters(
    store: IndexStore,
) -> None:
    write(store, note("Tomatoes.md", [(["Tomatoes"], "Plant them after the last frost.")]), seed=1)
    write(store, note("Diary.md", [(["Diary"], "Ate tomatoes with bread; then I read a book.")]), seed=2)
    write(store, note("Work/Plan.md", [(["Plan"], "Quarterly goals and the roadmap.")]), seed=3)
    hits = store.keyword_search(["tomatoes"], WEIGHTS, 10)
    paths = [store.chunks([cid])[cid].path for cid, _ in hits]
    assert paths == ["Tomatoes.md", "Diary.md"]
    assert [s for _, s in hits] == sorted(s for _, s in hits)  # lower is better, on both
    only_work = store.filter_source_ids(folder="Work")
    assert store.keyword_search(["tomatoes"], WEIGHTS, 10, only_work) == []
    assert store.keyword_search(["roadmap", "tomatoes"], WEIGHTS, 10, only_work)[0][0] in store.chunks(
        [cid for cid, _ in store.keyword_search(["roadmap"], WEIGHTS, 10)]
    )


def test_user_text_is_never_query_syntax_in_keyword_search(store: IndexStore) -> None:
    write(store, note("Q.md", [(["Q"], "It's a question: what (if any) OR NOT? 100% sure & | ! :*")]), seed=4)
    for term in ["it's", "OR", "NOT", "100%", "&", "|", "!", ":*", '"', "'", "\\", "(", "NEAR"]:
        store.keyword_search([term], WEIGHTS, 5)  # never an error
        store.has_term(term)
        store.has_term(term, prefix=True)
    assert store.has_term("question") and store.has_term("quest", prefix=True)
    assert not store.has_term("quest") and not store.has_term("zebra", prefix=True)


def test_replacing_a_note_bumps_the_generation_and_records_the_removed_chunks(store: IndexStore) -> None:
    g0 = store.generation
    write(store, note("A.md", [(["A"], "first version")]), seed=5)
    old_ids, _, _ = store.load_vectors()
    g1 = store.generation
    write(store, note("A.md", [(["A"], "second version"), (["A", "More"], "and more")]), seed=6)
    assert g0 < g1 < store.generation
    assert set(store.removed_chunks(g1)) == set(map(int, old_ids))
    new_ids, _, _ = store.load_vectors(g1)
    assert len(new_ids) == 2 and not set(map(int, new_ids)) & set(map(int, old_ids))  # ids never reused
    assert store.delete_source("A.md") and not store.delete_source("A.md")
    assert store.counts()["chunks"] == 0


def test_semantic_search_finds_the_nearest_chunks_and_a_filter_still_returns_k(store: IndexStore) -> None:
    for i in range(60):
        folder = "Rare" if i % 20 == 0 else "Common"
        write(store, note(f"{folder}/N{i}.md", [([f"N{i}"], f"note number {i}")]), seed=100 + i)
    vectors = vectors_for(store)
    target = unit(100 * (100 + 41))  # the vector of Common/N41.md's only chunk
    best = vectors.search(target, 5)
    assert store.chunks([best[0][0]])[best[0][0]].path == "Common/N41.md" and best[0][1] > 0.999
    rare = store.filter_source_ids(folder="Rare")
    assert len(rare) == 3
    hits = vectors.search(target, 3, rare)
    assert len(hits) == 3 and {store.chunks([c])[c].path for c, _ in hits} <= {
        "Rare/N0.md",
        "Rare/N20.md",
        "Rare/N40.md",
    }
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    sids, mat = vectors.note_vectors()
    assert len(sids) == 60 and np.allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)


def test_another_embedding_model_is_refused_and_a_note_without_vectors_is_not_written(
    store: IndexStore,
) -> None:
    with pytest.raises(ModelMismatchError, match="all-MiniLM-L6-v2"):
        store.check_embedding_model("another-model", DIMENSION)
    parsed = note("B.md", [(["B"], "text")])
    with pytest.raises(StoreError, match="no vector"):
        store.replace_source(parsed, {})
    assert store.counts()["sources"] == 0


def test_failures_meta_listing_and_integrity_agree(store: IndexStore) -> None:
    store.record_failure("Bad.md", "could not parse")
    store.record_failure("Bad.md", "still broken")
    assert store.failures() == [{"path": "Bad.md", "error": "still broken"}]
    write(store, note("Bad.md", [(["Bad"], "fixed now")]), seed=7)
    assert store.failures() == []
    store.set_meta("vault_root", "/v")
    store.set_meta("vault_root", "/w")
    assert store.get_meta("vault_root") == "/w"
    for i in range(5):
        write(store, note(f"L/{i}.md", [([str(i)], "x")]), seed=8 + i)
    page = store.list_sources(folder="L", limit=2)
    assert [r["path"] for r in page] == ["L/0.md", "L/1.md"]
    assert [r["path"] for r in store.list_sources(folder="L", after="L/1.md", limit=10)] == [
        "L/2.md",
        "L/3.md",
        "L/4.md",
    ]
    assert store.integrity_check() == "ok" and store.quick_check() == "ok"


def test_a_note_holding_a_nul_character_is_written_and_found(store: IndexStore) -> None:
    write(store, note("Binary.md", [(["Binary"], "before\x00after the zero byte")]), seed=9)
    (cid, _), *_ = store.keyword_search(["zero"], WEIGHTS, 5)
    assert store.chunks([cid])[cid].text.replace("\ufffd", "\x00") == "before\x00after the zero byte"


def test_a_term_most_chunks_hold_is_left_out_of_the_ranking_while_rarer_ones_are_there(
    store: IndexStore,
) -> None:
    store.COMMON_FLOOR, store.COMMON = 5, 0.1  # type: ignore[attr-defined]  # as on a large index
    for i in range(30):
        extra = " A zeppelin flew over." if i < 2 else ""
        write(
            store, note(f"Minutes/{i:02}.md", [(["Minutes"], f"Weekly meeting number {i}.{extra}")]), seed=i
        )
    paths = lambda hits: sorted(store.chunks([c])[c].path for c, _ in hits)  # noqa: E731
    assert paths(store.keyword_search(["meeting", "zeppelin"], WEIGHTS, 50)) == [
        "Minutes/00.md",
        "Minutes/01.md",
    ]
    assert len(store.keyword_search(["meeting"], WEIGHTS, 50)) == 30  # nothing rarer: still ranked
    # The counts follow the index: once most notes speak of zeppelins, the word is common too.
    for i in range(2, 14):
        write(
            store, note(f"Minutes/{i:02}.md", [(["Minutes"], f"Meeting {i}. A zeppelin flew over.")]), seed=i
        )
    write(store, note("Rocks.md", [(["Rocks"], "Quartz and a zeppelin.")]), seed=99)
    assert paths(store.keyword_search(["zeppelin", "quartz"], WEIGHTS, 50)) == ["Rocks.md"]


def test_the_similarity_of_named_chunks_to_a_query_is_their_cosine(store: IndexStore) -> None:
    parsed = note("A.md", [(["A"], "first"), (["A", "B"], "second")])
    written = write(store, parsed, seed=7)
    by_text = {c.text: written[c.hash] for c in parsed.chunks}
    ids = {row.text: cid for cid, row in store.chunks(list(range(1, 50))).items()}
    query = unit(12345)
    sims = vectors_for(store).similarities(query, [ids["first"], ids["second"], 99_999])
    assert set(sims) == {ids["first"], ids["second"]}  # a chunk that does not exist is left out
    for text in ("first", "second"):
        assert abs(sims[ids[text]] - float(by_text[text] @ query)) < 1e-4
