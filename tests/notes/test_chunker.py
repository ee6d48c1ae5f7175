from __future__ import annotations

import re
from pathlib import Path

from notes_corpora import DOCS_VAULT, KNOWLEDGE_VAULT

from obsidian_ai_agent.notes import parse_markdown, parse_text
from obsidian_ai_agent.notes.chunker import Chunker, Section, Unit
from obsidian_ai_agent.notes.model import CharTokenCounter, TokenCounter

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


_COMMENT = re.compile(r"<!--.*?-->|%%.*?%%", re.DOTALL)


def code_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """1-based (first, last) line ranges of top-level fenced code blocks (not those inside comments,
    which are cut from the indexed text)."""
    text = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), "\n".join(lines))
    blocks, start, fence = [], 0, ""
    for i, line in enumerate(text.split("\n"), start=1):
        m = _FENCE.match(line)
        if not fence and m:
            start, fence = i, m.group(1)
        elif (
            fence
            and m
            and m.group(1)[0] == fence[0]
            and len(m.group(1)) >= len(fence)
            and not line.strip()[len(m.group(1)) :]
        ):
            blocks.append((start, i))
            fence = ""
    return blocks


def test_a_fenced_code_block_that_fits_is_never_split_across_chunks(counter: TokenCounter) -> None:
    checked = 0
    for path in sorted(DOCS_VAULT.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        blocks = code_blocks(lines)
        if not blocks:
            continue
        note = parse_markdown(path.read_bytes(), path.name, counter)
        for first, last in blocks:
            block = "\n".join(lines[first - 1 : last])
            if counter.count(f"{note.title}\nA > B > C\n\n{block}") > 200:
                continue  # too big to fit a window together with its context
            holders = [c for c in note.chunks if c.start_line <= first and last <= c.end_line]
            assert holders, f"{path.name}: code block at lines {first}-{last} was split"
            assert any(block in c.text for c in holders)
            checked += 1
    assert checked > 100


def test_an_oversized_code_block_is_split_on_line_boundaries(counter: TokenCounter) -> None:
    code = "\n".join(f"let value_{i} = compute({i}, {i * 7});" for i in range(200))
    raw = f"# Code\n\nIntro.\n\n```js\n{code}\n```\n".encode()
    note = parse_markdown(raw, "c.md", counter)
    assert len(note.chunks) > 2
    lines = raw.decode().split("\n")
    for c in note.chunks:
        assert counter.count(c.embed_text) <= 256
        for chunk_line in c.text.split("\n"):
            assert chunk_line in lines  # whole lines only
        assert c.text.split("\n")[0] == lines[c.start_line - 1]
        assert c.text.split("\n")[-1] == lines[c.end_line - 1]


def test_long_sections_split_with_overlap_and_correct_line_ranges(counter: TokenCounter) -> None:
    rel = "Getting Started/Dates.md"
    lines = (DOCS_VAULT / rel).read_text(encoding="utf-8").split("\n")
    kept = [ln for ln in lines[8:200] if not ln.startswith("#")]
    body = "\n\n".join(kept)  # one long section: its headings dropped, a blank line between lines
    raw = f"# Long\n\n{body}\n".encode()
    note = parse_markdown(raw, "long.md", counter)
    raw_lines = raw.decode().split("\n")
    assert len(note.chunks) > 3
    overlaps = 0
    for prev, cur in zip(note.chunks, note.chunks[1:], strict=False):
        assert cur.start_line <= prev.end_line + 2
        if cur.start_line <= prev.end_line:
            overlaps += 1
            assert cur.text.split("\n")[0].strip() in raw_lines[cur.start_line - 1]
    assert overlaps >= len(note.chunks) // 2
    for c in note.chunks:
        assert c.text.split("\n")[-1].strip() in raw_lines[c.end_line - 1]


def test_a_long_paragraph_without_line_breaks_splits_on_sentences(counter: TokenCounter) -> None:
    sentences = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(80)]
    note = parse_markdown(("# P\n\n" + " ".join(sentences)).encode(), "p.md", counter)
    assert len(note.chunks) > 2
    for c in note.chunks:
        assert counter.count(c.embed_text) <= 256
        assert c.start_line in (1, 3) and c.end_line == 3  # the first piece holds the heading line
    # pieces end on a sentence boundary, and the overlap repeats the end of the previous piece
    assert note.chunks[0].text.endswith(".")
    tail = note.chunks[0].text.split(". ")[-1]
    assert tail in note.chunks[1].text


