"""Answers a person can trust: declines that hold when other notes change, every form of a word counted as
known, generated sentences checked against their sources, runaway generations stopped, and a cache that
never serves an answer built under other settings."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsidian_ai_agent.answer import Answerer, chunk_units
from obsidian_ai_agent.cache import Cache, make_cache
from obsidian_ai_agent.config import AnswerSettings, CacheSettings, LLMSettings, load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.extract import UnitVectors
from obsidian_ai_agent.grounding import UNSUPPORTED_MARK, Repetition, check, facts, sentences_of
from obsidian_ai_agent.llm import LLM, LLMError, Message, chat_format_for
from obsidian_ai_agent.relevance import Relevance, is_known, names_in, unknown_words

from .conftest import CORPORA


@pytest.fixture(scope="module")
def demo(demo_index: Path, embedder) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    with Engine(load_settings(data_dir=demo_index), embedder=embedder) as engine:
        yield engine


class ScriptedLLM(LLM):
    """A model that says what it is told: the network edge of a real provider, built on the LLM interface."""

    provider = "openai"
    model = "scripted"
    context_window = 4096

    def __init__(self, deltas: list[str], delay: float = 0.0) -> None:
        self.deltas = deltas
        self.delay = delay
        self.sent = 0

    def stream(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> Iterator[str]:
        for d in self.deltas:
            time.sleep(self.delay)
            self.sent += 1
            yield d


def test_every_form_of_a_word_in_the_index_counts_as_known() -> None:
    tokens = {"python3", "upgrade", "file", "name", "metabind", "task"}

    def probe(word: str, prefix: bool) -> bool:
        return any(t == word or (prefix and t.startswith(word)) for t in tokens)

    assert is_known("python", probe)  # a longer word it begins
    assert is_known("upgrading", probe)  # a stem of most of it
    assert is_known("filename", probe)  # two indexed words
    assert is_known("meta", probe, next_word="bind")  # joined to the next word
    assert not is_known("teammate", probe) and not is_known("todoist", probe)


def test_a_word_the_note_writes_with_a_digit_is_not_unknown(demo: Engine) -> None:
    question = "What Python script creates the files for stress testing?"
    assert unknown_words(question, demo.store.has_term) == []
    answer = Answerer(demo.searcher, LLMSettings()).ask(question)
    assert not answer.declined and "Stress Test/Stress Test Readme.md" in {c.path for c in answer.citations}


def test_the_names_of_a_question_are_its_capitalised_and_code_like_words() -> None:
    assert names_in("Which checkbox characters does the Prism theme support?") == ["prism"]
    assert names_in("Do tasks with status type ON_HOLD show up in a `not done` search?") == ["on_hold"]
    assert names_in("In the Pacific-Auckland time zone test, what due date?") == ["pacific", "auckland"]
    assert names_in("What signal number does SIGRTMIN have? What does it do?") == ["sigrtmin"]
    assert names_in("How often do I need to take out the trash?") == []  # a sentence's first word is none


def test_a_name_the_notes_hold_only_far_from_the_question_is_a_near_miss() -> None:
    q = "Which checkbox characters does the Prism theme support?"
    near_miss = Relevance.judge(q, 0.63, [], LLMSettings(), {"prism": 0.33})
    assert not near_miss.covered and "prism" in near_miss.reason and "0.33" in near_miss.reason
    held = Relevance.judge(q, 0.63, [], LLMSettings(), {"prism": 0.58})
    assert held.covered and held.name_support == {"prism": 0.58}


def test_a_names_support_is_the_nearest_chunk_that_holds_it(demo: Engine) -> None:
    q = "Which checkbox characters does the Prism theme support, and what does each one mean?"
    evidence = Answerer(demo.searcher, LLMSettings()).ask(q).evidence
    qvec = demo.searcher.queries.get(q)
    ids = [cid for cid, _ in demo.store.keyword_search(["prism"], [1.0] * 5, 100)]
    assert ids  # one sample note mentions the Prism theme in passing
    nearest = max(demo.searcher.vectors.similarities(qvec, ids).values())
    assert evidence["name_support"] == {"prism": round(nearest, 4)}
    assert nearest < evidence["similarity"] - 0.1  # the theme notes are nearer than that mention


def test_a_decline_decision_does_not_move_when_unrelated_notes_change(
    example: tuple[Engine, Path],
) -> None:
    engine, vault = example
    answerer = Answerer(engine.searcher, LLMSettings())
    questions = ["How do I make a task repeat every week?", "How do I assign a task to a teammate?"]
    before = [answerer.ask(q).evidence for q in questions]
    for name in ("Linux.md", "Python.md"):
        src = next(CORPORA.joinpath("vaultofknowledge").rglob(name), None)
        text = src.read_text("utf-8") if src else f"# {name}\n\nNotes on {name} that are not about tasks."
        (vault / f"Unrelated {name}").write_text(text, "utf-8")
    engine.index(vault)
    after = [answerer.ask(q).evidence for q in questions]
    for b, a in zip(before, after, strict=True):
        assert (a["similarity"], a["covered"], a["unknown_words"]) == (
            b["similarity"],
            b["covered"],
            b["unknown_words"],
        )


def test_the_dataview_due_date_answer_shows_the_syntax_line_whole(demo: Engine) -> None:
    answer = Answerer(demo.searcher, LLMSettings()).ask("How do I write a due date in Dataview format?")
    assert "[due:: 2023-04-16]" in answer.text
    assert "Formats/Dataview Format.md" in {c.path for c in answer.citations}


def test_the_file_naming_answer_shows_the_pattern_its_sentence_introduces(demo: Engine) -> None:
    q = "How should I name a file in the Manual Testing folder that tests a single issue?"
    answer = Answerer(demo.searcher, LLMSettings()).ask(q)
    assert "please name the file like this: `[issue number] - [brief summary]`" in answer.text


def test_a_chunk_that_is_little_more_than_a_title_is_read_on_into_its_section(demo: Engine) -> None:
    # The note's first chunk is its title and a "Jump to the tests" link; the definition is in the next.
    answer = Answerer(demo.searcher, LLMSettings()).ask("What is a smoke test?")
    assert "preliminary testing" in answer.text
    assert "Jump to the tests" not in answer.text


DEMO_QUESTIONS = [
    "How often do I need to take out the trash?",
    "What Python script creates the files for stress testing?",
    "How should I name a file in the Manual Testing folder that tests a single issue?",
    "What is a smoke test?",
    "Which emoji marks a high priority task in the Tasks emoji format?",
    "How do I write a due date in Dataview format?",
    "In the Pacific-Auckland time zone test, what due date should the next recurring task get?",
    "In the Minimal theme, which checkbox character marks a task as important?",
]


@pytest.mark.parametrize("question", DEMO_QUESTIONS)
def test_an_extract_is_short_clean_and_cites_the_exact_heading(demo: Engine, question: str) -> None:
    answer = Answerer(demo.searcher, LLMSettings()).ask(question)
    assert not answer.declined and answer.citations
    body = answer.text.split("\n", 1)[1]
    assert len(re.findall(r"\w+", body)) <= 150
    for noise in ("<!--", "-->", "<%", "%>", "%%"):
        assert noise not in answer.text
    assert not re.search(r"^`{3,}\w*$\n^`{3,}$", answer.text, re.M)  # no empty or lone fences
    for c in answer.citations:
        assert f"[{c.n}]" in answer.text
        if c.heading_path:
            assert (
                c.link.endswith("%23" + re.sub(r"[^A-Za-z0-9]", "", c.heading_path[-1])[:0])
                or "%23" in c.link
            )


def test_a_generated_sentence_is_checked_against_the_source_it_cites(docs: Engine) -> None:
    vectors = UnitVectors(docs.embedder.embed)
    units = {1: ["Recurring Tasks: Every recurrence rule has to start with the word `every`."]}
    text = "Every recurrence rule starts with the word `every` [1]. Tasks costs 49 dollars a year [1]."
    good, bad = check(text, units, vectors, min_similarity=0.5)
    assert good.supported and good.citations == [1]
    assert not bad.supported and "49" in bad.missing_facts
    assert facts("Use `due today` on 2023-04-16 [2].") == ["due today", "2023-04-16"]
    assert [s for s, _ in sentences_of("One [1]. Two [2].\nThree.")] == ["One [1].", "Two [2].", "Three."]


@pytest.fixture(scope="module")
def docs(docs_index: Path, embedder) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    with Engine(load_settings(data_dir=docs_index), embedder=embedder) as engine:
        yield engine


def test_a_chunk_that_starts_inside_a_section_brings_the_sentence_the_section_opens_with(
    docs: Engine,
) -> None:
    rows = docs.store.chunks(list(range(1, 5000)))
    section = ["Do not break your nested tasks"]
    inside = next(
        cid for cid, r in rows.items()
        if r.path == "Getting Started/On Completion.md" and r.heading_path[-1:] == section
        and not r.text.lstrip().startswith("#")
    )  # fmt: skip
    lead = chunk_units(docs.store, [inside])[inside][0]
    assert lead.extra and lead.text.startswith("***Never, ever*** put `🏁 delete`")
    q = (
        "after I ticked off a task, the bullets indented under it stopped being a list and now look like"
        " code - what happened?"
    )
    answer = Answerer(docs.searcher, LLMSettings()).ask(q)
    assert "`🏁 delete`" in answer.text and "form a code block" in answer.text


def test_a_model_answer_without_a_supported_citation_becomes_the_extract_with_a_notice(docs: Engine) -> None:
    llm = ScriptedLLM(["Tasks ", "can be ", "sent to ", "your fridge."])
    answer = Answerer(docs.searcher, LLMSettings(provider="openai"), llm=llm).ask(
        "How do I make a task repeat?"
    )
    assert answer.mode == "extractive" and answer.citations
    assert answer.notice and "cites no source" in answer.notice
    assert answer.sentences and not answer.sentences[0]["supported"]


class QuotingLLM(ScriptedLLM):
    """A model that quotes the first full sentence of source [1] from its prompt, then makes a claim up."""

    def stream(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> Iterator[str]:
        prompt = messages[-1]["content"]
        body = prompt.split("[1] ", 1)[1].split("\n", 1)[1].split("\n\n[2] ", 1)[0]
        lines = [
            ln.strip() for ln in body.splitlines() if len(ln.split()) >= 6 and not ln.startswith(("#", "`"))
        ]
        quote = lines[0].rstrip(".") + "."
        yield from [f"{quote} [1]. ", "It costs 49 dollars [1]."]


def test_unsupported_sentences_are_marked_in_the_text_and_the_json(docs: Engine) -> None:
    a = Answerer(docs.searcher, LLMSettings(provider="openai"), llm=QuotingLLM([]))
    answer = a.ask("What word must a recurrence rule start with?")
    assert answer.mode == "llm", (answer.notice, answer.sentences)
    marks = [s["supported"] for s in answer.sentences]
    assert len(marks) >= 2 and all(marks[:-1]) and marks[-1] is False  # the quote, then the made-up claim
    assert answer.text.endswith("It costs 49 dollars [1]." + UNSUPPORTED_MARK)


def test_a_generation_that_repeats_itself_is_stopped(docs: Engine) -> None:
    llm = ScriptedLLM(["Recurring tasks repeat every week when done [1]. "] * 200)
    answer = Answerer(docs.searcher, LLMSettings(provider="openai"), llm=llm).ask(
        "How do I make a task repeat?"
    )
    assert llm.sent < 5
    assert answer.notice and "repeat itself" in answer.notice
    assert not Repetition().add("A first sentence here today. A second, different one follows it.")


def test_a_whole_answer_is_bounded_by_max_seconds(docs: Engine) -> None:
    llm = ScriptedLLM([f"word{i} " for i in range(100)], delay=0.05)
    a = Answerer(docs.searcher, LLMSettings(provider="openai"), llm=llm, answer=AnswerSettings(max_seconds=1))
    answer = a.ask("How do I make a task repeat?")
    assert llm.sent < 100
    assert answer.notice and "answer.max_seconds" in answer.notice


def test_a_cached_answer_is_not_served_after_the_default_search_mode_changes(
    docs_index: Path, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=docs_index)
    with Engine(settings, embedder=embedder) as engine:
        cache: Cache = make_cache(CacheSettings(backend="memory"), engine.store)
        first = Answerer(engine.searcher, settings.llm, cache=cache).ask("How do I make a task repeat?")
        again = Answerer(engine.searcher, settings.llm, cache=cache).ask("How do I make a task repeat?")
        engine.searcher.settings = settings.search.model_copy(update={"default_mode": "keyword"})
        changed = Answerer(engine.searcher, settings.llm, cache=cache).ask("How do I make a task repeat?")
    assert not first.cached and again.cached and not changed.cached


def test_a_gguf_file_without_a_template_gets_its_own_chat_format(tmp_path: Path) -> None:
    assert chat_format_for({"general.architecture": "gemma3"}, tmp_path / "m.gguf") == "gemma"
    assert chat_format_for({"general.name": "SmolLM2 135M Instruct"}, tmp_path / "m.gguf") == "chatml"
    with pytest.raises(LLMError, match=r"set llm\.chat_format"):
        chat_format_for({"general.architecture": "mystery"}, tmp_path / "x.gguf")
