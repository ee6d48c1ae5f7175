"""Obsidian Markdown: frontmatter, tags, wikilinks, headings and chunks."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from .chunker import Chunker, Section, Unit
from .model import Chunk, Link, ParsedSource, TokenCounter, sha256

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^((?:[ \t]*>)*)[ \t]{0,3}(`{3,}|~{3,})(.*)$")
_QUOTE_PREFIX = re.compile(r"^((?:[ \t]*>)*)")
_INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
_WIKILINK = re.compile(r"(!?)\[\[([^\[\]\n]*?)\]\]")
_MD_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_HTML_ENTITY = re.compile(r"&#\w+;")
_TAG_START = re.compile(r"(?:^|(?<=[\s>(\[,;\"'*_]))#(?=[^\s#])")
_TAG_PUNCT = frozenset("_-/")
_FRONTMATTER_MAX_NODES = 10_000


@dataclass
class _Line:
    number: int  # 1-based line in the file
    text: str
    code: int  # id of the fenced code block holding the line (fences included), 0 outside code


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


def _jsonable(value: object, budget: list[int]) -> object:
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("frontmatter too large")
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
        return value.decode("utf-8", "replace")
    return str(value)


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
    """Blank out matches, keeping string positions."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _classify(lines: list[str], first_body: int) -> list[_Line]:
    """Mark each body line as inside or outside fenced code (fences in callouts handled too)."""
    out: list[_Line] = []
    fence: tuple[str, int, int] | None = None  # (char, length, quote depth)
    block = 0
    for idx in range(first_body, len(lines)):
        text = lines[idx]
        depth = _QUOTE_PREFIX.match(text).group(1).count(">")  # type: ignore[union-attr]
        m = _FENCE.match(text)
        if fence is None:
            if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                fence = (m.group(2)[0], len(m.group(2)), m.group(1).count(">"))
                block += 1
                out.append(_Line(idx + 1, text, block))
            else:
                out.append(_Line(idx + 1, text, 0))
            continue
        if depth < fence[2]:  # the callout holding the fence ended
            fence = None
            out.append(_Line(idx + 1, text, 0))
            continue
        closing = (
            m is not None
            and m.group(2)[0] == fence[0]
            and len(m.group(2)) >= fence[1]
            and not m.group(3).strip()
        )
        out.append(_Line(idx + 1, text, block))
        if closing:
            fence = None
    return out


def _find_links(line: _Line, masked: str) -> list[Link]:
    links = []
    for m in _WIKILINK.finditer(masked):
        inner = line.text[m.start(2) : m.end(2)].replace("\\|", "|")
        target_part, sep, alias = inner.partition("|")
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
            continue
        links.append(
            Link(
                target=target,
                heading=heading,
                block=block,
                alias=alias.strip() or None if sep else None,
                embed=m.group(1) == "!",
                line=line.number,
            )
        )
    return links


def _find_tags(masked: str) -> list[str]:
    text = _mask(_mask(_mask(masked, _URL), _MD_LINK_TARGET), _HTML_ENTITY)
    tags = []
    for m in _TAG_START.finditer(text):
        tag = _clean_tag(text[m.end() : m.end() + 200])
        if tag:
            tags.append(tag)
    return tags


def _sections(body: list[_Line]) -> list[Section]:
    """Split body lines into heading sections of units (paragraphs, code blocks, headings)."""
    sections: list[Section] = [Section([])]
    stack: list[tuple[int, str]] = []
    para: list[_Line] = []

    def flush() -> None:
        if para:
            sections[-1].units.append(Unit("\n".join(p.text for p in para), para[0].number, para[-1].number))
            para.clear()

    i = 0
    while i < len(body):
        line = body[i]
        if line.code:
            flush()
            j = i
            while j + 1 < len(body) and body[j + 1].code == line.code:
                j += 1
            block = body[i : j + 1]
            sections[-1].units.append(
                Unit("\n".join(b.text for b in block), block[0].number, block[-1].number, kind="code")
            )
            i = j + 1
            continue
        m = _HEADING.match(line.text)
        if m and m.group(2).strip():
            flush()
            level, title = len(m.group(1)), m.group(2).strip()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            sections.append(Section([t for _, t in stack]))
            sections[-1].units.append(Unit(line.text, line.number, line.number, kind="heading"))
        elif not line.text.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return sections


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
        yaml_text = "\n".join(lines[first : last + 1])
        try:
            data = yaml.safe_load(yaml_text) if yaml_text.strip() else None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + first + 1})" if mark is not None else ""
            reason = (getattr(e, "problem", None) or str(e)).splitlines()[0]
            warnings.append(f"frontmatter is not valid YAML{where}: {reason}")
            data = None
        except RecursionError:
            warnings.append("frontmatter is not valid YAML: nested too deeply")
            data = None
        if data is not None and not isinstance(data, dict):
            warnings.append("frontmatter is not a mapping; ignored")
        elif isinstance(data, dict):
            try:
                converted = _jsonable(data, [_FRONTMATTER_MAX_NODES])
                assert isinstance(converted, dict)
                frontmatter = converted
            except (ValueError, RecursionError):
                warnings.append("frontmatter is too large or nested too deeply; ignored")

    stem = PurePosixPath(rel_path).name
    for suffix in (".md", ".markdown"):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    fm_title = frontmatter.get("title")
    title = (
        str(fm_title).strip() if isinstance(fm_title, str | int | float) and str(fm_title).strip() else stem
    )

    aliases: list[str] = []
    for key in ("aliases", "alias"):
        for a in _string_list(frontmatter.get(key), split_spaces=False):
            if a not in aliases:
                aliases.append(a)

    tags: list[str] = []

    def add_tag(t: str | None) -> None:
        if t and t not in tags:
            tags.append(t)

    for key in ("tags", "tag"):
        for t in _string_list(frontmatter.get(key), split_spaces=True):
            add_tag(_clean_tag(t))

    body = _classify(lines, first_body)
    links: list[Link] = []
    for line in body:
        if line.code or ("[[" not in line.text and "#" not in line.text):
            continue
        masked = _mask(line.text, _INLINE_CODE)
        if "[[" in masked:
            links.extend(_find_links(line, masked))
            masked = _mask(masked, _WIKILINK)
        if "#" in masked:
            for t in _find_tags(masked):
                add_tag(t)

    chunker = Chunker(counter)
    chunks = chunker.chunk(title, _sections(body))
    if not chunks:
        label = "\n".join([title, ", ".join(aliases)]) if aliases else title
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
        aliases=aliases,
        tags=tags,
        frontmatter=frontmatter,
        links=links,
        chunks=chunks,
        warnings=warnings,
    )