def test_a_huge_word_is_split_not_truncated(counter: TokenCounter) -> None:
    word = "x" * 3000 + "漢字" * 400
    note = parse_markdown(f"# W\n{word}\n".encode(), "w.md", counter)
    assert all(counter.count(c.embed_text) <= 256 for c in note.chunks)
    assert "".join(c.text.replace("# W\n", "") for c in note.chunks).count("漢字") >= 400


def test_tiny_sections_merge_with_the_following_child_or_sibling(counter: TokenCounter) -> None:
    intro = b"An introduction long enough to stand on its own as a chunk of text. " * 3
    raw = (
        b"# Top\n\n"
        + intro
        + b"\n\n## A\n\nshort a\n\n## B\n\nshort b\n\n# Next\n\n"
        + b"Long text here. " * 60
    )
    note = parse_markdown(raw, "m.md", counter)
    assert note.chunks[0].heading_path == ["Top"] and note.chunks[0].end_line == 3
    merged = note.chunks[1]
    # tiny siblings A and B: one chunk with their common parent path
    assert merged.heading_path == ["Top"]
    assert merged.text == "## A\n\nshort a\n\n## B\n\nshort b"
    assert (merged.start_line, merged.end_line) == (5, 11)
    # a tiny section never swallows a shallower heading that follows
    assert note.chunks[2].heading_path == ["Next"]


def test_a_bare_heading_takes_the_path_of_its_child(counter: TokenCounter) -> None:
    raw = b"# Parent\n\n## Child\n\n" + b"Child content sentence. " * 20
    note = parse_markdown(raw, "m.md", counter)
    assert len(note.chunks) == 1
    assert note.chunks[0].heading_path == ["Parent", "Child"]
    assert note.chunks[0].text.startswith("# Parent\n\n## Child")


def test_callouts_stay_one_unit(counter: TokenCounter) -> None:
    rel = "Getting Started/Dates.md"
    note = parse_markdown((DOCS_VAULT / rel).read_bytes(), rel, counter)
    callout = "> [!info]\n> If you prefer to type, it is now very easy to add emojis"
    assert any(callout in c.text for c in note.chunks)


def test_parse_text_chunks_plain_text_under_the_title(counter: TokenCounter) -> None:
    text = (KNOWLEDGE_VAULT / "Paraa Praveshika.md").read_text(encoding="utf-8")
    src = parse_text(text, "https://example.org/p", "  Paraa   Praveshika ", "web", counter)
    assert src.kind == "web" and src.title == "Paraa Praveshika" and src.path == "https://example.org/p"
    assert len(src.chunks) > 1
    assert all(c.embed_text.startswith("Paraa Praveshika\n\n") for c in src.chunks)
    assert all(counter.count(c.embed_text) <= 256 for c in src.chunks)
    empty = parse_text("", "doc-1", "Only a title", "web", counter)
    assert [c.embed_text for c in empty.chunks] == ["Only a title"]


def test_chunker_works_with_an_estimating_counter() -> None:
    est = CharTokenCounter(max_tokens=64)
    units = [Unit(f"line {i} " * 10, i + 1, i + 1) for i in range(30)]
    chunks = Chunker(est).chunk("T", [Section(["H"], units)])
    assert len(chunks) > 3
    assert all(est.count(c.embed_text) <= 64 for c in chunks)


def test_a_very_long_title_is_shortened_in_the_header_only(counter: TokenCounter, tmp_path: Path) -> None:
    title = "word " * 400
    chunks = Chunker(counter).chunk(title, [Section([], [Unit("the body stays whole", 1, 1)])])
    assert chunks[0].text == "the body stays whole"
    assert chunks[0].embed_text.endswith("\n\nthe body stays whole")
    assert counter.count(chunks[0].embed_text) <= 256
