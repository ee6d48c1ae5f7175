"""Extractive answers: the units of the retrieved notes (units.py) that answer a question, grouped, cited.

Units are scored by meaning (cosine to the question, all-MiniLM-L6-v2, each unit embedded with its
heading) and by the question's words (stem prefixes, weighted by how rare they are among the candidates;
a small number in both spellings, "two weeks" finding `every 2 weeks`).
The best few are kept within a word budget, and the sentences beside the best ones in their section come
with them while words are left (the sentence before often says what the chosen one is about). They are
grouped by source, sources in order of their best unit and units in the order of the note, so the answer
reads as the note does. "See also" sentences rank low;
a retrieved chunk that is only a title and a line is read on into the section after it. The best unit's
section brings the sentence it opens with (often what the rest explains); a long list brings only its
items that score near the best; and the best line, found word for word in other notes ("which themes
have a fire checkbox?"), is shown under each of them.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .search import query_terms, with_numerals
from .units import Unit, units_of, with_next

__all__ = ["Extract", "Unit", "UnitVectors", "render", "select", "units_of", "with_next"]

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
LONG_LIST, SHORT_LIST = 8, 3
"""A list of more than `LONG_LIST` items brings only its items that score near the best, else its first
`SHORT_LIST`."""
POINTER_PENALTY = 0.1
"""Taken off a sentence that only sends the reader elsewhere ("See also ...")."""
IDENTIFIER_BONUS = 0.1
"""Added to a unit holding a name of the question written like code."""
SMALL_CHUNK_WORDS = 40
"""A retrieved chunk with fewer words than this (a title and a line) is read on into the next chunk."""

_HOWTO = re.compile(
    r"^\s*(how\b|what(?:'s| is)? the (?:syntax|format|way|command)|which (?:syntax|format|instruction|line)"
    r"|can i\b|is there a way|write\b|show me)",
    re.I,
)
_IDENTIFIER = re.compile(r"\b(?:\w*[0-9_]\w*[A-Za-z]\w*|\w*[A-Za-z]\w*[0-9_]\w*|[A-Z]{4,}|[a-z]+[A-Z]\w*)\b")
# A sentence that sends the reader elsewhere says little itself.
_POINTER = re.compile(r"^(?:see(?: also)?|for (?:more|details)[^,:]*,? see|back to|jump to|related:)\b", re.I)
_WORD = re.compile(r"\w+")


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


def _stems(question: str) -> list[str]:
    """The question's words as the lexical score matches them: stem prefixes, and a small number in
    both spellings ("two" and "2"), a number matched only as a whole word."""
    return [_stem(t) for t in with_numerals(query_terms(question)) if len(t) > 1 or t.isdigit()]


def _holds(stem: str, low: str) -> bool:
    if stem.isdigit():
        return re.search(rf"(?<![\w.:-]){stem}(?![\w.:-])", low) is not None
    return stem in low


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
        shared = sum(1 for s in stems if _holds(s, low)) + 0.5 * sum(1 for s in stems if _holds(s, head))
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
    stems = _stems(question)
    # Embedding is the cost of an extract: only the likeliest units are embedded.
    candidates = _prefilter(candidates, stems)
    lows = [u.embed_text.lower() for _, u in candidates]
    # A term found in few candidates says more than one found in all of them.
    n = len(candidates)
    idf = [math.log(1 + n / (1 + sum(1 for low in lows if _holds(s, low)))) for s in stems]
    total_idf = sum(idf) or 1.0
    sims = vectors.get([u.embed_text for _, u in candidates]) @ qvec
    # "After upgrading, my queries stopped. How do I turn them back on?" asks how, in its last sentence.
    howto = is_howto(question) or is_howto(focus_of(question) or "")
    # A name written like code (`q4_k_m`, `SIGWINCH`, `TQ_short_mode`) is the surest sign of the place.
    names = {m.lower() for m in _IDENTIFIER.findall(question)}
    scored: list[Scored] = []
    for (src, u), low, sim in zip(candidates, lows, sims, strict=True):
        lex = sum(w for s, w in zip(stems, idf, strict=True) if _holds(s, low)) / total_idf
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
    note_of: dict[int, str] | None = None,
) -> Extract:
    """The units that answer the question, grouped by source (see the module docstring); `note_of` names
    the note of each source, so two chunks of one note do not show the same line twice."""
    note = note_of or {}
    if not candidates:
        return Extract()
    scored = _score(question, qvec, [(src, u) for src, u in candidates if not u.extra], vectors)
    if not scored:
        return Extract()
    best = scored[0].score
    picked: list[Scored] = []
    shown: list[str] = []
    words = 0

    shown_in: list[int] = []

    def take(s: Scored, budget: int) -> bool:
        nonlocal words
        t = s.unit.display()
        here = note.get(s.source, s.source)
        seen = (p for p, src in zip(shown, shown_in, strict=True) if note.get(src, src) == here)
        if any(t in p or p in t for p in seen) or (picked and words + s.unit.words > budget):
            return False
        picked.append(s)
        shown.append(t)
        shown_in.append(s.source)
        words += s.unit.words
        bring(s.unit, s, budget)
        return True

    score_of = {id(x.unit): x.score for x in scored}

    def bring(parent: Unit, s: Scored, budget: int) -> None:
        # A sentence that introduces a list or an example, or an item with sub-items, brings them along,
        # and a sub-item its own sub-items; of a long list, only the items that score near the best
        # (the one line of 22 that says `fire`), else its first few.
        nonlocal words
        kids = [u for src, u in candidates if src == s.source and u.intro == parent.text]
        if len(kids) > LONG_LIST:
            kids = [u for u in kids if score_of.get(id(u), -1.0) >= best - GAP / 2] or kids[:SHORT_LIST]
        for u in kids:
            if words + u.words <= budget and u.display() not in shown:
                picked.append(Scored(u, s.source, s.score, s.similarity))
                shown.append(u.display())
                shown_in.append(s.source)
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
    # The best line found word for word in other sources ("which themes have a fire checkbox?"): each
    # source that holds it is shown holding it, however it ranked.
    same = " ".join(scored[0].unit.text.lower().split())
    for s in scored:
        holders = {note.get(p.source, p.source) for p in picked}
        if note.get(s.source, s.source) not in holders and " ".join(s.unit.text.lower().split()) == same:
            take(s, max_words)
    # What is left of the budget goes to the units beside the best chosen ones, in their section: the
    # sentence before a chosen one often says what it is about, the one after how it goes on.
    beside = {(src, u.order): u for src, u in candidates if not u.extra}
    # The sentence a section opens with often says what the rest of it explains ("Never put `🏁 delete`
    # on a task that has nested tasks"): the best unit's section brings its first sentence, from the
    # chunk before where the chunk starts inside the section (`chunk_units`).
    top = picked[0]
    lead = min(
        (u for src, u in candidates if src == top.source and u.heading_path == top.unit.heading_path),
        key=lambda u: u.order,
    )
    if lead.kind == "sentence" and lead.order < top.unit.order:
        take(Scored(lead, top.source, top.score, top.similarity), max_words)
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
    """Markdown: a line naming each source and its heading, then its units, each group cited; sentences
    apart in the note are joined by an ellipsis."""
    parts = []
    for src, heading, units in groups:
        where = " › ".join([titles.get(src, ""), *heading[-1:]]) if heading else titles.get(src, "")
        lines = [f"**{where}** [{src}]"]
        prose: list[str] = []
        last = None
        for u in units:
            if u.kind == "sentence":
                # Sentences that do not follow each other in the note are joined by an ellipsis, so the
                # reader sees that something stands between them.
                if prose and last is not None and u.order != last + 1:
                    prose.append("…")
                prose.append(u.text)
                last = u.order
                continue
            last = u.order
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
