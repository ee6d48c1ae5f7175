"""Answers from the notes: retrieval -> relevance gate -> prompt -> answer -> checked citations.

Three ways to answer, chosen by `llm.provider`: an OpenAI-compatible server, a GGUF model in this process,
or (the default, and the fallback when a model fails) an extract of the most relevant sentences. Every
way cites numbered sources that carry the note's path, heading path, lines or page and obsidian:// link.

The relevance gate (relevance.py) declines, without calling any model, when the notes do not hold the
answer. An extract is built by extract.py. A generated answer is checked sentence by sentence against the
sources it cites (grounding.py).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .cache import Cache, cache_key
from .config import AnswerSettings, LLMSettings
from .embeddings import SHORT_TOKENS
from .extract import MAX_WORDS, SMALL_CHUNK_WORDS, UnitVectors, answer_words, render, select
from .grounding import Repetition, Sentence, bounded, check, mark
from .llm import LLM, LLMError, Message, get_llm
from .relevance import Relevance, names_in, unknown_words
from .search import (
    NoteNotIndexed,
    Searcher,
    SearchResult,
    obsidian_link,
    query_terms,
)
from .store import IndexStore, StoreError, unitvectors
from .store import conversations as convo
from .units import Unit, units_of, with_next

log = logging.getLogger("obsidian_ai_agent.answer")

PROMPT_VERSION = "1"
EXTRACT_VERSION = "5"
"""Bumped when extracts are built differently, so cached answers of the old kind are not served."""
NAME_CHUNKS = 2000
"""Chunks holding a name of the question that are compared with it (relevance.py's `name_support`)."""

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
MAX_ANSWER_WORDS = 150
EXTRACT_HEADER = "Extract from your notes (no language model was used):"
_CITE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
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
    sentences: list[dict[str, Any]] = field(default_factory=list)
    """For a generated answer: each sentence, the sources it cites, and whether they support it."""

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


# -- the answerer ---------------------------------------------------------------------------------


class Answerer:
    """Answers questions over one searcher; safe to share between threads."""

    def __init__(
        self,
        searcher: Searcher,
        settings: LLMSettings,
        *,
        llm: LLM | None = None,
        cache: Cache | None = None,
        answer: AnswerSettings | None = None,
    ) -> None:
        self.answer_settings = answer or AnswerSettings()
        self.searcher = searcher
        self.store = searcher.store
        self.settings = settings
        self.cache = cache
        self._llm = llm
        self._llm_error: LLMError | None = None
        self.unit_vectors = self._unit_vectors()

    def _unit_vectors(self) -> UnitVectors:
        """Unit vectors in memory, behind them the index database (shared by workers, kept over restarts);
        a database that cannot be written (read-only data directory) only costs the sharing."""
        embedder, store, kept = self.searcher.embedder, self.store, self.answer_settings.unit_vectors_kept
        if not kept:
            return UnitVectors(embedder.embed_short)
        space = f"{embedder.model_id}:{SHORT_TOKENS}"

        def load(texts: list[str]) -> dict[str, np.ndarray]:
            keys = {unitvectors.digest(space, t): t for t in texts}
            try:
                found = unitvectors.load(store, list(keys))
            except (sqlite3.Error, StoreError) as e:
                log.warning("unit vectors could not be read from the index: %s", e)
                return {}
            return {keys[d]: v for d, v in found.items()}

        def save(vectors: dict[str, np.ndarray]) -> None:
            try:
                unitvectors.save(store, {unitvectors.digest(space, t): v for t, v in vectors.items()}, kept)
            except (sqlite3.Error, StoreError) as e:
                log.info("unit vectors not kept in the index (%s); they stay in memory", e)

        return UnitVectors(embedder.embed_short, load=load, save=save)

    def prepare_unit_vectors(
        self, after: int | None = None, check: Callable[[int], None] | None = None, batch: int = 50
    ) -> dict[str, int]:
        """Embed the answer units of every chunk above id `after` (default: above the last chunk done
        before, kept in the index) that the index does not hold yet, so a first question about them
        waits for no model; `check(last chunk id)` runs between batches (a job's cancel check and
        checkpoint). Stops once `unit_vectors_kept` is nearly used: older vectors would be pushed out."""
        kept = self.answer_settings.unit_vectors_kept
        start = after if after is not None else int(self.store.get_meta(unitvectors.PREPARED) or 0)
        done = {"chunks": 0, "units": 0, "after": start}
        while kept and unitvectors.count(self.store) < int(kept * 0.9):
            ids = unitvectors.chunk_ids_after(self.store, done["after"], batch)
            if not ids:
                break
            texts = [u.embed_text for us in chunk_units(self.store, ids).values() for u in us if not u.extra]
            self.unit_vectors.get(texts)
            done["chunks"] += len(ids)
            done["units"] += len(texts)
            done["after"] = ids[-1]
            self.store.set_meta(unitvectors.PREPARED, str(ids[-1]))
            if check is not None:
                check(ids[-1])
        return done

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
                if event.code == "note_not_indexed":
                    raise NoteNotIndexed(event.message)
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
        path: str | None = None,
    ) -> Iterator[Event]:
        """Events: retrieval (the numbered sources), tokens, maybe an error, and the final answer.
        `path`: the answer draws on that one note only."""
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
        filters = {"folder": folder, "tag": tag, "kind": kind, "path": path}
        generation = self.store.generation
        mode = mode or self.searcher.settings.default_mode
        key = cache_key(
            "answer", query, generation, filters=filters, mode=mode, prompt=PROMPT_VERSION,
            extract=EXTRACT_VERSION, vault=self.searcher.vault_name,
            search=self.searcher.settings.model_dump(mode="json"),
            llm=self.settings.model_dump(mode="json", exclude={"api_key", "history_turns", "timeout"}),
            answer=self.answer_settings.model_dump(mode="json"),
            history=[t.content for t in history[-4:]] if self.settings.provider != "extractive" else None,
        )  # fmt: skip
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            cached = Answer.from_dict(hit)
            cached.cached, cached.question, cached.conversation_id = True, question, conversation_id
            yield RetrievalEvent(cached.query, cached.sources)
            yield TokenEvent(cached.text)
            cached.timings = {"total_ms": _ms(t0), "first_token_ms": _ms(t0)}
            self._remember(conversation_id, owner, question, cached)
            yield AnswerEvent(cached)
            return

        try:  # the search checks a one-note `path` (a cached answer held the note at this generation)
            results = self._retrieve(query, generation, mode, filters)
        except NoteNotIndexed as e:
            yield ErrorEvent(str(e), "note_not_indexed", recovered=False)
            return
        sources = [Citation.of(i, r) for i, r in enumerate(diverse(results, self.settings.sources), 1)]
        qvec = self.searcher.queries.get(query)
        relevance = self._relevance(query, qvec, results)
        base = {
            "question": question, "query": query, "conversation_id": conversation_id,
            "provider": self.provider, "model": self.model_name,
            "evidence": asdict(relevance),
        }  # fmt: skip
        # The extract is built for every provider: it is the second half of the gate, the fallback of a
        # model that fails, and the answer with no model.
        extract = self._extract(base, query, qvec, sources) if relevance.covered else None
        if extract is not None and not self._extract_answers(relevance, extract):
            extract = None
        t_retrieved = _ms(t0)
        yield RetrievalEvent(query, sources if extract is not None else [])
        answer: Answer | None = None
        err: LLMError | None = None
        if extract is None:
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
        generated = answer is not None and answer.mode == "llm" and not answer.declined
        if generated and extract is not None and answer is not None and not _grounded(answer):
            # A generated answer that no cited source supports is not passed off as grounded.
            why = (
                "it cites no source" if not answer.citations
                else "no sentence of it is supported by the notes it cites"
            )  # fmt: skip
            yield ErrorEvent(f"the model's answer was not used: {why}", "ungrounded", recovered=True)
            extract.notice = (
                f"The language model's answer was not used because {why}; this is an extract instead."
                + (f" {answer.notice}" if answer.notice else "")
            )
            extract.sentences = answer.sentences
            answer = extract
            yield TokenEvent(answer.text)
        if answer is None and extract is not None:
            if err is not None:
                if self.settings.on_error == "fail":
                    yield ErrorEvent(str(err), type(err).__name__, recovered=False)
                    return
                yield ErrorEvent(str(err), type(err).__name__, recovered=True)
            answer = extract
            if err is not None:
                answer.notice = f"The language model failed, so this is an extract instead: {err}"
                answer.provider, answer.model = "extractive", None
            yield TokenEvent(answer.text)
        assert answer is not None
        answer.timings.setdefault("first_token_ms", _ms(t0))
        answer.timings.update({"retrieval_ms": t_retrieved, "total_ms": _ms(t0)})
        if self.cache and answer.notice is None:
            stored = answer.to_dict()
            stored["timings"] = {}
            self.cache.set(key, stored)
        self._remember(conversation_id, owner, question, answer)
        yield AnswerEvent(answer)

    # -- steps ------------------------------------------------------------------------------------

    def _retrieve(
        self, query: str, generation: int, mode: str | None, filters: dict[str, Any]
    ) -> list[SearchResult]:
        k = max(self.settings.sources * 2, 12)
        key = cache_key(
            "search", query, generation, filters=filters, mode=mode, k=k, vault=self.searcher.vault_name,
            search=self.searcher.settings.model_dump(mode="json"),
        )  # fmt: skip
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            return [SearchResult(**r) for r in hit["results"]]
        results = self.searcher.search(query, k=k, mode=mode, **filters)
        if self.cache:
            self.cache.set(key, {"results": [r.to_dict() for r in results]})
        return results

    def _extract_answers(self, relevance: Relevance, extract: Answer) -> bool:
        """The second half of the gate: a question with words the notes never use is answered only when
        some sentence of the notes is close to it (relevance.py)."""
        sim = float(extract.evidence.get("sentence_similarity", -1.0))
        floor = self.settings.min_sentence_similarity_unknown_words
        if relevance.unknown_words and sim < floor and extract.citations:
            extract.evidence["covered"] = False
            extract.evidence["reason"] = (
                f"the notes never use {', '.join(relevance.unknown_words)} and no sentence is close enough "
                f"(sentence similarity {sim:.2f} < {floor})"
            )
            return False
        return bool(extract.citations)

    def _relevance(self, query: str, qvec: np.ndarray, results: list[SearchResult]) -> Relevance:
        # The nearest chunk in the whole index, not only among the fused results: a decision that does
        # not move when unrelated notes rise or fall in the ranking.
        nearest = self.searcher.vectors.search(qvec, 1)
        best = nearest[0][1] if nearest else -1.0
        unknown = unknown_words(query, self.store.has_term)
        return Relevance.judge(query, best, unknown, self.settings, self._name_support(query, qvec, unknown))

    def _name_support(self, query: str, qvec: np.ndarray, unknown: list[str]) -> dict[str, float]:
        """For each name of the question the notes hold, the cosine of its nearest chunk that holds it
        (relevance.py): a lookup of the chunks with the word, not of the ranking, so it stays put."""
        support = {}
        for name in names_in(query):
            if name in unknown:
                continue
            ids = self.searcher.chunks_with(name, NAME_CHUNKS)
            if len(ids) >= NAME_CHUNKS:
                continue  # a word that common says nothing, and its nearest chunk may be past the cut
            sims = self.searcher.vectors.similarities(qvec, ids) if ids else {}
            if sims:
                support[name] = max(sims.values())
        return support

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
        per_chunk = chunk_units(self.store, [s.chunk_id for s in sources])
        candidates = [(s.n, u) for s in sources for u in per_chunk.get(s.chunk_id, [])]
        titles = {s.n: s.title for s in sources}
        notes = {s.n: s.path for s in sources}
        budget = MAX_WORDS
        picked = select(
            base["question"], qvec, candidates, self.unit_vectors, max_words=budget, note_of=notes
        )
        # The lines naming the sources count too: quote less until the whole answer fits.
        while (over := answer_words(render(picked.groups, titles)) - MAX_ANSWER_WORDS) > 0 and budget > 20:
            budget -= over
            picked = select(
                base["question"], qvec, candidates, self.unit_vectors, max_words=budget, note_of=notes
            )
        if not picked.groups:
            return Answer(text=EXTRACT_HEADER, mode="extractive", citations=[], sources=sources, **base)
        by_n = {s.n: s for s in sources}
        body = render(picked.groups, titles)
        text, _ = parse_citations(f"{EXTRACT_HEADER}\n\n{body}", sources)
        citations = []
        for n, heading, units in picked.groups:
            c = by_n[n]
            lines = [u.line for u in units if u.line is not None]
            # The citation names the most specific heading over the quoted text, and links there.
            citations.append(
                replace(
                    c, heading_path=list(heading),
                    start_line=min(lines) if lines else c.start_line,
                    end_line=max(lines) if lines else c.end_line,
                    link=obsidian_link(self.searcher.vault_name, c.path, list(heading), page=c.page),
                )
            )  # fmt: skip
        answer = Answer(text=text, mode="extractive", citations=citations, sources=sources, **base)
        answer.evidence["sentence_similarity"] = round(picked.similarity, 4)
        return answer

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
        guard = Repetition()
        deadline = time.monotonic() + self.answer_settings.max_seconds - (time.perf_counter() - t0)
        stream = llm.stream(messages, max_tokens=self.settings.max_tokens)
        for delta in bounded(stream, deadline, guard):
            if first is None:
                first = _ms(t0)
            parts.append(delta)
            yield TokenEvent(delta)
        text, cited = parse_citations("".join(parts), sources)
        checked = self._ground(text, sources)
        answer = Answer(
            text=mark(checked) if checked else text, mode="llm", citations=cited, sources=sources,
            declined=bool(_DECLINE.search(text)), sentences=[c.to_dict() for c in checked],
            **{**base, "provider": llm.provider, "model": llm.model},
        )  # fmt: skip
        if guard.stopped:
            answer.notice = f"The model's answer was cut short because {guard.stopped}."
        if first is not None:
            answer.timings["first_token_ms"] = first
        yield AnswerEvent(answer)

    def _ground(self, text: str, sources: list[Citation]) -> list[Sentence]:
        rows = self.store.chunks([s.chunk_id for s in sources])
        units = {
            s.n: [u.embed_text for u in units_of(r.text, r.heading_path, r.start_line)]
            for s in sources
            if (r := rows.get(s.chunk_id)) is not None
        }
        return check(
            text, units, self.unit_vectors, min_similarity=self.answer_settings.min_supported_similarity
        )

    def _remember(self, conversation_id: str | None, owner: str, question: str, answer: Answer) -> None:
        if not conversation_id:
            return
        turns = [
            convo.Turn("user", question, answer.query),
            convo.Turn("assistant", answer.text, None, [c.to_dict() for c in answer.citations]),
        ]
        convo.add_turns(
            self.store, conversation_id, turns, keep=max(2, self.settings.history_turns), owner=owner
        )


