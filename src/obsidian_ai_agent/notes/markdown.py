"""Obsidian Markdown: frontmatter, tags, wikilinks and Markdown links, headings and chunks.

The block structure (ATX and setext headings, fenced and indented code, HTML blocks) comes from
markdown-it-py, a CommonMark parser; Obsidian's own syntax (frontmatter, `#tags`, `[[wikilinks]]`,
`%%comments%%`) is read around it. Comments (`%%...%%`, `<!-- -->`) and Templater code (`<% ... %>`)
outside code are cut from the text before anything else reads it, keeping line numbers: they are never
indexed, shown, or taken for tags and links.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .chunker import Chunker, Section, Unit
from .model import Chunk, Link, ParsedSource, TokenCounter, sha256

_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)[\s\S]*?(?<!`)\1(?!`)")
_WIKILINK = re.compile(r"(!?)\[\[([^\[\]\n]*?)\]\]")
_MD_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HTML_ENTITY = re.compile(r"&#\w+;")
_TAG_START = re.compile(r"(?:^|(?<=[\s>(\[,;\"'*_]))#(?=[^\s#])")
_TAG_PUNCT = frozenset("_-/")
# What opens a span that is cut from the text (comment, template) or protects one (inline code).
_CUT_OPEN = re.compile(r"%%|<!--|<%|`+")
_CUT_CLOSE = {"%%": "%%", "<!--": "-->", "<%": "%>"}
_BLANK_LINE = re.compile(r"\n[ \t]*(?=\n)")
# Files a Markdown link `[text](target)` may point at to count as a link between sources.
_LINKABLE_SUFFIXES = frozenset({"", ".md", ".markdown", ".pdf"})

# Budgets: a hostile note gets a warning and a bounded result, never unbounded work or rows.
FRONTMATTER_MAX_YAML_BYTES = 1024 * 1024  # YAML text read at all
FRONTMATTER_MAX_EXPANDED_BYTES = 2 * 1024 * 1024  # working size once YAML aliases are expanded
FRONTMATTER_MAX_STORED_BYTES = 64 * 1024  # the frontmatter kept with the source, as JSON
MAX_TAGS = 1_000
MAX_ALIASES = 200
MAX_ALIAS_CHARS = 300
MAX_LINKS = 5_000

# Block structure only: inline parsing (the costlier half) runs just for paragraphs that may hold a
# Markdown link. Tables are paragraphs to this parser, which is all the chunker needs of them.
_MD = MarkdownIt("commonmark", {"maxNesting": 20}).disable("inline")
_MD_INLINE = MarkdownIt("commonmark", {"maxNesting": 20})


class _FrontmatterTooLarge(ValueError):
    pass


def decode(raw: bytes) -> tuple[str, str | None]:
    """Text of a note and a warning when it was not UTF-8."""
    for bom, enc in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if raw.startswith(bom):
            try:
                text = raw[len(bom) :].decode(enc)
            except UnicodeDecodeError:
                break
            return text, None if enc == "utf-8" else f"not UTF-8; decoded as {enc}"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    candidates = ["cp1252"]
    if b"\x00" in raw:  # UTF-16 without a byte order mark, most likely
        try:
            from charset_normalizer import from_bytes

            best = from_bytes(raw).best()
            if best is not None and best.encoding:
                candidates.insert(0, best.encoding)
        except Exception:  # pragma: no cover - optional helper
            pass
    for enc in candidates:
        try:
            return raw.decode(enc), f"not UTF-8; decoded as {enc}"
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("latin-1"), "not UTF-8; decoded as latin-1"


# -- frontmatter ----------------------------------------------------------------------------------


def _jsonable(value: object, budget: list[int]) -> object:
    """`value` as JSON data; `budget` is the bytes left, charged for what the JSON would hold, so
    YAML aliases (one anchored value referenced many times) are paid for every time they expand."""
    budget[0] -= 8
    if isinstance(value, str):
        budget[0] -= len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
    if budget[0] < 0:
        raise _FrontmatterTooLarge
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v, budget) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_jsonable(v, budget) for v in items]
    if isinstance(value, bytes):
        return _jsonable(value.decode("utf-8", "replace"), budget)
    return _jsonable(str(value), budget)


def _json_size(value: object) -> int:
    import json

    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))


_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_frontmatter(yaml_text: str, first: int, warnings: list[str]) -> dict[str, object]:
    """The frontmatter as JSON data, within the budgets (warnings say what was left out)."""
    if len(yaml_text) > FRONTMATTER_MAX_YAML_BYTES:
        warnings.append(
            f"frontmatter is {len(yaml_text) // 1024} KB, over the {FRONTMATTER_MAX_YAML_BYTES // 1024} KB"
            " limit; ignored (move long values into the note's body)"
        )
        return {}
    try:
        data = yaml.load(yaml_text, Loader=_YAML_LOADER) if yaml_text.strip() else None  # nosec B506
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + first + 1})" if mark is not None else ""
        reason = (getattr(e, "problem", None) or str(e)).splitlines()[0]
        warnings.append(f"frontmatter is not valid YAML{where}: {reason}")
        return {}
    except RecursionError:
        warnings.append("frontmatter is not valid YAML: nested too deeply")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        warnings.append("frontmatter is not a mapping; ignored")
        return {}
    try:
        converted = _jsonable(data, [FRONTMATTER_MAX_EXPANDED_BYTES])
    except _FrontmatterTooLarge:
        warnings.append(
            f"frontmatter expands to over {FRONTMATTER_MAX_EXPANDED_BYTES // (1024 * 1024)} MB"
            " (YAML aliases repeated, or very long values); ignored"
        )
        return {}
    except RecursionError:
        warnings.append("frontmatter is nested too deeply; ignored")
        return {}
    assert isinstance(converted, dict)
    return converted


def _split_frontmatter(lines: list[str]) -> tuple[int, int] | None:
    """(first, last) 0-based indexes of the YAML lines between the fences, or None."""
    if not lines or lines[0].rstrip() != "---":
        return None
    for i in range(1, len(lines)):
        if lines[i].rstrip() in ("---", "..."):
            return 1, i - 1
    return None


def _string_list(value: object, split_spaces: bool) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for item in items:
        if item is None or isinstance(item, dict | list):
            continue
        text = str(item)
        parts = re.split(r"[,\s]+" if split_spaces else r",", text) if isinstance(value, str) else [text]
        out.extend(p.strip() for p in parts if p.strip())
    return out


def _clean_tag(tag: str) -> str | None:
    """A tag as stored (no '#', lower-cased) or None when Obsidian would not treat it as a tag."""
    tag = tag.strip().lstrip("#").strip()
    end = 0
    for ch in tag:
        cat = unicodedata.category(ch)
        if cat[0] in "LMN" or ch in _TAG_PUNCT:
            end += 1
        else:
            break
    tag = tag[:end].strip("/")
    if not tag or all(ch.isdigit() or ch in _TAG_PUNCT for ch in tag):
        return None
    return tag.lower()


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    """Blank out matches, keeping string positions and line breaks."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


