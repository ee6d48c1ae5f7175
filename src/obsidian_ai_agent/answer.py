"""Answers from the notes: retrieval -> relevance gate -> prompt -> answer -> checked citations.

Three ways to answer, chosen by `llm.provider`: an OpenAI-compatible server, a GGUF model in this process,
or (the default, and the fallback when a model fails) an extract of the most relevant sentences. Every
way cites numbered sources that carry the note's path, heading path, lines or page and obsidian:// link.

The relevance gate declines, without calling any model, when the notes do not hold the answer. Its
evidence: `similarity`, the cosine between the question and its best retrieved chunk (all-MiniLM-L6-v2),
and `unknown_words`, the question's words (3+ letters, stop-words dropped) that occur nowhere in the
index (FTS5, porter stems). Measured on shared/eval/vault_questions_dev.jsonl over the docs vault:

- similarity of the 22 answerable questions: 0.42-0.83; of the 3 negative ones: 0.47, 0.50, 0.60.
  Similarity alone cannot separate them (the lowest answerable one is below every negative one).
- unknown words: answerable q006 `unfinished` (0.58), q009 `upgrading` (0.69), q011 `ticked` (0.52);
  negative q023 `Todoist` (0.60), q024 `paid` (0.47), q025 `teammate` (0.50). The others have none.

Rule: decline when (a) the best similarity is below `llm.min_similarity` (0.40, under the lowest
answerable question: a floor for questions on other subjects altogether), or (b) the question has
unknown words and its similarity is below `llm.min_similarity_unknown_words` (0.51, between 0.50 and
0.52), or (c) an unknown word is a name (capitalised inside the sentence, like `Todoist`): the question is
about something the notes never mention. On the dev set this declines 3/3 negatives and 0/22 answerable
questions, but the margins are thin (0.01-0.02) and three negatives are few: expect misses on new data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .cache import Cache, cache_key
from .config import LLMSettings
from .llm import LLM, LLMError, Message, get_llm
from .search import Searcher, SearchResult, fts_match, query_terms
from .store import conversations as convo

PROMPT_VERSION = "1"

SYSTEM_PROMPT = (
    "You answer questions about the user's notes using ONLY the numbered sources given. "
    "After every statement, cite the source it comes from with its number in square brackets, like [1]. "
    "If the sources do not contain the answer, say that the notes do not cover it. "
    "Do not use any other knowledge. Be brief."
)
REWRITE_PROMPT = (
    "Rewrite the user's last question as one standalone search query, using the earlier questions for "
    "context. Reply with the query only."
)
EXTRACT_HEADER = "Extract from your notes (no language model was used):"
_CITE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`*\"'(\[])")
_LIST = re.compile(r"^(?:[-*+>]\s+|\d+[.)]\s+)+")
_DECLINE = re.compile(
    r"\b(do(?:es)? not|don't|doesn't) (?:cover|contain|mention|say)|not (?:in|covered by) (?:the|your) notes",
    re.I,
)
_FOLLOWUP = re.compile(
    r"^(and|also|but|so|what about|how about|then|same)\b|\b(it|its|that|this|they|them|those|these)\b", re.I
)


class AnswerError(Exception):
    """The question could not be answered (the model failed and `llm.on_error` is `fail`)."""


@dataclass
class Citation:
    n: int
    path: str
    title: str
    heading_path: list[str]
    start_line: int | None
    end_line: int | None
    page: int | None
    kind: str
    snippet: str
    link: str
    chunk_id: int

    @classmethod
    def of(cls, n: int, r: SearchResult) -> Citation:
        return cls(
            n, r.path, r.title, list(r.heading_path), r.start_line, r.end_line, r.page, r.kind, r.snippet,
            r.link, r.chunk_id,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    question: str
    text: str
    mode: Literal["llm", "extractive", "declined"]
    citations: list[Citation]
    """The sources the answer cites, in order of first citation."""
    sources: list[Citation]
    """Every numbered source that was given."""
    provider: str
    model: str | None
    query: str
    """What retrieval ran on: the question, or its standalone form in a conversation."""
    declined: bool = False
    notice: str | None = None
    conversation_id: str | None = None
    closest: list[dict[str, str]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        d = dict(d)
        d["citations"] = [Citation(**c) for c in d.get("citations", [])]
        d["sources"] = [Citation(**c) for c in d.get("sources", [])]
        return cls(**d)


@dataclass
class RetrievalEvent:
    query: str
    sources: list[Citation]
    type: str = "retrieval"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenEvent:
    text: str
    type: str = "token"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ErrorEvent:
    message: str
    code: str
    recovered: bool
    """True when an extract follows: text streamed so far is replaced by the final answer."""
    type: str = "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AnswerEvent:
    answer: Answer
    type: str = "answer"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "answer": self.answer.to_dict()}


Event = RetrievalEvent | TokenEvent | ErrorEvent | AnswerEvent


# -- pieces that need no model --------------------------------------------------------------------


def parse_citations(text: str, sources: list[Citation]) -> tuple[str, list[Citation]]:
    """The text with citations of sources that were not given removed, and the cited sources in order."""
    given = {c.n: c for c in sources}
    cited: dict[int, Citation] = {}

    def keep(m: re.Match[str]) -> str:
        nums = [int(x) for x in m.group(1).split(",")]
        valid = [n for n in nums if n in given]
        for n in valid:
            cited.setdefault(n, given[n])
        return "[" + ", ".join(str(n) for n in valid) + "]" if valid else ""

    cleaned = _CITE.sub(keep, text)
    cleaned = re.sub(r"[ \t]+([.,;:])", r"\1", cleaned)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), list(cited.values())


def sentence_units(text: str) -> list[str]:
    """The sentences, list items, table rows and code lines of a chunk, headings left out. A sentence
    that introduces a list or an example ("...these characters:") keeps the lines it introduces."""
    units: list[str] = []
    para: list[str] = []
    in_code = False
    open_intro = False  # the last unit ends with ":" and takes the following item lines

    def flush() -> None:
        nonlocal open_intro
        if para:
            units.extend(s.strip() for s in _SENTENCE.split(" ".join(para)) if s.strip())
            para.clear()
            open_intro = units[-1].endswith(":")

    def item(line: str) -> None:
        if open_intro and len(units[-1]) < 300:
            units[-1] = f"{units[-1]} {line}"
        else:
            units.append(line)

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            flush()
            in_code = not in_code
            continue
        if in_code:
            if line:
                item(line)
            continue
        if not line or line.startswith("#") or re.fullmatch(r"[|:\-\s]+", line) or line.startswith("---"):
            flush()
            continue
        if line.startswith("|") or _LIST.match(line):
            flush()
            item(_LIST.sub("", line).strip())
            continue
        para.append(line)
    flush()
    return [u[:400] for u in units if len(re.findall(r"\w", u)) >= 2 or re.search(r"[^\w\s]{1,3}", u)]


def term_overlap(terms: list[str], text: str) -> float:
    """Share of the query's terms found in a text (a term's first 5 letters stand in for its stem)."""
    if not terms:
        return 0.0
    low = text.lower()
    return sum(1 for t in terms if (t[:5] if len(t) > 5 else t) in low) / len(terms)


@dataclass
class Relevance:
    """Whether the notes hold an answer: the decline rule (see the module docstring) and its evidence."""

    similarity: float
    coverage: float
    unknown_words: list[str]
    names: list[str]
    covered: bool

    @classmethod
    def judge(
        cls, question: str, similarity: float, coverage: float, unknown: list[str], settings: LLMSettings
    ) -> Relevance:
        # A capitalised word that does not start a sentence is a name: the question is about that thing.
        starts = {m.end() for m in re.finditer(r"(^|[.!?]\s+)", question)}
        names = [
            m.group(0).lower()
            for m in re.finditer(r"\b[A-Z][\w-]+", question)
            if m.start() not in starts and m.group(0).lower() in unknown
        ]
        floor = settings.min_similarity_unknown_words if unknown else settings.min_similarity
        covered = similarity >= max(floor, settings.min_similarity) and not names
        return cls(round(similarity, 4), round(coverage, 4), unknown, names, covered)


# -- the answerer ---------------------------------------------------------------------------------


class Answerer:
    """Answers questions over one searcher; safe to share between threads."""

    def __init__(
        self, searcher: Searcher, settings: LLMSettings, *, llm: LLM | None = None, cache: Cache | None = None
    ) -> None:
        self.searcher = searcher
        self.store = searcher.store
        self.settings = settings
        self.cache = cache
        self._llm = llm
        self._llm_error: LLMError | None = None

    @property
    def llm(self) -> LLM | None:
        if self._llm is None and self.settings.provider != "extractive":
            self._llm = get_llm(self.settings)
        return self._llm

    @property
    def provider(self) -> str:
        return self.settings.provider if self._llm is None else self._llm.provider

    @property
    def model_name(self) -> str | None:
        if self.settings.provider == "extractive" and self._llm is None:
            return None
        return self._llm.model if self._llm is not None else (self.settings.model or None)

    def ask(self, question: str, **kwargs: Any) -> Answer:
        """The final answer (the stream consumed); raises AnswerError when the model fails and
        `llm.on_error` is `fail`."""
        for event in self.stream(question, **kwargs):
            if isinstance(event, AnswerEvent):
                return event.answer
            if isinstance(event, ErrorEvent) and not event.recovered:
                raise AnswerError(event.message)
        raise AnswerError("no answer was produced")  # pragma: no cover - stream always ends in one

    def stream(
        self,
        question: str,
        *,
        conversation_id: str | None = None,
        owner: str = "",
        mode: str | None = None,
        folder: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
    ) -> Iterator[Event]:
        """Events: retrieval (the numbered sources), tokens, maybe an error, and the final answer."""
        t0 = time.perf_counter()
        question = " ".join(question.split())
        if not question:
            yield ErrorEvent("the question is empty", "empty_question", recovered=False)
            return
        history: list[convo.Turn] = []
        if conversation_id:
            convo.ensure_conversation(self.store, conversation_id, owner)
            history = convo.conversation_turns(self.store, conversation_id, owner)
        query = self._standalone(question, history)
        filters = {"folder": folder, "tag": tag, "kind": kind}
        generation = self.store.generation
        key = cache_key(
            "answer", query, generation, filters=filters, mode=mode, provider=self.settings.provider,
            model=self.settings.model, base_url=self.settings.base_url, prompt=PROMPT_VERSION,
            k=self.settings.sources,
            gate=[self.settings.min_similarity, self.settings.min_similarity_unknown_words],
            history=[t.content for t in history[-4:]] if self.settings.provider != "extractive" else None,
        )  # fmt: skip
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            cached = Answer.from_dict(hit)
            cached.cached, cached.question, cached.conversation_id = True, question, conversation_id
            yield RetrievalEvent(cached.query, cached.sources)
            yield TokenEvent(cached.text)
            cached.timings = {"total_ms": _ms(t0), "first_token_ms": _ms(t0)}
            self._remember(conversation_id, question, cached)
            yield AnswerEvent(cached)
            return

        results = self._retrieve(query, generation, mode, filters)
        sources = [Citation.of(i, r) for i, r in enumerate(results[: self.settings.sources], 1)]
        qvec = self.searcher.queries.get(query)
        relevance = self._relevance(query, qvec, results)
        t_retrieved = _ms(t0)
        yield RetrievalEvent(query, sources if relevance.covered else [])
        base = {
            "question": question, "query": query, "conversation_id": conversation_id,
            "provider": self.provider, "model": self.model_name,
            "evidence": asdict(relevance),
        }  # fmt: skip
        answer: Answer | None = None
        err: LLMError | None = None
        if not relevance.covered:
            answer = self._declined(base, results)
            yield TokenEvent(answer.text)
        else:
            try:
                llm = self.llm
                if llm is not None:
                    for ev in self._generate(llm, base, question, sources, history, t0):
                        if isinstance(ev, AnswerEvent):
                            answer = ev.answer
                        else:
                            yield ev
            except LLMError as e:
                err = e
        if answer is None:
            if err is not None:
                if self.settings.on_error == "fail":
                    yield ErrorEvent(str(err), type(err).__name__, recovered=False)
                    return
                yield ErrorEvent(str(err), type(err).__name__, recovered=True)
            answer = self._extract(base, query, qvec, sources)
            if err is not None:
                answer.notice = f"The language model failed, so this is an extract instead: {err}"
                answer.provider, answer.model = "extractive", None
            yield TokenEvent(answer.text)
        answer.timings.setdefault("first_token_ms", _ms(t0))
        answer.timings.update({"retrieval_ms": t_retrieved, "total_ms": _ms(t0)})
        if self.cache and answer.notice is None:
            stored = answer.to_dict()
            stored["timings"] = {}
            self.cache.set(key, stored)
        self._remember(conversation_id, question, answer)
        yield AnswerEvent(answer)

    # -- steps ------------------------------------------------------------------------------------

    def _retrieve(
        self, query: str, generation: int, mode: str | None, filters: dict[str, Any]
    ) -> list[SearchResult]:
        k = max(self.settings.sources, 8)
        key = cache_key("search", query, generation, filters=filters, mode=mode, k=k)
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            return [SearchResult(**r) for r in hit["results"]]
        results = self.searcher.search(query, k=k, mode=mode, **filters)
        if self.cache:
            self.cache.set(key, {"results": [r.to_dict() for r in results]})
        return results

    def _chunk_vectors(self, chunk_ids: list[int]) -> dict[int, np.ndarray]:
        vm = self.searcher.vectors
        vm.refresh()
        idx = np.nonzero(np.isin(vm.ids, np.asarray(chunk_ids, dtype=np.int64)))[0]
        return {int(vm.ids[i]): vm.matrix[i] for i in idx}

    def _relevance(self, query: str, qvec: np.ndarray, results: list[SearchResult]) -> Relevance:
        if not results:
            return Relevance.judge(query, -1.0, 0.0, [], self.settings)
        vecs = self._chunk_vectors([r.chunk_id for r in results])
        sims = [float(v @ qvec) for v in vecs.values()]
        best = max(sims) if sims else -1.0
        terms = [t for t in query_terms(query) if len(t) > 2 and not t.isdigit()]
        rows = self.store.chunks([r.chunk_id for r in results])
        text = " ".join(f"{r.title} {' '.join(r.heading_path)} {r.text}" for r in rows.values())
        unknown = [t for t in terms if not self.store.keyword_search(fts_match([t]), [1.0] * 5, 1)]
        return Relevance.judge(query, best, term_overlap(terms, text), unknown, self.settings)

    def _standalone(self, question: str, history: list[convo.Turn]) -> str:
        previous = [t for t in history if t.role == "user"]
        if not previous:
            return question
        words = query_terms(question)
        if len(words) > 10 or not (_FOLLOWUP.search(question) or len(words) <= 3):
            return question
        last = previous[-1].query or previous[-1].content
        llm = None
        if self.settings.provider != "extractive":
            try:
                llm = self.llm
            except LLMError:
                llm = None
        if llm is not None:
            msgs: list[Message] = [{"role": "system", "content": REWRITE_PROMPT}]
            msgs += [{"role": "user", "content": t.query or t.content} for t in previous[-3:]]
            msgs.append({"role": "user", "content": question})
            try:
                rewritten = " ".join(llm.complete(msgs, max_tokens=64, temperature=0.0).split())
            except LLMError:
                rewritten = ""
            # A rewrite that shares nothing with the question or its context is not trusted.
            context = set(words) | set(query_terms(last))
            if 0 < len(rewritten) <= 300 and set(query_terms(rewritten)) & context:
                return rewritten
        carried = [t for t in query_terms(last) if t not in words]
        return f"{question} ({' '.join(carried)})" if carried else question

    def _declined(self, base: dict[str, Any], results: list[SearchResult]) -> Answer:
        closest: list[dict[str, str]] = []
        for r in results:
            if r.path not in {c["path"] for c in closest}:
                closest.append({"path": r.path, "title": r.title, "link": r.link})
            if len(closest) == 3:
                break
        text = "Your notes do not seem to cover this."
        if closest:
            text += (
                " The closest notes are: " + "; ".join(f"{c['title']} ({c['path']})" for c in closest) + "."
            )
        return Answer(
            text=text, mode="declined", citations=[], sources=[], declined=True, closest=closest, **base
        )

    def _extract(self, base: dict[str, Any], query: str, qvec: np.ndarray, sources: list[Citation]) -> Answer:
        rows = self.store.chunks([s.chunk_id for s in sources])
        units: list[tuple[str, Citation]] = []
        for s in sources:
            row = rows.get(s.chunk_id)
            if row is not None:
                units += [(u, s) for u in sentence_units(row.text)[:60]]
        if not units:
            return Answer(text=EXTRACT_HEADER, mode="extractive", citations=[], sources=sources, **base)
        terms = query_terms(query)
        vecs = self.searcher.embedder.embed([u for u, _ in units])
        sims = vecs @ qvec
        scored = []
        for (u, s), sim in zip(units, sims, strict=True):
            # Meaning, the question's words, and a little of the retrieval order.
            score = float(sim) + 0.4 * term_overlap(terms, u) + 0.05 / s.n
            scored.append((score, u, s))
        scored.sort(key=lambda x: -x[0])
        picked: list[tuple[str, Citation]] = []
        per_source: dict[int, int] = {}
        for _, u, s in scored:
            # Chunks overlap: a sentence already quoted (or quoted in part) is not quoted again.
            if per_source.get(s.n, 0) >= 3 or any(u in p or p in u for p, _ in picked):
                continue
            picked.append((u, s))
            per_source[s.n] = per_source.get(s.n, 0) + 1
            if len(picked) == 6:
                break
        lines = [EXTRACT_HEADER, ""]
        for u, s in picked:
            where = " › ".join([s.title, *s.heading_path[-1:]])
            lines.append(f"- {u} [{s.n}] ({where})")
        text, cited = parse_citations("\n".join(lines), sources)
        return Answer(text=text, mode="extractive", citations=cited, sources=sources, **base)

    def _prompt(
        self, llm: LLM, question: str, sources: list[Citation], history: list[convo.Turn]
    ) -> list[Message]:
        budget = (
            llm.context_window - self.settings.max_tokens - llm.count_tokens(SYSTEM_PROMPT + question) - 64
        )
        past: list[Message] = []
        for t in reversed(history):  # newest first, up to a quarter of the window
            cost = llm.count_tokens(t.content)
            if cost > budget // 4 - sum(llm.count_tokens(m["content"]) for m in past):
                break
            past.insert(0, {"role": t.role, "content": t.content})
        budget -= sum(llm.count_tokens(m["content"]) for m in past)
        rows = self.store.chunks([s.chunk_id for s in sources])
        blocks = []
        for s in sources:
            row = rows.get(s.chunk_id)
            body = row.text if row else s.snippet
            where = " > ".join([s.title, *s.heading_path])
            block = f"[{s.n}] {where}\n{body.strip()}"
            cost = llm.count_tokens(block)
            if cost > budget:
                if budget > 80:  # what fits of this source, cut at a character estimate
                    blocks.append(block[: int(budget * 3)])
                break
            blocks.append(block)
            budget -= cost
        user = (
            "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer, citing sources as [n]:"
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, *past, {"role": "user", "content": user}]

    def _generate(
        self,
        llm: LLM,
        base: dict[str, Any],
        question: str,
        sources: list[Citation],
        history: list[convo.Turn],
        t0: float,
    ) -> Iterator[Event]:
        messages = self._prompt(llm, question, sources, history)
        parts: list[str] = []
        first: float | None = None
        for delta in llm.stream(messages, max_tokens=self.settings.max_tokens):
            if first is None:
                first = _ms(t0)
            parts.append(delta)
            yield TokenEvent(delta)
        text, cited = parse_citations("".join(parts), sources)
        answer = Answer(
            text=text, mode="llm", citations=cited, sources=sources, declined=bool(_DECLINE.search(text)),
            **{**base, "provider": llm.provider, "model": llm.model},
        )  # fmt: skip
        if first is not None:
            answer.timings["first_token_ms"] = first
        yield AnswerEvent(answer)

    def _remember(self, conversation_id: str | None, question: str, answer: Answer) -> None:
        if not conversation_id:
            return
        turns = [
            convo.Turn("user", question, answer.query),
            convo.Turn("assistant", answer.text, None, [c.to_dict() for c in answer.citations]),
        ]
        convo.add_turns(self.store, conversation_id, turns, keep=max(2, self.settings.history_turns))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)
