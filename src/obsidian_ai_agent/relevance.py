"""The relevance gate: whether the notes hold an answer to a question, decided before any model is called.

Evidence, all of it independent of which other notes happen to rank near the answer, so a decision does
not flip when unrelated notes change:

- `similarity`: the cosine between the question and its nearest chunk in the whole index (exact kNN over
  every vector, all-MiniLM-L6-v2), not only among the fused results.
- `unknown_words`: the question's words (3+ letters, stop-words dropped) of which no form is in the index.
  A form is the word itself or its porter stem (FTS5), a longer word it begins (`python` -> `Python3`), the
  word without trailing digits, a stem of at least 70% of it (`upgrading` -> `upgrade`), two indexed words
  it is made of (`filename` -> `file` + `name`), or the word joined to the next one (`meta bind` ->
  `metabind`).
- `names`: unknown words written with a capital inside the sentence (`Todoist`): the question is about
  something the notes never mention.

Rule: decline when the similarity is below `llm.min_similarity`, or below
`llm.min_similarity_unknown_words` while some word is unknown, or when an unknown word is a name.
Calibration (see `eval/README.md` for the question sets): over the dev questions and the two sets of
`eval/` (71 answerable questions, 14 negatives, three vaults), answerable questions reach 0.40-0.83 and a
negative with no unknown word 0.53-0.73, so `min_similarity` (0.35) only turns away questions far from
every note (0.23); near misses with an unknown word are held by the two other thresholds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .config import LLMSettings
from .search import query_terms

Probe = Callable[[str, bool], bool]
"""Whether the keyword index holds a word (with True: a word beginning with it); `Store.has_term`."""


def is_known(word: str, probe: Probe, next_word: str | None = None) -> bool:
    """Whether some form of a word is in the index (the forms: see the module docstring)."""
    if probe(word, False) or probe(word, True):
        return True
    bare = word.rstrip("0123456789")
    if 3 <= len(bare) < len(word) and probe(bare, False):
        return True
    cut = max(5, len(word) - 3)
    if cut < len(word) and probe(word[:cut], True):
        return True
    for i in range(4, len(word) - 3):
        if probe(word[:i], False) and probe(word[i:], False):
            return True
    return bool(next_word) and probe(word + (next_word or ""), False)


def unknown_words(question: str, probe: Probe) -> list[str]:
    terms = [t for t in query_terms(question) if len(t) > 2 and not t.isdigit()]
    words = [w.lower() for w in re.findall(r"\w+", question)]
    out = []
    for t in terms:
        nxt = words[words.index(t) + 1] if t in words and words.index(t) + 1 < len(words) else None
        if not is_known(t, probe, nxt):
            out.append(t)
    return out


@dataclass
class Relevance:
    """Whether the notes hold an answer: the rule (see the module docstring) and its evidence."""

    similarity: float
    unknown_words: list[str]
    names: list[str]
    covered: bool
    reason: str = ""

    @classmethod
    def judge(cls, question: str, similarity: float, unknown: list[str], settings: LLMSettings) -> Relevance:
        # A capitalised word that does not start a sentence is a name: the question is about that thing.
        starts = {m.end() for m in re.finditer(r"(^|[.!?]\s+)", question)}
        names = [
            m.group(0).lower()
            for m in re.finditer(r"\b[A-Z][\w-]+", question)
            if m.start() not in starts and m.group(0).lower() in unknown
        ]
        reason = ""
        if names:
            reason = f"the notes never mention {', '.join(names)}"
        elif similarity < settings.min_similarity:
            reason = f"no note is close to the question (similarity {similarity:.2f})"
        elif unknown and similarity < settings.min_similarity_unknown_words:
            reason = (
                f"the notes never use {', '.join(unknown)} and no note is close enough "
                f"(similarity {similarity:.2f} < {settings.min_similarity_unknown_words})"
            )
        return cls(round(similarity, 4), unknown, names, not reason, reason)