# -- structure --------------------------------------------------------------------------------------


@dataclass
class _Block:
    """A run of body lines that is one thing: a code block, an HTML block or a heading."""

    start: int  # 0-based index into the body's lines, inclusive
    end: int  # exclusive
    kind: str  # "code", "html" or "heading"
    level: int = 0
    title: str = ""


def _tokens(text: str) -> list[Token]:
    return _MD.parse(text)


def _blocks(tokens: list[Token], lines: list[str]) -> list[_Block]:
    """Code blocks at any depth (they hold no tags or links); headings and HTML blocks at the top level
    (a heading inside a list or callout does not start a section in Obsidian's outline either)."""
    out: list[_Block] = []
    for i, t in enumerate(tokens):
        if t.map is None:
            continue
        start, end = t.map
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        if t.type in ("fence", "code_block"):
            out.append(_Block(start, end, "code"))
        elif t.level == 0 and t.type == "html_block":
            out.append(_Block(start, end, "html"))
        elif t.level == 0 and t.type == "heading_open":
            title = " ".join(tokens[i + 1].content.split()) if i + 1 < len(tokens) else ""
            if title:
                out.append(_Block(start, end, "heading", level=int(t.tag[1:]), title=title))
    out.sort(key=lambda b: b.start)
    kept: list[_Block] = []
    for b in out:  # nested code inside an HTML block or the like: the outer one wins
        if kept and b.start < kept[-1].end:
            continue
        kept.append(b)
    return kept


