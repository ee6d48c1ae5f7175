"""Checking a generated answer against its sources, and stopping a generation that goes nowhere.

Each sentence of a model's answer is compared with the units (sentences, items, code) of the sources it
cites: it is supported when one of them is close in meaning (cosine, all-MiniLM-L6-v2) and the facts it
states (numbers, dates, `code`, quoted words) all appear in a cited source. A sentence that cites nothing is
supported only if it is close to some source. Unsupported sentences are marked in the text and listed in
the answer's `sentences`; an answer with no supported citation is not shown as grounded at all (answer.py
falls back to the extract).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from .extract import UnitVectors
from .units import clean_inline

UNSUPPORTED_MARK = " _(not supported by the cited notes)_"
_CITE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SPLIT = re.compile(r"(?<=[.!?])(?:\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])*\s+(?=[A-Z0-9`*\"'(\[_-])|\n+")
_FACT = re.compile(r"`([^`\n]+)`|\"([^\"\n]{2,60})\"|(\d+(?:[.:/-]\d+)*)")


@dataclass
class Sentence:
    text: str
    citations: list[int]
    supported: bool
    similarity: float
    missing_facts: list[str]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sentences_of(text: str) -> list[tuple[str, list[int]]]:
    """(sentence, the source numbers it cites), citations that follow a sentence's full stop included."""
    out: list[tuple[str, list[int]]] = []
    for raw in _SPLIT.split(text):
        s = raw.strip()
        if not s:
            continue
        nums = [int(n) for m in _CITE.finditer(s) for n in m.group(1).split(",")]
        out.append((s, list(dict.fromkeys(nums))))
    return out


def facts(sentence: str) -> list[str]:
    """What a sentence states that can be checked word for word: code, quoted text, numbers and dates."""
    body = _CITE.sub("", sentence)
    found = []
    for m in _FACT.finditer(body):
        f = next(g for g in m.groups() if g)
        if m.group(3) and len(f) < 2:
            continue  # a lone digit ("1 way") is too weak to check
        found.append(f.strip())
    return found


def check(
    text: str,
    qvec_units: dict[int, list[str]],
    vectors: UnitVectors,
    *,
    min_similarity: float,
) -> list[Sentence]:
    """Each sentence of `text` judged against the units of the sources it cites (`qvec_units`: source
    number -> its units' texts)."""
    parsed = sentences_of(text)
    if not parsed:
        return []
    all_units = [(n, u) for n, us in qvec_units.items() for u in us]
    unit_vecs = vectors.get([u for _, u in all_units]) if all_units else np.zeros((0, 384), dtype=np.float32)
    sent_vecs = vectors.get([clean_inline(_CITE.sub("", s)) or s for s, _ in parsed])
    sims = sent_vecs @ unit_vecs.T if len(all_units) else np.zeros((len(parsed), 0))
    owners = np.asarray([n for n, _ in all_units])
    out = []
    for i, (s, cited) in enumerate(parsed):
        pool = np.isin(owners, cited) if cited else np.ones(len(all_units), dtype=bool)
        best = float(sims[i][pool].max()) if pool.any() else -1.0
        source_text = " ".join(u for n, u in all_units if not cited or n in cited).lower()
        missing = [f for f in facts(s) if f.lower() not in source_text]
        bare = _CITE.sub("", s).strip()
        trivial = len(re.findall(r"\w+", bare)) < 4  # "Here is how:" needs no source
        supported = trivial or (best >= min_similarity and not missing)
        out.append(Sentence(s, cited, supported, round(best, 4), missing))
    return out


def mark(sentences: list[Sentence]) -> str:
    """The answer's text with each unsupported sentence marked."""
    parts = []
    for s in sentences:
        parts.append(s.text if s.supported else s.text + UNSUPPORTED_MARK)
    return " ".join(parts)


class Repetition:
    """Notices a generation that has started to repeat itself: a sentence said again, or the last words
    already said twice before."""

    def __init__(self, window: int = 12) -> None:
        self.window = window
        self.text = ""
        self.stopped = ""
        """Why the generation was stopped early, if it was."""

    def add(self, delta: str) -> bool:
        """Adds streamed text; True when the generation should stop."""
        self.text += delta
        words = self.text.split()
        if len(words) >= self.window * 3:
            tail = " ".join(words[-self.window :])
            if " ".join(words[: -self.window]).count(tail) >= 2:
                return True
        done = [x.strip().lower() for x in re.split(r"(?<=[.!?])\s+", self.text)[:-1] if len(x.strip()) > 20]
        return len(done) != len(set(done))


def bounded(stream: Iterator[str], deadline: float, repetition: Repetition) -> Iterator[str]:
    """The tokens of a stream until it ends, the deadline passes, or it repeats itself."""
    for delta in stream:
        yield delta
        if repetition.add(delta):
            repetition.stopped = "it began to repeat itself"
        elif time.monotonic() > deadline:
            repetition.stopped = "it ran past answer.max_seconds"
        if repetition.stopped:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            return
