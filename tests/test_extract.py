"""Extractive answers a person would accept: clean units from real notes, the right heading, code kept
whole, a word budget, and grouping by source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from obsidian_ai_agent.extract import (
    MAX_EMBEDDED,
    MAX_WORDS,
    Unit,
    UnitVectors,
    _prefilter,
    _score,
    focus_of,
    is_howto,
    select,
    units_of,
    with_next,
)

from .conftest import CORPORA

DEMO = CORPORA / "obsidian-tasks" / "Tasks-Demo_vault"
DOCS = CORPORA / "obsidian-tasks" / "docs_vault"


def _units(path: Path) -> list[str]:
    return [u.display() for u in units_of(path.read_text("utf-8"), [], 1)]


def test_comments_templater_code_and_frontmatter_never_become_units() -> None:
    text = (
        "---\ntags: [a]\n---\n# Title\n\nA real sentence about tasks. <!-- placeholder to force -->\n\n"
        "%% an Obsidian comment\nover two lines %%\n\n<% tp.file.title %>\n\n```\n```\n\nLast line here."
    )
    shown = " ".join(u.display() for u in units_of(text, [], 1))
    assert "A real sentence about tasks." in shown and "Last line here." in shown
    for noise in ("<!--", "placeholder", "%%", "Obsidian comment", "<%", "tp.file", "tags:", "```"):
        assert noise not in shown


@pytest.mark.parametrize("note", sorted(DEMO.rglob("*.md"))[:80], ids=lambda p: p.name)
def test_no_unit_of_a_real_note_carries_markup_noise(note: Path) -> None:
    for shown in _units(note):
        assert "<!--" not in shown and "-->" not in shown and "<%" not in shown
        assert not re.fullmatch(r"`{3,}\w*", shown.strip())


def test_a_code_block_is_one_unit_kept_whole_with_its_introduction() -> None:
    line = "- [ ] take out the trash [due:: 2023-04-16]"
    text = f"## Due dates\n\nWrite the field like this:\n\n```text\n{line}\n```\n"
    units = units_of(text, ["Note"], 10)
    code = next(u for u in units if u.kind == "code")
    assert code.text == line
    assert code.intro == "Write the field like this:" and code.heading_path == ["Note", "Due dates"]
    assert code.line == 15
    assert code.display() == f"Write the field like this:\n```text\n{line}\n```"


def test_a_paragraph_after_a_sentence_ending_in_a_colon_is_what_that_sentence_introduces() -> None:
    path = DEMO / "Manual Testing" / "README - Manual Testing.md"
    units = units_of(path.read_text("utf-8"), [], 1)
    pattern = next(u for u in units if u.text == "`[issue number] - [brief summary]`")
    assert pattern.intro.endswith("please name the file like this:")
    assert next(u for u in units if u.text == "Thank you.").intro == ""


def test_an_example_of_a_fenced_block_is_shown_inside_a_longer_fence() -> None:
    text = "Example:\n\n    ```tasks\n    not done\n    ```\n"
    code = next(u for u in units_of(text, [], 1) if u.kind == "code")
    assert code.display().splitlines()[1] == "````" and code.display().endswith("```\n````")


def test_each_unit_names_the_most_specific_heading_above_it() -> None:
    text = "# Top\n\n## A\n\nFirst part.\n\n### A1\n\nDeep part.\n\n## B\n\nOther part."
    units = {u.text: u.heading_path for u in units_of(text, ["Top"], 1)}
    assert units == {
        "First part.": ["Top", "A"],
        "Deep part.": ["Top", "A", "A1"],
        "Other part.": ["Top", "B"],
    }


def test_a_list_keeps_its_introduction_and_sub_items_their_parent() -> None:
    path = DOCS / "Queries" / "Filters.md"
    units = units_of(path.read_text("utf-8"), [], 1)
    child = next(u for u in units if u.text.startswith("When this is set, the result list will only include"))
    assert child.nested and child.intro == "`exclude sub-items`" and child.heading_path[-1] == "Sub-Items"


def test_a_chunk_that_starts_mid_paragraph_drops_its_half_sentence() -> None:
    units = units_of("before tomorrow` will match, because it starts.\n\nA whole one.", ["H"], 40)
    assert [u.text for u in units] == ["A whole one."]


def test_the_text_after_a_chunk_is_added_once_and_marked_extra() -> None:
    text, start = with_next("a\nb\nc", 12, "c\nd\ne", 12)
    assert text == "a\nb\nc\nd\ne" and start == 13
    units = units_of("Search with this:\n\n```\ndue date is invalid\n```", ["H"], 1, extra_from=3)
    assert [u.extra for u in units] == [False, True]


def test_the_word_budget_leaves_room_for_the_source_lines() -> None:
    assert MAX_WORDS <= 130


def test_a_paragraph_that_is_only_a_link_is_navigation_not_a_unit() -> None:
    text = "# Smoke\n\n*[[#Remaining tests|Jump to the tests...]]*\n\n<https://example.org/x>\n\nA real line."
    assert [u.text for u in units_of(text, [], 1)] == ["A real line."]


def test_the_last_question_of_several_sentences_is_what_is_asked() -> None:
    q = "After upgrading to Tasks 8 my queries stopped running. How do I turn them back on?"
    assert focus_of(q) == "How do I turn them back on?"
    assert focus_of("How do I turn them back on?") is None
    assert not is_howto(q) and is_howto(focus_of(q) or "")


def test_every_source_gets_its_likeliest_units_read_when_there_are_too_many() -> None:
    first = [(1, Unit(f"Recurring tasks repeat, example {i}.", "sentence", ["H"], i, i)) for i in range(40)]
    late = [(6, Unit(f"Open the sandbox vault, step {i}.", "sentence", ["Before"], i, i)) for i in range(5)]
    kept = _prefilter(first + late, ["recur", "tasks"])
    assert len(kept) == MAX_EMBEDDED
    assert sum(1 for src, _ in kept if src == 6) == 3  # words shared with the question: none


def test_the_sentences_beside_a_chosen_one_come_with_it_and_pointers_rank_last(embedder) -> None:  # type: ignore[no-untyped-def]
    text = (
        "# On Completion\n\n## Nested tasks\n\n"
        "When a task with sub-items is deleted on completion, the lines under it move up. "
        "Those lines are now indented, which means they now form a code block, not a list! "
        "Tasks does not yet warn you about this.\n\nSee also Recurring Tasks.\n\n"
        "## Other\n\nThe toolbar can be hidden in the settings."
    )
    units = units_of(text, [], 1)
    vectors = UnitVectors(embedder.embed)
    q = "Why do the indented lines under my completed task look like a code block?"
    picked = select(q, embedder.embed_query(q), [(1, u) for u in units], vectors)
    shown = [u.text for _, _, group in picked.groups for u in group]
    assert any("form a code block" in t for t in shown)
    assert any(t.startswith("When a task with sub-items is deleted") for t in shown)  # the one before
    assert not any("toolbar" in t for t in shown)  # another section is not a neighbour
    ranked = [s.unit.text for s in _score(q, embedder.embed_query(q), [(1, u) for u in units], vectors)]
    assert ranked.index("See also Recurring Tasks.") > ranked.index("Tasks does not yet warn you about this.")


def test_a_unit_holding_a_name_of_the_question_written_like_code_ranks_with_the_best(embedder) -> None:  # type: ignore[no-untyped-def]
    note = next((CORPORA / "vaultofknowledge").rglob("Local AI Requirements.md"))
    units = [(1, u) for u in units_of(note.read_text("utf-8"), [], 1)]
    q = "How many bits per weight does the q4_k_m quantization work out to?"
    qvec, vectors = embedder.embed_query(q), UnitVectors(embedder.embed)
    scored = _score(q, qvec, units, vectors)
    window = next(s for s in scored if '"q4_k_m": 4.8' in s.unit.text)
    assert scored[0].score - window.score < 0.1  # the code window is no longer far behind a bare heading
    picked = select(q, qvec, units, vectors)
    assert '"q4_k_m": 4.8' in "\n".join(u.display() for _, _, group in picked.groups for u in group)


def _shown(picked) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    return [(src, u.text) for src, _, group in picked.groups for u in group]


def test_a_number_written_in_words_finds_the_line_that_writes_it_in_digits(embedder) -> None:  # type: ignore[no-untyped-def]
    text = (DOCS / "Getting Started" / "Recurring Tasks.md").read_text("utf-8")
    examples = [
        (1, u) for u in units_of(text, [], 1) if u.heading_path[-1:] == ["Examples"] and u.kind == "item"
    ]
    assert len(examples) > 10
    q = "how do I make a task repeat every two weeks"
    scored = _score(q, embedder.embed_query(q), examples, UnitVectors(embedder.embed))
    assert scored[0].unit.text == "`🔁 every 2 weeks`"  # not `every 3 weeks on Friday`, not a date's "2"


def test_of_a_long_list_only_the_items_near_the_best_come_along(embedder) -> None:  # type: ignore[no-untyped-def]
    text = (DEMO / "Styling" / "Theme - Things Theme.md").read_text("utf-8")
    units = [(1, u) for u in units_of(text, [], 1)]
    assert sum(1 for _, u in units if u.kind == "item" and u.intro == "Available checkbox icons:") > 20
    q = "Which of the themes in this vault have a fire checkbox?"
    shown = [t for _, t in _shown(select(q, embedder.embed_query(q), units, UnitVectors(embedder.embed)))]
    assert "[f] #task `f` fire" in shown
    assert len(shown) <= 12  # not all twenty-two icons the introducing line would bring


def test_a_line_found_word_for_word_in_other_notes_is_shown_under_each_of_them(embedder) -> None:  # type: ignore[no-untyped-def]
    themes = [
        "Theme - Things Theme.md",
        "Theme - ITS Theme.md",
        "Theme - Minimal Theme.md",
        "Theme - LYT Mode.md",
    ]
    units = [
        (n, u)
        for n, name in enumerate(themes, 1)
        for u in units_of((DEMO / "Styling" / name).read_text("utf-8"), [], 1)
    ]
    q = "Which of the themes in this vault have a fire checkbox?"
    picked = select(
        q, embedder.embed_query(q), units, UnitVectors(embedder.embed), note_of=dict(enumerate(themes, 1))
    )
    fire = {src for src, t in _shown(picked) if t.lower() == "[f] #task `f` fire"}
    assert {1, 3, 4} <= fire  # Things, Minimal and LYT; the ITS theme has no fire checkbox
    assert 2 not in fire


def test_the_best_units_section_brings_the_sentence_it_opens_with(embedder) -> None:  # type: ignore[no-untyped-def]
    text = (
        "# Worked examples\n\n## Do not break your nested tasks\n\n"
        "Never put `🏁 delete` on a task that has nested tasks or list items.\n\n"
        "Nested items are also known as child items, or sub-items.\n\n"
        "This applies to every format Tasks reads, whatever the settings.\n\n"
        "The same holds for tasks inside callouts and quotes.\n\n"
        "When that first task is completed, the text will become two indented lines.\n\n"
        "Those two lines are now indented, which means they now form a code block, not a list!\n\n"
        "Tasks does not yet issue any warnings if this happens.\n\n"
        "## Other\n\nThe toolbar can be hidden in the settings."
    )
    units = [(1, u) for u in units_of(text, [], 1)]
    q = "after I ticked off a task, the bullets indented under it now look like code - what happened?"
    shown = [t for _, t in _shown(select(q, embedder.embed_query(q), units, UnitVectors(embedder.embed)))]
    assert any("form a code block" in t for t in shown)
    assert any(t.startswith("Never put `🏁 delete`") for t in shown)
