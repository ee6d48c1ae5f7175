"""Units of a note a reader can take on their own: sentences, list items, table rows, and code blocks kept
whole (long blocks in windows of a few lines, so a syntax line is never cut in two), parsed by markdown-it.

What a reader of the rendered note never sees is left out: frontmatter, HTML and Obsidian comments,
Templater code, embeds and images, block ids, heading lines and bare fences. Each unit keeps the most
specific heading above it and its line, so its citation opens the right section. Links alone on a line
(navigation) are no units.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt

_EMBED_WORDS = 48  # a unit is embedded by its first words: padding to one long unit slows the whole batch
_CODE_WINDOW = 4  # lines of a long code block shown together
_SHORT_CODE = 8  # a block of at most this many lines is one unit

_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_OBS_COMMENT = re.compile(r"%%.*?(?:%%|\Z)", re.S)
_TEMPLATER = re.compile(r"<%.*?(?:%>|\Z)", re.S)
_EMBED = re.compile(r"!\[\[[^\]\n]*\]\]|!\[[^\]\n]*\]\([^)\n]*\)")
_WIKILINK = re.compile(r"\[\[([^\]|\n]*?)(?:\|([^\]\n]*))?\]\]")
_MDLINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\((?:[^()\s]|\([^()\s]*\))+(?:\s+\"[^\"]*\")?\)")
_BLOCK_ID = re.compile(r"\s\^[A-Za-z0-9-]+\s*$")
_HTML_TAG = re.compile(
    r"</?(?:span|div|br|p|sup|sub|mark|font|a|img|details|summary|kbd|u|center)\b[^>]*>", re.I
)
_CALLOUT = re.compile(r"^\[![\w-]+\][+-]?\s*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`*\"'(\[_])")
_WORD = re.compile(r"\w+")
# A paragraph that is only a link ("*[[#Tests|Jump to the tests...]]*") is navigation, not an answer.
_LINK_ONLY = re.compile(r"[\s*_]*(?:\[\[[^\]\n]*\]\]|\[[^\]\n]*\]\([^)\n]*\)|<https?://[^>\s]*>)[\s*_.]*")
# Code that only a plugin runs: never shown as an answer.
_SKIP_LANGS = {"mermaid", "dataviewjs", "js", "javascript", "ts", "typescript", "css", "json", "yaml", "yml"}


@dataclass
class Unit:
    text: str
    """What the reader sees (Markdown)."""
    kind: str
    """sentence, item, row or code"""
    heading_path: list[str]
    line: int | None
    order: int
    intro: str = ""
    """The sentence that introduces a code block or list ("... like this:"), shown before it."""
    lang: str = ""
    nested: bool = False
    """An item of a list inside another item: `intro` is its parent item."""
    extra: bool = False
    """From the text after the retrieved chunk: shown only as what a chosen unit introduces."""

    @property
    def embed_text(self) -> str:
        body = self.text if self.kind == "sentence" else f"{self.intro} {self.text}".strip()
        text = (f"{self.heading_path[-1]}: " if self.heading_path else "") + body
        words = text.split()
        return " ".join(words[:_EMBED_WORDS]) if len(words) > _EMBED_WORDS else text

    @property
    def words(self) -> int:
        return len(_WORD.findall(self.display()))

    def display(self) -> str:
        if self.kind == "code":
            # A fence longer than any inside, so an example of a code block shows as one.
            ticks = "`" * max([3, *(len(m) + 1 for m in re.findall(r"`{3,}", self.text))])
            intro = f"{self.intro}\n" if self.intro else ""
            return f"{intro}{ticks}{self.lang}\n{self.text}\n{ticks}"
        return self.text


def _blank_out(pattern: re.Pattern[str], text: str) -> str:
    """Removes what the pattern matches but keeps its newlines, so line numbers stay right."""
    return pattern.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def clean_inline(line: str) -> str:
    """A line as a reader sees it: links as their text, no embeds, images, tags of HTML or block ids."""
    line = _EMBED.sub("", line)
    line = _WIKILINK.sub(lambda m: m.group(2) or m.group(1).split("#")[-1].split("^")[0] or m.group(1), line)
    line = _MDLINK.sub(r"\1", line)
    line = _HTML_TAG.sub("", line)
    line = _BLOCK_ID.sub("", line)
    return " ".join(line.split())


def _strip_frontmatter(lines: list[str]) -> None:
    if lines and lines[0].strip() == "---":
        for i in range(1, min(len(lines), 200)):
            if lines[i].strip() in ("---", "..."):
                for j in range(i + 1):
                    lines[j] = ""
                return


def _is_noise(text: str) -> bool:
    bare = text.strip()
    if len(_WORD.findall(bare)) < 2 and not re.search(r"[^\w\s]", bare):
        return True
    return bool(re.fullmatch(r"[-*_=`~#>|:.\s]*", bare))


_MD = MarkdownIt("commonmark").enable("table")


def with_next(
    text: str, end_line: int | None, nxt_text: str, nxt_start: int | None
) -> tuple[str, int | None]:
    """A chunk's text followed by what the next chunk adds after it (chunks overlap), and the line where
    the added text starts: an example a chunk's last sentence introduces often sits in the next one."""
    if end_line is None or nxt_start is None:
        return text, None
    lines = nxt_text.split("\n")
    skip = max(0, end_line - nxt_start + 1)
    if skip >= len(lines):
        return text, None
    gap = "\n" * max(1, nxt_start + skip - end_line)
    return text + gap + "\n".join(lines[skip:]), end_line + 1


