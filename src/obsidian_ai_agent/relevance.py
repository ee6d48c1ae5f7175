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
- `name_support`: for each name the notes do hold (a capitalised word inside the sentence, or one written
  like code: `ON_HOLD`, `camelCase`), the cosine between the question and the nearest chunk that holds
  it. A name held only by chunks far from the question ("the Prism theme", where one sample note mentions
  Prism in passing) is a near miss: the notes know the word, not about it.

Rule: decline when the similarity is below `llm.min_similarity`, or below
`llm.min_similarity_unknown_words` while some word is unknown, or when an unknown word is a name, or when
a name's support is more than `llm.max_name_gap` below the similarity.
Calibration (see `eval/README.md` for the question sets): over the dev questions and the two sets of
`eval/` (71 answerable questions, 14 negatives, three vaults), answerable questions reach 0.40-0.83 and a
negative with no unknown word 0.53-0.73, so `min_similarity` (0.35) only turns away questions far from
every note (0.23); near misses with an unknown word are held by the two other thresholds. A name's
support sits 0.00-0.21 below the similarity on answerable questions (`NCM811`, in one row of a long
table, is the farthest), 0.19 below on two near misses (`Prism`, `Pro`) and 0.28 on a third (`Apple`):
the two sets overlap, and no answerable question may be turned away, so `max_name_gap` (0.22) declines
only a name farther from the question than any answerable one's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import LLMSettings
from .search import STOPWORDS, query_terms

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


_CODE_NAME = re.compile(r"\b(?:[A-Za-z]+_\w*|[a-z]+[A-Z]\w*|[A-Z]{3,}\d*)\b")


def _sentence_starts(question: str) -> set[int]:
    return {m.end() for m in re.finditer(r"(^|[.!?]\s+)", question)}


def names_in(question: str) -> list[str]:
    """The words of a question that name a thing: capitalised inside a sentence (`Prism`, `Pacific`), or
    written like code (`ON_HOLD`, `TQ_short_mode`, `SIGRTMIN`), lower-cased."""
    starts = _sentence_starts(question)
    found = [m.group(0) for m in re.finditer(r"\b[A-Z][\w-]+", question) if m.start() not in starts]
    found += _CODE_NAME.findall(question)
    words = [w for n in found for w in re.findall(r"\w+", n.lower())]
    return [w for w in dict.fromkeys(words) if len(w) > 1 and w not in STOPWORDS and not w.isdigit()]


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
    name_support: dict[str, float] = field(default_factory=dict)

    @classmethod
    def judge(
        cls,
        question: str,
        similarity: float,
        unknown: list[str],
        settings: LLMSettings,
        name_support: dict[str, float] | None = None,
    ) -> Relevance:
        support = {n: round(v, 4) for n, v in (name_support or {}).items()}
        # A capitalised word that does not start a sentence is a name: the question is about that thing.
        starts = _sentence_starts(question)
        names = [
            m.group(0).lower()
            for m in re.finditer(r"\b[A-Z][\w-]+", question)
            if m.start() not in starts and m.group(0).lower() in unknown
        ]
        far = [n for n, v in support.items() if v < similarity - settings.max_name_gap]
        reason = ""
        if names:
            reason = f"the notes never mention {', '.join(names)}"
        elif far:
            reason = (
                f"the notes mention {', '.join(far)} only far from the question (nearest such chunk "
                f"{min(support[n] for n in far):.2f}, the question's nearest {similarity:.2f})"
            )
        elif similarity < settings.min_similarity:
            reason = f"no note is close to the question (similarity {similarity:.2f})"
        elif unknown and similarity < settings.min_similarity_unknown_words:
            reason = (
                f"the notes never use {', '.join(unknown)} and no note is close enough "
                f"(similarity {similarity:.2f} < {settings.min_similarity_unknown_words})"
            )
        return cls(round(similarity, 4), unknown, names, not reason, reason, support)