def _cut_spans(text: str, code: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans of comments and template code outside code (blocks and inline spans).

    An unterminated opener is left as text. Linear: an opener whose closer is missing marks every later
    opener of its kind as unterminated too.
    """
    starts = [s for s, _ in code]
    blanks = [m.start() for m in _BLANK_LINE.finditer(text)]
    spans: list[tuple[int, int]] = []
    no_closer_after: dict[str, int] = {}
    tick_none_until: dict[int, int] = {}  # backtick run length -> paragraph end with no closer before it
    pos = 0
    while True:
        m = _CUT_OPEN.search(text, pos)
        if m is None:
            return spans
        s = m.start()
        k = bisect.bisect_right(starts, s) - 1
        if k >= 0 and s < code[k][1]:  # inside a code block
            pos = code[k][1]
            continue
        tok = m.group(0)
        if tok[0] == "`":
            j = bisect.bisect_right(blanks, s)
            para_end = blanks[j] if j < len(blanks) else len(text)
            n = len(tok)
            if tick_none_until.get(n, -1) >= para_end:
                pos = m.end()
                continue
            close = re.compile(r"(?<!`)" + "`" * n + r"(?!`)").search(text, m.end(), para_end)
            if close is None:
                tick_none_until[n] = para_end
                pos = m.end()
            else:
                pos = close.end()
            continue
        if no_closer_after.get(tok, len(text) + 1) <= s:
            pos = m.end()
            continue
        e = text.find(_CUT_CLOSE[tok], m.end())
        if e < 0:
            no_closer_after[tok] = s
            pos = m.end()
            continue
        end = e + len(_CUT_CLOSE[tok])
        spans.append((s, end))
        pos = end


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` without `spans`, keeping their line breaks (so line numbers stay true)."""
    out: list[str] = []
    pos = 0
    for s, e in spans:
        out.append(text[pos:s])
        breaks = text.count("\n", s, e)
        if breaks:
            out.append("\n" * breaks)
        elif s > 0 and text[s - 1] == " " and text[e : e + 1] == " ":
            e += 1  # "a <!-- x --> b" reads "a b"
        pos = e
    out.append(text[pos:])
    return "".join(out)


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    pos = text.find("\n")
    while pos >= 0:
        offsets.append(pos + 1)
        pos = text.find("\n", pos + 1)
    return offsets


def _clean_body(body: str) -> tuple[str, list[Token]]:
    """The body with comments and template code cut, and its markdown-it tokens."""
    tokens = _tokens(body)
    if "%%" not in body and "<!--" not in body and "<%" not in body:
        return body, tokens
    lines = body.split("\n")
    offsets = _line_offsets(body)
    code = [
        (offsets[b.start], offsets[b.end] if b.end < len(offsets) else len(body))
        for b in _blocks(tokens, lines)
        if b.kind == "code"
    ]
    spans = _cut_spans(body, code)
    if not spans:
        return body, tokens
    # A line that held a comment (where it starts or ends) may keep trailing spaces, or only spaces:
    # nothing a reader needs.
    touched = {bisect.bisect_right(offsets, pos) - 1 for span in spans for pos in span}
    cleaned = _cut(body, spans).split("\n")
    for i in touched:
        if i < len(cleaned):
            cleaned[i] = cleaned[i].rstrip()
    text = "\n".join(cleaned)
    return text, _tokens(text)


def _sections(lines: list[str], first_body: int, blocks: list[_Block]) -> list[Section]:
    """Split body lines into heading sections of units (paragraphs, code blocks, HTML blocks, headings)."""
    sections: list[Section] = [Section([])]
    stack: list[tuple[int, str]] = []
    para: list[int] = []

    def number(i: int) -> int:  # 1-based line in the file
        return first_body + i + 1

    def flush() -> None:
        if para:
            sections[-1].units.append(
                Unit("\n".join(lines[i] for i in para), number(para[0]), number(para[-1]))
            )
            para.clear()

    by_start = {b.start: b for b in blocks}
    i = 0
    while i < len(lines):
        b = by_start.get(i)
        if b is not None:
            flush()
            text = "\n".join(lines[b.start : b.end])
            if b.kind == "heading":
                while stack and stack[-1][0] >= b.level:
                    stack.pop()
                stack.append((b.level, b.title))
                sections.append(Section([t for _, t in stack]))
                sections[-1].units.append(Unit(text, number(b.start), number(b.end - 1), kind="heading"))
            else:
                kind = "code" if b.kind == "code" else "block"
                sections[-1].units.append(Unit(text, number(b.start), number(b.end - 1), kind=kind))
            i = b.end
            continue
        if lines[i].strip():
            para.append(i)
        else:
            flush()
        i += 1
    flush()
    return sections


# -- tags and links -------------------------------------------------------------------------------


def _wikilinks(raw: str, masked: str, line: int) -> list[Link]:
    links = []
    for m in _WIKILINK.finditer(masked):
        inner = raw[m.start(2) : m.end(2)].replace("\\|", "|")
        target_part, sep, alias = inner.partition("|")
        link = _link(target_part, alias.strip() or None if sep else None, m.group(1) == "!", line)
        if link is not None:
            links.append(link)
    return links


def _link(target_part: str, alias: str | None, embed: bool, line: int) -> Link | None:
    target, _, anchor = target_part.partition("#")
    target = target.strip()
    if target.lower().endswith(".md"):
        target = target[:-3]
    heading = block = None
    anchor = anchor.strip()
    if anchor.startswith("^"):
        block = anchor[1:] or None
    elif anchor:
        heading = anchor
    if not target and heading is None and block is None:
        return None
    return Link(target=target, heading=heading, block=block, alias=alias, embed=embed, line=line)


def _tags(masked: str) -> list[str]:
    text = _mask(_mask(_mask(masked, _URL), _MD_LINK_TARGET), _HTML_ENTITY)
    tags = []
    for m in _TAG_START.finditer(text):
        tag = _clean_tag(text[m.end() : m.end() + 200])
        if tag:
            tags.append(tag)
    return tags


def _markdown_links(tokens: list[Token], lines: list[str], first_body: int, limit: int) -> list[Link]:
    """`[text](Note.md)`, `[text](Folder/Note%20Name.md#Heading)` and `![](Note.md)`: links to sources
    (web addresses, other files and mail links are not); at most `limit` + 1 of them."""
    links: list[Link] = []
    for t in tokens:
        if len(links) > limit:
            break
        if t.type != "inline" or t.map is None or "](" not in t.content:
            continue
        line_lo, line_hi = t.map
        # Where the last link was found: the next one is searched for from there, so the search is
        # linear in the paragraph (a hostile one-line paragraph of 40,000 links included).
        cursor, col, misses = line_lo, 0, 0
        parsed = _MD_INLINE.parseInline(t.content)
        children = parsed[0].children or [] if parsed else []
        for j, c in enumerate(children):
            if c.type == "link_open":
                href = str(c.attrs.get("href") or "")
                text_parts = []
                k = j + 1
                while k < len(children) and children[k].type != "link_close":
                    text_parts.append(children[k].content)
                    k += 1
                alias: str | None = "".join(text_parts).strip() or None
                embed = False
            elif c.type == "image":
                href = str(c.attrs.get("src") or "")
                alias = c.content.strip() or None
                embed = True
            else:
                continue
            if not href or _SCHEME.match(href):
                continue
            path = unquote(href)
            file_part = path.partition("#")[0]
            if PurePosixPath(file_part).suffix.lower() not in _LINKABLE_SUFFIXES:
                continue
            if file_part.startswith("./"):
                path = path[2:]
            # The line: the first line of the paragraph, from the last link's place on, naming the target.
            if line_hi - line_lo > 1 and misses < 20:
                written = {"](" + href.partition("#")[0], "](" + file_part, "](<" + file_part}
                for k in range(cursor, line_hi):
                    start = col if k == cursor else 0
                    hits = [(f, len(w)) for w in written if (f := lines[k].find(w, start)) >= 0]
                    if hits:
                        found, size = min(hits)
                        cursor, col = k, found + size
                        break
                else:
                    misses += 1
            link = _link(path, alias, embed, first_body + cursor + 1)
            if link is not None:
                links.append(link)
    return links


class _Capped:
    """Distinct values in first-seen order, at most `limit` of them (linear: a dict, not list scans)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.values: dict[str, None] = {}
        self.dropped = 0

    def add(self, value: str | None) -> None:
        if not value or value in self.values:
            return
        if len(self.values) >= self.limit:
            self.dropped += 1
            return
        self.values[value] = None

    def list(self) -> list[str]:
        return list(self.values)


# -- the note ---------------------------------------------------------------------------------------


def parse_markdown(raw: bytes, rel_path: str, counter: TokenCounter) -> ParsedSource:
    """Parse one Obsidian note into metadata, links and chunks."""
    warnings: list[str] = []
    text, warning = decode(raw)
    if warning:
        warnings.append(warning)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    frontmatter: dict[str, object] = {}
    first_body = 0
    span = _split_frontmatter(lines)
    if span is not None:
        first, last = span
        first_body = last + 2
        frontmatter = _load_frontmatter("\n".join(lines[first : last + 1]), first, warnings)

    stem = PurePosixPath(rel_path).name
    for suffix in (".md", ".markdown"):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    fm_title = frontmatter.get("title")
    title = (
        str(fm_title).strip() if isinstance(fm_title, str | int | float) and str(fm_title).strip() else stem
    )

    aliases = _Capped(MAX_ALIASES)
    long_aliases = 0
    for key in ("aliases", "alias"):
        for a in _string_list(frontmatter.get(key), split_spaces=False):
            if len(a) > MAX_ALIAS_CHARS:
                long_aliases += 1
            else:
                aliases.add(a)
    tags = _Capped(MAX_TAGS)
    for key in ("tags", "tag"):
        for t in _string_list(frontmatter.get(key), split_spaces=True):
            tags.add(_clean_tag(t))

    body_text, tokens = _clean_body("\n".join(lines[first_body:]))
    body = body_text.split("\n") if first_body < len(lines) else []
    blocks = _blocks(tokens, body) if body else []
    sections = _sections(body, first_body, blocks)

    links: list[Link] = []
    for sec in sections:
        for unit in sec.units:
            if unit.kind == "code" or ("[[" not in unit.text and "#" not in unit.text):
                continue
            masked_unit = _mask(unit.text, _INLINE_CODE) if "`" in unit.text else unit.text
            for k, (raw_line, masked) in enumerate(
                zip(unit.text.split("\n"), masked_unit.split("\n"), strict=True)
            ):
                if "[[" in masked:
                    links.extend(_wikilinks(raw_line, masked, unit.start_line + k))
                    masked = _mask(masked, _WIKILINK)
                if "#" in masked:
                    for t in _tags(masked):
                        tags.add(t)
    if body and "](" in body_text and len(links) <= MAX_LINKS:
        links.extend(_markdown_links(tokens, body, first_body, MAX_LINKS - len(links)))
        links.sort(key=lambda ln: ln.line)

    if tags.dropped:
        warnings.append(f"more than {MAX_TAGS} distinct tags; only the first {MAX_TAGS} are kept")
    if aliases.dropped:
        warnings.append(f"more than {MAX_ALIASES} aliases; only the first {MAX_ALIASES} are kept")
    if long_aliases:
        warnings.append(f"{long_aliases} alias(es) longer than {MAX_ALIAS_CHARS} characters ignored")
    if len(links) > MAX_LINKS:
        warnings.append(f"more than {MAX_LINKS} links; only the first {MAX_LINKS} are kept")
        links = links[:MAX_LINKS]
    if frontmatter and _json_size(frontmatter) > FRONTMATTER_MAX_STORED_BYTES:
        warnings.append(
            f"frontmatter is over {FRONTMATTER_MAX_STORED_BYTES // 1024} KB as JSON; its title, aliases and"
            " tags are used but the rest is not stored"
        )
        frontmatter = {k: frontmatter[k] for k in ("title",) if isinstance(frontmatter.get(k), str)}
        if _json_size(frontmatter) > FRONTMATTER_MAX_STORED_BYTES:
            frontmatter = {}

    alias_list = aliases.list()
    chunker = Chunker(counter)
    chunks = chunker.chunk(title, sections)
    if not chunks:
        label = "\n".join([title, ", ".join(alias_list)]) if alias_list else title
        embed = chunker.embed_text(label, [], "")
        line_no = len(lines) if first_body else 1
        chunks = [
            Chunk(
                ordinal=0,
                text="",
                embed_text=embed,
                heading_path=[],
                start_line=min(line_no, len(lines)),
                end_line=min(line_no, len(lines)),
            )
        ]
    return ParsedSource(
        path=rel_path,
        kind="note",
        title=title,
        content_hash=sha256(raw),
        aliases=alias_list,
        tags=tags.list(),
        frontmatter=frontmatter,
        links=links,
        chunks=chunks,
        warnings=warnings,
    )