def _code_units(body: list[str], lang: str, heading: list[str], line: int, intro: str) -> list[Unit]:
    while body and not body[-1].strip():
        body.pop()
    while body and not body[0].strip():
        body.pop(0)
    if not body or lang.lower() in _SKIP_LANGS:
        return []
    if len(body) <= _SHORT_CODE:
        windows = [(0, body)]
    else:
        windows = [(i, body[i : i + _CODE_WINDOW]) for i in range(0, len(body), _CODE_WINDOW)]
    return [
        Unit("\n".join(w), "code", heading, line + off, 0, intro=intro, lang=lang)
        for off, w in windows
        if any(x.strip() for x in w)
    ]


def units_of(
    text: str, heading_path: Sequence[str], start_line: int | None, extra_from: int | None = None
) -> list[Unit]:
    """The units of one chunk's text (parsed by markdown-it), each with the most specific heading above
    it and its line; units at or after line `extra_from` are marked `extra`."""
    text = _blank_out(_HTML_COMMENT, text)
    text = _blank_out(_OBS_COMMENT, text)
    text = _blank_out(_TEMPLATER, text)
    lines = text.split("\n")
    if start_line in (None, 1):
        _strip_frontmatter(lines)
    base = start_line or 1
    path: list[tuple[int, str]] = [(i + 1, h) for i, h in enumerate(heading_path)]
    units: list[Unit] = []
    tokens = _MD.parse("\n".join(lines))
    depth_item = 0
    in_heading = 0
    in_cell = False
    row: list[str] = []
    head_cells: list[str] = []
    in_thead = False
    item_started = False
    lists: list[list[str]] = []  # per open list: [its intro, the text of its latest item]
    first_inline = True

    def here() -> list[str]:
        return [h for _, h in path]

    def add(u: Unit) -> None:
        u.order = len(units)
        u.extra = extra_from is not None and u.line is not None and u.line >= extra_from
        units.append(u)

    def intro() -> str:
        # A sentence that ends with ":" right before a block introduces it.
        last = units[-1] if units else None
        if last is not None and last.kind == "sentence" and last.text.endswith(":") and len(last.text) < 240:
            return last.text
        return ""

    for tok in tokens:
        line = base + (tok.map[0] if tok.map else 0)
        t = tok.type
        if t == "heading_open":
            in_heading = int(tok.tag[1:])
        elif t == "heading_close":
            in_heading = 0
        elif t in ("bullet_list_open", "ordered_list_open"):
            lists.append([lists[-1][1] if lists else intro(), ""])
        elif t in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif t == "list_item_open":
            depth_item += 1
            item_started = False
        elif t == "list_item_close":
            depth_item -= 1
        elif t == "thead_open":
            in_thead, head_cells = True, []
        elif t == "thead_close":
            in_thead = False
        elif t == "tr_open":
            row = []
        elif t in ("th_open", "td_open"):
            in_cell = True
        elif t in ("th_close", "td_close"):
            in_cell = False
        elif t == "tr_close":
            if in_thead:
                head_cells = row
            else:
                cells = [
                    f"{h}: {c}" if h and c and h != c else c
                    for h, c in zip(head_cells + [""] * len(row), row, strict=False)
                ]
                joined = "; ".join(c for c in cells if c)
                if joined and not _is_noise(joined):
                    add(Unit(joined, "row", here(), line, 0))
        elif t in ("fence", "code_block"):
            body = tok.content.split("\n")
            lang = tok.info.strip().split(" ")[0] if t == "fence" else ""
            offset = 1 if t == "fence" else 0
            for u in _code_units(body, lang, here(), line + offset, intro()):
                add(u)
        elif t == "inline":
            content = tok.content
            if in_heading:
                title = clean_inline(content)
                path = [(lv, h) for lv, h in path if lv < in_heading and h != title]
                path.append((in_heading, title))
                continue
            if in_cell:
                row.append(clean_inline(content))
                continue
            content = _CALLOUT.sub("", content.lstrip())
            fragment = first_inline and not text.lstrip().startswith("#") and content[:1].islower()
            first_inline = False
            if depth_item and not item_started and lists:
                item_started = True
                item = clean_inline(content)
                lists[-1][1] = item
                if item and not _is_noise(item):
                    add(Unit(item[:500], "item", here(), line, 0, intro=lists[-1][0], nested=len(lists) > 1))
                continue
            plain = content.split("\n")
            if len(plain) >= 3 and sum("`" in x for x in plain) * 2 > len(plain):
                # Lines of a paragraph that each hold an example are read as a list.
                lead = intro()
                for x in plain:
                    item = clean_inline(x)
                    if item and not _is_noise(item):
                        add(Unit(item[:500], "item", here(), line, 0, intro=lead))
                continue
            if _LINK_ONLY.fullmatch(content):
                continue
            # A paragraph after "... like this:" is what that sentence introduces (a pattern, an example).
            lead = intro()
            for n, s in enumerate(_SENTENCE.split(clean_inline(content))):
                s = s.strip()
                # A chunk that starts inside a paragraph (chunks overlap) starts with half a sentence.
                if s and not _is_noise(s) and not (fragment and n == 0):
                    introduced = lead if n == 0 and len(s) < 300 else ""
                    add(Unit(s[:500], "sentence", here(), line, 0, intro=introduced))
    return units