def chunk_units(store: IndexStore, ids: Sequence[int]) -> dict[int, list[Unit]]:
    """The units an extract scores, per chunk id: the chunk read on into the next one (`with_next`),
    the added units marked `extra` unless the chunk is little more than a title; a chunk that starts
    inside a section gets that section's opening sentence from the chunk before, marked `extra` too
    (`select` shows it as the section's lead)."""
    following = store.next_chunks(ids)
    before = store.previous_chunks(ids)
    rows = store.chunks([*ids, *following.values(), *before.values()])
    out: dict[int, list[Unit]] = {}
    for cid in ids:
        row = rows.get(cid)
        if row is None:
            continue
        text, extra_from = row.text, None
        nxt = rows.get(following.get(cid, -1))
        if nxt is not None:
            text, extra_from = with_next(row.text, row.end_line, nxt.text, nxt.start_line)
        units = units_of(text, row.heading_path, row.start_line, extra_from)
        if sum(u.words for u in units if not u.extra) < SMALL_CHUNK_WORDS:
            # A chunk that is little more than a title: the section after it is what it is about.
            units = [replace(u, extra=False) for u in units]
        prev = rows.get(before.get(cid, -1))
        if prev is not None and not row.text.lstrip().startswith("#") and row.start_line is not None:
            lead = [
                u for u in units_of(prev.text, prev.heading_path, prev.start_line)
                if u.heading_path == row.heading_path and u.line is not None and u.line < row.start_line
            ]  # fmt: skip
            if lead and lead[0].kind == "sentence":
                units.insert(0, replace(lead[0], order=-1, extra=True))
        out[cid] = units[:120]
    return out


def diverse(results: list[SearchResult], n: int, per_note: int = 3) -> list[SearchResult]:
    """The first n results with at most `per_note` chunks of one note, so a question that spans notes
    gets each of them (results of a long note otherwise fill every place)."""
    kept: list[SearchResult] = []
    count: dict[str, int] = {}
    for r in results:
        if count.get(r.path, 0) < per_note:
            kept.append(r)
            count[r.path] = count.get(r.path, 0) + 1
        if len(kept) == n:
            break
    return kept


def _grounded(answer: Answer) -> bool:
    """Whether some sentence that cites a source is supported by it."""
    return any(s["supported"] and s["citations"] for s in answer.sentences)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)
