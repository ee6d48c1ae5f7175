"""Splitting a source's text into chunks that fit the embedding model's window.

The chunker is format-agnostic: a parser hands it `Section`s (a heading path and a list of `Unit`s,
each a piece of text with its 1-based line range) and gets `Chunk`s back. Markdown notes, PDF pages
and plain text all go through here.

Rules:
- Every chunk's `embed_text` is `"{title}\\n{a > b}\\n\\n{text}"` (the heading line is left out when the
  path is empty) and never exceeds `counter.max_tokens` by `counter.count`; text is split, never
  truncated.
- Tiny sections (fewer than `min_tokens` tokens) are grouped with the following section when that
  section is a sibling or a descendant of the group's first section. A chunk's heading path is the
  deepest path shared by all sections whose text the chunk holds; a bare heading line of an ancestor
  does not count (the path already names it). So "# Dates" directly followed by "## Due date" gives
  ["Dates", "Due date"], and two tiny sibling sections under "Dates" give ["Dates"].
- Oversized sections are packed greedily from their units; a unit that does not fit on its own is
  split into lines, then sentences, then words, then (last resort) characters. A fenced code block is
  one unit, so it stays whole whenever it fits.
- Consecutive pieces of one section overlap by about `overlap` (15%) of the window: the next piece
  starts with the tail of the previous one (whole units, or the last unit's trailing lines, sentences
  or words).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

from .model import Chunk, TokenCounter

MIN_TOKENS = 40
OVERLAP = 0.15

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])\s*")
_WORD = re.compile(r"\S+")


@dataclass
class Unit:
    """A piece of text that is kept whole when it fits.

    `kind` is "block" (one or more whole lines: paragraph, callout, table), "code" (a fenced code
    block), "heading", "line" / "codeline" (one whole line), "sent", "word" or "char" (fragments of
    a line; code lines are only cut when one line alone cannot fit). `lead` is what separated a
    fragment from the previous fragment of the same line.
    """

    text: str
    start_line: int
    end_line: int
    kind: str = "block"
    lead: str = ""
    path: tuple[str, ...] = ()


@dataclass
class Section:
    heading_path: list[str]
    units: list[Unit] = field(default_factory=list)


@dataclass
class _Piece:
    units: list[Unit]
    text: str
    path: list[str]


def join_units(units: Sequence[Unit]) -> str:
    """Reassemble units into text as written (blank lines between them kept)."""
    return _join_with_offsets(units)[0]


def _join_with_offsets(units: Sequence[Unit]) -> tuple[str, list[int]]:
    """`join_units`, and where each unit starts in the joined text."""
    if not units:
        return "", []
    parts = [units[0].text]
    offsets = [0]
    size = len(units[0].text)
    for prev, cur in pairwise(units):
        if cur.start_line > prev.end_line:
            sep = "\n" * (cur.start_line - prev.end_line)
        elif cur.start_line < prev.end_line:  # overlap restarts inside a block: keep it readable
            sep = "\n"
        else:
            sep = cur.lead if cur.kind in ("sent", "word", "char") else "\n"
        parts.append(sep)
        size += len(sep)
        offsets.append(size)
        parts.append(cur.text)
        size += len(cur.text)
    return "".join(parts), offsets


def section_starts(units: Sequence[Unit], keep_lines: bool = True) -> list[tuple[int, int | None, list[str]]]:
    """(offset in the chunk's text, 1-based line, heading path) where each section a chunk holds starts;
    empty when the chunk holds one section only (its heading path says it all)."""
    _, offsets = _join_with_offsets(units)
    out: list[tuple[int, int | None, list[str]]] = []
    last: tuple[str, ...] | None = None
    for u, off in zip(units, offsets, strict=True):
        if u.path != last:
            out.append((off, u.start_line if keep_lines else None, list(u.path)))
            last = u.path
    return out if len(out) > 1 else []


def _common_prefix(paths: Sequence[tuple[str, ...]]) -> list[str]:
    if not paths:
        return []
    first = paths[0]
    n = len(first)
    for p in paths[1:]:
        n = min(n, len(p))
        for i in range(n):
            if p[i] != first[i]:
                n = i
                break
    return list(first[:n])


class Chunker:
    """Turns sections into chunks whose embed text fits `counter.max_tokens`."""

    def __init__(self, counter: TokenCounter, *, min_tokens: int = MIN_TOKENS, overlap: float = OVERLAP):
        self.counter = counter
        self.max_tokens = counter.max_tokens
        self.min_tokens = min_tokens
        self.overlap = overlap
        self._header_cache: dict[tuple[str, tuple[str, ...]], tuple[str, int]] = {}

    # -- tokens -----------------------------------------------------------------------------------

    def _costs(self, texts: Sequence[str]) -> list[int]:
        """Tokens a text adds inside a larger text (without the model's two special tokens)."""
        if not texts:
            return []
        return [max(0, n - 2) for n in self.counter.count_many(list(texts))]

    def header(self, title: str, path: Sequence[str]) -> tuple[str, int]:
        """The embed-text header and its token cost; shortened if it would eat over half the window."""
        key = (title, tuple(path))
        hit = self._header_cache.get(key)
        if hit is not None:
            return hit
        limit = self.max_tokens // 2
        joined = " > ".join(path)
        text = f"{title}\n{joined}" if joined else title
        n = self.counter.count(text)
        if n > limit:
            # A pathologically long title or heading: shorten the label, never the content.
            lo, hi = 0, len(text)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.counter.count(text[:mid] + "…") <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            text = text[:lo] + "…"
            n = self.counter.count(text)
        self._header_cache[key] = (text, n)
        return text, n

    def embed_text(self, title: str, path: Sequence[str], body: str) -> str:
        head, _ = self.header(title, path)
        return f"{head}\n\n{body}" if body else head

    def _budget(self, title: str, paths: Sequence[tuple[str, ...]]) -> int:
        """Tokens available to a chunk's body: the window minus the longest possible header."""
        worst = max((self.header(title, p)[1] for p in paths), default=self.header(title, ())[1])
        # count(head + "\n\n" + body) == count(head) + cost(body) for a whitespace-split tokenizer
        return max(8, self.max_tokens - worst)

    # -- splitting units --------------------------------------------------------------------------

    @staticmethod
    def _explode(unit: Unit) -> list[Unit]:
        """One level finer: block -> lines -> sentences -> words -> character halves."""
        if unit.kind in ("block", "heading", "code") and unit.end_line > unit.start_line:
            lines = unit.text.split("\n")
            line_kind = "codeline" if unit.kind == "code" else "line"
            return [
                replace(
                    unit,
                    text=line,
                    start_line=unit.start_line + i,
                    end_line=unit.start_line + i,
                    kind=line_kind,
                    lead="",
                )
                for i, line in enumerate(lines)
                if line.strip()
            ]
        if unit.kind in ("block", "heading", "code", "line", "codeline"):
            parts = [p for p in _SENTENCE_END.split(unit.text) if p and p.strip()]
            if len(parts) > 1:
                first = True
                out = []
                for p in parts:
                    out.append(replace(unit, text=p, kind="sent", lead="" if first else " "))
                    first = False
                return out
            unit = replace(unit, kind="sent")
        if unit.kind == "sent":
            words = _WORD.findall(unit.text)
            if len(words) > 1:
                return [
                    replace(unit, text=w, kind="word", lead=unit.lead if i == 0 else " ")
                    for i, w in enumerate(words)
                ]
            unit = replace(unit, kind="word", text=unit.text.strip())
        text = unit.text
        if len(text) <= 1:
            return [unit]
        mid = len(text) // 2
        return [
            replace(unit, text=text[:mid], kind="char"),
            replace(unit, text=text[mid:], kind="char", lead=""),
        ]

    def _fit(self, units: Sequence[Unit], costs: Sequence[int], budget: int) -> tuple[list[Unit], list[int]]:
        """Split every unit that does not fit `budget` on its own, recursively."""
        out_u: list[Unit] = []
        out_c: list[int] = []
        for u, c in zip(units, costs, strict=True):
            if c <= budget:
                out_u.append(u)
                out_c.append(c)
                continue
            parts = self._explode(u)
            if len(parts) == 1 and parts[0].text == u.text and parts[0].kind == u.kind:
                out_u.append(u)  # a single character over budget: cannot happen with a sane window
                out_c.append(c)
                continue
            sub_u, sub_c = self._fit(parts, self._costs([p.text for p in parts]), budget)
            out_u.extend(sub_u)
            out_c.extend(sub_c)
        return out_u, out_c

    def _tail(self, units: Sequence[Unit], costs: Sequence[int], allowance: int) -> tuple[list[Unit], int]:
        """The trailing text of a piece worth at most `allowance` tokens, to repeat as overlap."""
        out: list[Unit] = []
        total = 0
        for u, c in zip(reversed(units), reversed(costs), strict=True):
            if total + c <= allowance:
                out.insert(0, u)
                total += c
                continue
            parts = self._explode(u)
            if len(parts) > 1 and parts[0].kind != "char" and u.kind not in ("code", "codeline"):
                sub, sub_total = self._tail(parts, self._costs([p.text for p in parts]), allowance - total)
                out[:0] = sub
                total += sub_total
            break
        if total >= sum(costs):  # never repeat a whole piece
            return [], 0
        return out, total

    def _pack(self, units: Sequence[Unit], costs: Sequence[int], budget: int) -> list[list[Unit]]:
        units, costs = self._fit(units, costs, budget)
        allowance = int(budget * self.overlap)
        pieces: list[list[Unit]] = []
        cur: list[Unit] = []
        cur_costs: list[int] = []
        fresh = False  # does `cur` hold anything beyond overlap?
        total = 0
        for u, c in zip(units, costs, strict=True):
            if cur and fresh and total + c > budget:
                pieces.append(cur)
                tail, tail_total = self._tail(cur, cur_costs, allowance) if allowance > 0 else ([], 0)
                if tail_total + c > budget:
                    tail, tail_total = [], 0
                cur, total = list(tail), tail_total
                cur_costs = self._costs([t.text for t in tail]) if tail else []
                fresh = False
            cur.append(u)
            cur_costs.append(c)
            total += c
            fresh = True
        if cur and fresh:
            pieces.append(cur)
        return pieces

    # -- sections ---------------------------------------------------------------------------------

    def _group(self, sections: Sequence[Section]) -> list[tuple[list[Unit], list[int]]]:
        """Group tiny sections with the following sibling or descendant section."""
        all_units = [replace(u, path=tuple(s.heading_path)) for s in sections for u in s.units]
        all_costs = self._costs([u.text for u in all_units])
        groups: list[tuple[list[Unit], list[int]]] = []
        cur: list[Unit] = []
        cur_costs: list[int] = []
        first: tuple[str, ...] = ()
        pos = 0
        for sec in sections:
            if not sec.units:
                continue
            n = len(sec.units)
            units, costs = all_units[pos : pos + n], all_costs[pos : pos + n]
            pos += n
            path = tuple(sec.heading_path)
            if cur and sum(cur_costs) < self.min_tokens:
                related = len(path) >= len(first) and path[: len(first) - 1] == first[: len(first) - 1]
                if related:
                    cur.extend(units)
                    cur_costs.extend(costs)
                    continue
            if cur:
                groups.append((cur, cur_costs))
            cur, cur_costs, first = list(units), list(costs), path
        if cur:
            groups.append((cur, cur_costs))
        return groups

    @staticmethod
    def _piece_path(units: Sequence[Unit]) -> list[str]:
        content = [u.path for u in units if u.kind != "heading"]
        return _common_prefix(content or [u.path for u in units])

    def chunk(
        self,
        title: str,
        sections: Sequence[Section],
        *,
        page: int | None = None,
        keep_lines: bool = True,
        first_ordinal: int = 0,
    ) -> list[Chunk]:
        """Chunks for `sections`, ordinals from `first_ordinal`. No chunk for sections without text."""
        pieces: list[_Piece] = []
        for group, group_costs in self._group(sections):
            paths = sorted({u.path for u in group})
            budget = self._budget(title, paths)
            for piece_units in self._pack(group, group_costs, budget):
                pieces.append(_Piece(piece_units, join_units(piece_units), self._piece_path(piece_units)))
        pieces = self._enforce(title, pieces)
        chunks = []
        for i, p in enumerate(pieces):
            chunks.append(
                Chunk(
                    ordinal=first_ordinal + i,
                    text=p.text,
                    embed_text=self.embed_text(title, p.path, p.text),
                    heading_path=p.path,
                    start_line=p.units[0].start_line if keep_lines else None,
                    end_line=max(u.end_line for u in p.units) if keep_lines else None,
                    page=page,
                    section_starts=section_starts(p.units, keep_lines),
                )
            )
        return chunks

    def _enforce(self, title: str, pieces: list[_Piece]) -> list[_Piece]:
        """Check every piece with the real tokenizer; re-split any that is over the window."""
        for attempt in range(4):
            counts = self.counter.count_many([self.embed_text(title, p.path, p.text) for p in pieces])
            if all(n <= self.max_tokens for n in counts):
                return pieces
            out: list[_Piece] = []
            for p, n in zip(pieces, counts, strict=True):
                if n <= self.max_tokens:
                    out.append(p)
                elif attempt < 3:
                    budget = max(
                        4, self.max_tokens - self.header(title, p.path)[1] - (n - self.max_tokens) - 2
                    )
                    units, costs = self._fit(p.units, self._costs([u.text for u in p.units]), budget // 2)
                    for sub in self._pack(units, costs, budget):
                        out.append(_Piece(sub, join_units(sub), self._piece_path(sub)))
                else:
                    out.extend(self._pack_exact(title, p))
            pieces = out
        return pieces

    def _pack_exact(self, title: str, piece: _Piece) -> list[_Piece]:
        """Last resort for counters whose counts do not add up: grow each piece while the real count
        of its embed text fits (binary search over fine-grained units)."""
        units = list(piece.units)
        fine: list[Unit] = []
        while units:  # explode to single words (or smaller) first
            u = units.pop(0)
            parts = self._explode(u) if u.kind not in ("word", "char") else [u]
            if len(parts) > 1 or parts[0].kind != u.kind:
                units[:0] = parts
            else:
                fine.append(u)

        def fits(chunk: list[Unit]) -> bool:
            return (
                self.counter.count(self.embed_text(title, self._piece_path(chunk), join_units(chunk)))
                <= self.max_tokens
            )

        out: list[_Piece] = []
        i = 0
        while i < len(fine):
            if not fits(fine[i : i + 1]):
                halves = self._explode(fine[i])
                if len(halves) > 1:
                    fine[i : i + 1] = halves
                    continue
            lo, hi = i + 1, len(fine)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits(fine[i:mid]):
                    lo = mid
                else:
                    hi = mid - 1
            out.append(_Piece(fine[i:lo], join_units(fine[i:lo]), self._piece_path(fine[i:lo])))
            i = lo
        return out
