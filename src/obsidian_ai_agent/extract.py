"""Extractive answers: the sentences of the retrieved notes that answer a question, cleaned, grouped, cited.

A chunk is cut into units a reader can take on their own: sentences, list items, table rows, and code
blocks kept whole (long blocks in windows of a few lines, so a syntax line is never cut in two). What a
reader of the rendered note never sees is left out: frontmatter, HTML and Obsidian comments, Templater
code, embeds and images, block ids, heading lines and bare fences. Each unit keeps the most specific
heading above it and its line, so its citation opens the right section.

Units are scored by meaning (cosine to the question, all-MiniLM-L6-v2, each unit embedded with its
heading) and by the question's words (stem prefixes, weighted by how rare they are among the candidates).
The best few are kept within a word budget, and the sentences beside the best ones in their section come
with them while words are left (the sentence before often says what the chosen one is about). They are
grouped by source, sources in order of their best unit and units in the order of the note, so the answer
reads as the note does. Links alone on a line (navigation) are no units; "See also" sentences rank low;
a retrieved chunk that is only a title and a line is read on into the section after it.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from markdown_it import MarkdownIt

from .search import query_terms

MAX_WORDS = 120
"""Words of the quoted units; with the lines that name each source, an answer stays under 150."""
MAX_UNITS = 6
MAX_EMBEDDED = 24
"""Units embedded per question: embedding is what an extract costs (~5 ms a unit on one core here)."""
PER_SOURCE = 3
"""Of those, the likeliest few of every source, so a source that ranked low is still read."""
W_SIM, W_LEX, W_RANK = 0.6, 0.35, 0.025
"""Weights of a unit's score: its cosine to the question (a unit is embedded with its heading), its share
of the question's words, and the penalty per place of its source in the ranking. Measured over the three
question sets of `eval/` (71 answerable questions, three vaults): a heading's own cosine as a fourth
term, as before, found fewer answers (43 against 46)."""
GAP, OTHER_SOURCE_GAP = 0.18, 0.08
"""How far below the best unit a unit may score and still be shown; and a unit of a source not shown yet."""
NEIGHBOURS = 3
"""The best chosen units whose neighbours in their section come with them while words are left."""
POINTER_PENALTY = 0.1
"""Taken off a sentence that only sends the reader elsewhere ("See also ...")."""
IDENTIFIER_BONUS = 0.1
"""Added to a unit holding a name of the question written like code."""
SMALL_CHUNK_WORDS = 40
"""A retrieved chunk with fewer words than this (a title and a line) is read on into the next chunk."""
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
_HOWTO = re.compile(
    r"^\s*(how\b|what(?:'s| is)? the (?:syntax|format|way|command)|which (?:syntax|format|instruction|line)"
    r"|can i\b|is there a way|write\b|show me)",
    re.I,
)
_WORD = re.compile(r"\w+")
_IDENTIFIER = re.compile(r"\b(?:\w*[0-9_]\w*[A-Za-z]\w*|\w*[A-Za-z]\w*[0-9_]\w*|[A-Z]{4,}|[a-z]+[A-Z]\w*)\b")
# A paragraph that is only a link ("*[[#Tests|Jump to the tests...]]*") is navigation, not an answer.
_LINK_ONLY = re.compile(r"[\s*_]*(?:\[\[[^\]\n]*\]\]|\[[^\]\n]*\]\([^)\n]*\)|<https?://[^>\s]*>)[\s*_.]*")
# A sentence that sends the reader elsewhere says little itself.
_POINTER = re.compile(r"^(?:see(?: also)?|for (?:more|details)[^,:]*,? see|back to|jump to|related:)\b", re.I)
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


class UnitVectors:
    """Embeddings of units, kept by text: the same notes answer many questions (bounded, thread-safe).
    Behind the memory, an optional shared layer (`load`, `save`: the index database), consulted before
    the model and given what the model embedded."""

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        size: int = 20_000,
        *,
        load: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
        save: Callable[[dict[str, np.ndarray]], None] | None = None,
    ) -> None:
        self._embed = embed
        self._size = size
        self._load, self._save = load, save
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _fill(self, missing: list[str]) -> None:
        found = self._load(missing) if self._load is not None else {}
        new = [t for t in missing if t not in found]
        if new:
            vecs = {t: np.asarray(v, dtype=np.float32) for t, v in zip(new, self._embed(new), strict=True)}
            if self._save is not None:
                self._save(vecs)
            found = {**found, **vecs}
        with self._lock:
            for t in missing:
                self._cache[t] = found[t]
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)

    def get(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._fill(missing)
        with self._lock:
            out = []
            for t in texts:
                v = self._cache.get(t)
                if v is None:  # evicted meanwhile by another thread
                    v = np.asarray(self._embed([t])[0], dtype=np.float32)
                else:
                    self._cache.move_to_end(t)
                out.append(v)
        return np.vstack(out) if out else np.zeros((0, 0), dtype=np.float32)


@dataclass
class Scored:
    unit: Unit
    source: int
    """The number of the source the unit comes from."""
    score: float
    similarity: float


@dataclass
class Extract:
    groups: list[tuple[int, list[str], list[Unit]]] = field(default_factory=list)
    """(source number, most specific heading path, units in note order), best group first."""
    best: float = -1.0
    similarity: float = -1.0
    """The best cosine between the question and one unit."""


def _stem(term: str) -> str:
    return term[:5] if len(term) > 5 else term


def is_howto(question: str) -> bool:
    return bool(_HOWTO.search(question)) or "`" in question


def focus_of(question: str) -> str | None:
    """What a question of several sentences asks: its last question (`After upgrading ... stopped
    running. How do I turn them back on?`); None for a question of one sentence."""
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", question.strip()) if p.strip()]
    if len(parts) < 2:
        return None
    asks = [p for p in parts if p.endswith("?")]
    return (asks or parts)[-1]


def _prefilter(candidates: list[tuple[int, Unit]], stems: list[str]) -> list[tuple[int, Unit]]:
    """The likeliest units, by shared words and the rank of their source, when there are too many to
    embed: the best `PER_SOURCE` of every source first, then the best of the rest."""
    if len(candidates) <= MAX_EMBEDDED:
        return candidates

    def cheap(c: tuple[int, Unit]) -> float:
        low = c[1].embed_text.lower()
        head = " ".join(c[1].heading_path[-2:]).lower()
        shared = sum(1 for s in stems if s in low) + 0.5 * sum(1 for s in stems if s in head)
        return shared / (len(stems) or 1) - 0.04 * c[0] - 0.002 * c[1].order

    ranked = sorted(range(len(candidates)), key=lambda i: cheap(candidates[i]), reverse=True)
    taken: list[int] = []
    per: dict[int, int] = {}
    for i in ranked:
        src = candidates[i][0]
        if per.get(src, 0) < PER_SOURCE:
            per[src] = per.get(src, 0) + 1
            taken.append(i)
    chosen = set(taken[:MAX_EMBEDDED])
    for i in ranked:
        if len(chosen) >= MAX_EMBEDDED:
            break
        chosen.add(i)
    return [candidates[i] for i in ranked if i in chosen]


def _score(
    question: str, qvec: np.ndarray, candidates: list[tuple[int, Unit]], vectors: UnitVectors
) -> list[Scored]:
    terms = [t for t in query_terms(question) if len(t) > 1]
    stems = [_stem(t) for t in terms]
    # Embedding is the cost of an extract: only the likeliest units are embedded.
    candidates = _prefilter(candidates, stems)
    lows = [u.embed_text.lower() for _, u in candidates]
    # A term found in few candidates says more than one found in all of them.
    n = len(candidates)
    idf = [math.log(1 + n / (1 + sum(1 for low in lows if s in low))) for s in stems]
    total_idf = sum(idf) or 1.0
    sims = vectors.get([u.embed_text for _, u in candidates]) @ qvec
    # "After upgrading, my queries stopped. How do I turn them back on?" asks how, in its last sentence.
    howto = is_howto(question) or is_howto(focus_of(question) or "")
    # A name written like code (`q4_k_m`, `SIGWINCH`, `TQ_short_mode`) is the surest sign of the place.
    names = {m.lower() for m in _IDENTIFIER.findall(question)}
    scored: list[Scored] = []
    for (src, u), low, sim in zip(candidates, lows, sims, strict=True):
        lex = sum(w for s, w in zip(stems, idf, strict=True) if s in low) / total_idf
        score = W_SIM * float(sim) + W_LEX * lex - W_RANK * (src - 1)
        if names and any(n in low for n in names):
            score += IDENTIFIER_BONUS
        if u.kind == "code":
            score += 0.06 if howto else -0.04
        elif howto and "`" in u.text:
            score += 0.05
        if u.words > 60:
            score -= 0.03
        if _POINTER.match(u.text):
            score -= POINTER_PENALTY
        scored.append(Scored(u, src, score, float(sim)))
    scored.sort(key=lambda s: -s.score)
    return scored


def select(
    question: str,
    qvec: np.ndarray,
    candidates: list[tuple[int, Unit]],
    vectors: UnitVectors,
    *,
    max_words: int = MAX_WORDS,
    max_units: int = MAX_UNITS,
) -> Extract:
    """The units that answer the question, grouped by source (see the module docstring)."""
    if not candidates:
        return Extract()
    scored = _score(question, qvec, [(src, u) for src, u in candidates if not u.extra], vectors)
    if not scored:
        return Extract()
    best = scored[0].score
    picked: list[Scored] = []
    shown: list[str] = []
    words = 0

    def take(s: Scored, budget: int) -> bool:
        nonlocal words
        t = s.unit.display()
        if any(t in p or p in t for p in shown) or (picked and words + s.unit.words > budget):
            return False
        picked.append(s)
        shown.append(t)
        words += s.unit.words
        bring(s.unit, s, budget)
        return True

    def bring(parent: Unit, s: Scored, budget: int) -> None:
        # A sentence that introduces a list or an example, or an item with sub-items, brings them along,
        # and a sub-item its own sub-items.
        nonlocal words
        for src, u in candidates:
            fits = words + u.words <= budget and u.display() not in shown
            if src == s.source and u.intro == parent.text and fits:
                picked.append(Scored(u, src, s.score, s.similarity))
                shown.append(u.display())
                words += u.words
                if u.kind == "item":
                    bring(u, s, budget)

    for s in scored:
        if len(picked) >= max_units or (picked and s.score < best - GAP):
            break
        take(s, max_words)
    # A question over several notes: the best unit of each other source close to the best one.
    for s in scored:
        if s.score < best - OTHER_SOURCE_GAP:
            break
        if s.source not in {p.source for p in picked}:
            take(s, max_words)
    # What is left of the budget goes to the units beside the best chosen ones, in their section: the
    # sentence before a chosen one often says what it is about, the one after how it goes on.
    beside = {(src, u.order): u for src, u in candidates if not u.extra}
    for s in sorted(picked, key=lambda p: -p.score)[:NEIGHBOURS]:
        for step in (-1, 1):
            near = beside.get((s.source, s.unit.order + step))
            if near is not None and near.heading_path == s.unit.heading_path and near.kind != "code":
                take(Scored(near, s.source, s.score, s.similarity), max_words)
    order: list[int] = []
    by_source: dict[int, list[Scored]] = {}
    for s in picked:
        if s.source not in by_source:
            order.append(s.source)
        by_source.setdefault(s.source, []).append(s)
    out = Extract(best=best, similarity=max(s.similarity for s in scored))
    for src in order:
        group = sorted(by_source[src], key=lambda s: s.unit.order)
        texts = {g.unit.text for g in group}
        units, seen = [], set()
        for s in group:
            u = s.unit
            if u.intro and (u.intro in seen or u.intro in texts):
                u = replace(u, intro="")  # the introducing sentence is shown once
            seen.add(u.intro)
            units.append(u)
        head = max(group, key=lambda s: s.score).unit.heading_path
        out.groups.append((src, head, units))
    return out


def answer_words(text: str) -> int:
    """Words of an answer before its source list, its header line (the one naming an extract) left out."""
    lines = text.split("\n\nSources:", 1)[0].split("\n")
    if lines and lines[0].endswith(":") and "no language model" in lines[0]:
        lines = lines[1:]
    return len(_WORD.findall("\n".join(lines)))


def render(groups: list[tuple[int, list[str], list[Unit]]], titles: dict[int, str]) -> str:
    """Markdown: a line naming each source and its heading, then its units, each group cited."""
    parts = []
    for src, heading, units in groups:
        where = " › ".join([titles.get(src, ""), *heading[-1:]]) if heading else titles.get(src, "")
        lines = [f"**{where}** [{src}]"]
        prose: list[str] = []
        for u in units:
            if u.kind == "sentence":
                prose.append(u.text)
                continue
            if prose:
                lines.append(" ".join(prose))
                prose = []
            if u.kind == "code":
                lines.append(u.display())
            elif u.nested:
                if u.intro:
                    lines.append(f"- {u.intro}")
                lines.append(f"  - {u.text}")
            else:
                if u.intro:
                    lines.append(u.intro)
                lines.append(f"- {u.text}")
        if prose:
            lines.append(" ".join(prose))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
