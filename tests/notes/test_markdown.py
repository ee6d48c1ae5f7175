from __future__ import annotations

import json
from pathlib import Path

from notes_corpora import DEMO_VAULT, DOCS_VAULT, KNOWLEDGE_VAULT

from obsidian_ai_agent.notes import parse_markdown, parse_source
from obsidian_ai_agent.notes.model import Link, ParsedSource, TokenCounter


def parse(vault: Path, rel: str, counter: TokenCounter) -> ParsedSource:
    return parse_markdown((vault / rel).read_bytes(), rel, counter)


def file_lines(vault: Path, rel: str) -> list[str]:
    return (vault / rel).read_text(encoding="utf-8").split("\n")


def test_title_is_the_file_name_not_the_first_heading(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Editing/Auto-Suggest.md", counter)
    assert note.title == "Auto-Suggest"  # the first heading is "Intelligent Auto-Suggest"
    assert note.kind == "note"
    assert note.path == "Editing/Auto-Suggest.md"


def test_frontmatter_aliases_and_values_are_read(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Editing/Auto-Suggest.md", counter)
    assert note.aliases == ["Getting Started/Auto-Suggest"]
    assert note.frontmatter["publish"] is True
    assert note.warnings == []


def test_frontmatter_dates_become_iso_strings_and_tags_are_collected(counter: TokenCounter) -> None:
    note = parse(DEMO_VAULT, "Test Data/yaml_all_property_types_populated.md", counter)
    fm = note.frontmatter
    assert fm["sample_date_property"] == "2024-07-21"
    assert fm["sample_date_and_time_property"] == "2024-07-21T12:37:00"
    assert fm["sample_number_property"] == 246
    assert fm["sample_list_property"] == ["Sample", "List", "Value"]
    json.dumps(fm)  # everything JSON-serialisable
    assert note.aliases == ["YAML All Property Types Populated"]
    assert "sample/tag/value" in note.tags  # frontmatter tag
    assert "task" in note.tags  # inline "#task" on line 23


def test_frontmatter_lines_count_in_line_numbers(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Getting Started/Dates.md", counter)
    lines = file_lines(DOCS_VAULT, "Getting Started/Dates.md")
    first = note.chunks[0]
    assert first.start_line == 5  # "# Dates" follows three frontmatter lines and a blank one
    assert lines[first.start_line - 1] == "# Dates"
    assert first.text.startswith("# Dates")


def test_chunks_follow_headings_with_paths_and_true_line_ranges(counter: TokenCounter) -> None:
    rel = "Getting Started/Dates.md"
    note = parse(DOCS_VAULT, rel, counter)
    lines = file_lines(DOCS_VAULT, rel)
    by_path = {tuple(c.heading_path): c for c in note.chunks}
    due = by_path[("Dates", "When to work on a task", "Due date")]
    assert lines[due.start_line - 1] == "### Due date"  # line 29 of the file
    assert due.start_line == 29
    cancelled = [
        c for c in note.chunks if c.heading_path == ["Dates", "Track task histories", "Cancelled date"]
    ]
    assert cancelled
    assert "### Cancelled date" in lines[cancelled[0].start_line - 1 : cancelled[0].end_line]
    for chunk in note.chunks:
        assert chunk.start_line is not None and chunk.end_line is not None
        span = "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        # the chunk's first and last lines are the file's lines at start_line/end_line
        assert chunk.text.split("\n")[0].strip() in span
        assert chunk.text.split("\n")[-1].strip() in lines[chunk.end_line - 1]
    assert [c.ordinal for c in note.chunks] == list(range(len(note.chunks)))


def test_embed_text_starts_with_title_and_heading_path(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Getting Started/Dates.md", counter)
    due = next(c for c in note.chunks if c.heading_path[-1:] == ["Due date"])
    assert due.embed_text.startswith("Dates\nDates > When to work on a task > Due date\n\n### Due date")


def test_heading_path_keeps_markdown_as_written(counter: TokenCounter) -> None:
    rel = "Scripting/Task Properties.md"
    lines = file_lines(DOCS_VAULT, rel)
    headings = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#") and "`" in ln]
    note = parse(DOCS_VAULT, rel, counter)
    paths = {h for c in note.chunks for h in c.heading_path}
    if headings:  # headings with backticks keep them
        assert set(headings) & paths


def test_wikilinks_with_alias_heading_and_line_numbers(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Getting Started/Dates.md", counter)
    assert Link(target="Create or edit Task", alias="‘Create or edit Task’ Modal", line=20) in note.links
    assert Link(target="Filters", heading="Due Date", line=44) in note.links
    assert (
        Link(target="Task Properties", heading="Values for Dates in Tasks", alias="task property", line=47)
        in note.links
    )


def test_embeds_inside_callouts_are_links_with_embed_flag(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Advanced/Styling.md", counter)
    assert Link(target="Sample HTML - Full mode", embed=True, line=84) in note.links
    assert Link(target="Sample HTML - Short mode", embed=True, line=99) in note.links
    assert Link(target="Layout", heading="Full Mode", alias="full mode", line=75) in note.links


def test_escaped_pipe_in_a_table_separates_the_alias(counter: TokenCounter) -> None:
    styling = parse(DOCS_VAULT, "Advanced/Styling.md", counter)
    assert Link(target="Backlinks", alias="backlink", line=194) in styling.links
    layout = parse(DOCS_VAULT, "Queries/Layout.md", counter)
    assert Link(target="", heading="Hide and Show Tree", alias="Tree", line=71) in layout.links


def test_links_inside_inline_code_are_ignored(counter: TokenCounter) -> None:
    note = parse(DOCS_VAULT, "Support and Help/Known Limitations.md", counter)
    assert all(link.target != "...." for link in note.links)  # "`![[....]]`" on line 14


def test_block_links_are_split_from_the_target(counter: TokenCounter) -> None:
    note = parse(KNOWLEDGE_VAULT, "06. Collected Knowledge/Quantum Mechanics.md", counter)
    assert Link(target="Quantum Mechanics", block="my-idea", alias="here", line=2) in note.links


def test_nested_inline_tags_are_found_and_lowercased(counter: TokenCounter) -> None:
    note = parse(KNOWLEDGE_VAULT, "01. Personal/Project Ideas/Personal Text Editor.md", counter)
    assert {"test/square", "test/bucket"} <= set(note.tags)
    dates = parse(DOCS_VAULT, "Getting Started/Dates.md", counter)
    assert dates.tags == ["feature/dates"]  # inside <span>, line 7; "# Dates" is a heading


def test_frontmatter_and_inline_tags_are_merged_without_duplicates(counter: TokenCounter) -> None:
    note = parse(DEMO_VAULT, "How To/Find tasks in notes with particular tag.md", counter)
    assert note.tags[0] == "sample-tag"
    assert len(note.tags) == len(set(note.tags))
    # "#sample-tag" inside code spans and ```tasks blocks, and "#### Show ..." in a link, are not tags
    assert "examples" not in note.tags
    assert not any(t.startswith("#") for t in note.tags)


def test_tags_are_not_found_in_code_urls_or_pure_numbers(counter: TokenCounter) -> None:
    raw = (
        "Issue #123 and #2024 are numbers; #y2024 is a tag; see https://example.com/page#fragment\n"
        "`#inline-code` and [link](Note.md#Heading) and [[Note#Heading]] and &#39; entity\n"
        "```\n#fenced\n```\n"
        "#Mixed/Case #日本語 #हिन्दी-शब्द #a_b-c\n"
    ).encode()
    note = parse_markdown(raw, "t.md", counter)
    assert note.tags == ["y2024", "mixed/case", "日本語", "हिन्दी-शब्द", "a_b-c"]


def test_non_latin_notes_are_chunked(counter: TokenCounter) -> None:
    note = parse(KNOWLEDGE_VAULT, "Paraa Praveshika.md", counter)
    assert note.tags == ["todo"]
    assert len(note.chunks) > 1
    assert "ഓ നമഃ ശിവായ" in note.chunks[0].text
    for c in note.chunks:
        assert counter.count(c.embed_text) <= 256


def test_empty_note_gives_one_title_chunk(counter: TokenCounter) -> None:
    rel = "01. Personal/Daily Notes/Entry of 10th Apr, 2025.md"
    assert (KNOWLEDGE_VAULT / rel).stat().st_size == 0
    note = parse(KNOWLEDGE_VAULT, rel, counter)
    assert len(note.chunks) == 1
    chunk = note.chunks[0]
    assert chunk.text == "" and chunk.embed_text == "Entry of 10th Apr, 2025" and chunk.ordinal == 0


def test_frontmatter_only_note_is_findable_by_title_and_aliases(counter: TokenCounter) -> None:
    note = parse_markdown(b"---\naliases: [Other name, Second]\n---\n\n", "Folder/Only meta.md", counter)
    assert [c.embed_text for c in note.chunks] == ["Only meta\nOther name, Second"]
    assert note.chunks[0].text == ""


def test_frontmatter_title_wins_over_file_name(counter: TokenCounter) -> None:
    note = parse_markdown(b'---\ntitle: Real Title\ntags: "One, #two three"\n---\nBody', "x.md", counter)
    assert note.title == "Real Title"
    assert note.tags == ["one", "two", "three"]
    assert note.chunks[0].embed_text == "Real Title\n\nBody"
    assert note.chunks[0].start_line == 5


def test_malformed_yaml_is_a_warning_and_the_body_is_indexed(counter: TokenCounter, tmp_path: Path) -> None:
    src = DOCS_VAULT / "Getting Started/Priority.md"
    broken = src.read_bytes().replace(b"publish: true", b"publish: [true\nbad: : :", 1)
    note = parse_markdown(broken, "Priority.md", counter)
    assert len(note.warnings) == 1
    assert note.warnings[0].startswith("frontmatter is not valid YAML (line ")
    assert note.frontmatter == {}
    assert note.chunks[0].text.startswith("# Priority")  # frontmatter lines are not body text
    assert "---" not in note.chunks[0].text.split("\n")[0]
    assert any("priority signifiers" in c.text for c in note.chunks)


def test_cp1252_file_decodes_with_a_warning(counter: TokenCounter, tmp_path: Path) -> None:
    text = (DOCS_VAULT / "Getting Started/Priority.md").read_text(encoding="utf-8")
    text = text.encode("cp1252", errors="ignore").decode("cp1252") + "\nCafé – “quoted” naïve #façade\n"
    path = tmp_path / "Priority.md"
    path.write_bytes(text.encode("cp1252"))
    note = parse_source(path, "Priority.md", counter)
    assert note.warnings == ["not UTF-8; decoded as cp1252"]
    assert "façade" in note.tags
    assert any("Café – “quoted” naïve" in c.text for c in note.chunks)


def test_utf8_bom_is_stripped_without_warning(counter: TokenCounter) -> None:
    note = parse_markdown(b"\xef\xbb\xbf---\ntitle: T\n---\n# H\ntext", "n.md", counter)
    assert note.title == "T" and note.warnings == []
    assert note.chunks[0].heading_path == ["H"]


def test_content_hash_is_of_the_raw_bytes(counter: TokenCounter) -> None:
    import hashlib

    raw = (DOCS_VAULT / "Introduction.md").read_bytes()
    assert parse_markdown(raw, "Introduction.md", counter).content_hash == hashlib.sha256(raw).hexdigest()
