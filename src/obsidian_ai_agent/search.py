"""Hybrid retrieval: FTS5 bm25 and exact vector kNN fused by reciprocal rank; filters, snippets, related."""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import quote

from .config import SearchSettings, usable_cores
from .embeddings import Embedder, QueryCache
from .notes import heading_at
from .store import ChunkRow, IndexStore
from .vectors import vectors_for

Mode = Literal["hybrid", "keyword", "semantic"]
MODES: tuple[str, ...] = get_args(Mode)
Kind = Literal["note", "pdf", "web"]
KINDS: tuple[str, ...] = get_args(Kind)
# What a front door (CLI, API, MCP) accepts; one definition, so every door takes and refuses the same.
K_MAX = 100
QUERY_MAX_CHARS = 2000
FIELDS = ("title", "aliases", "headings", "tags", "body")

# Words too common to say anything about which note is meant; dropped from keyword queries (unless the
# query is nothing but these) so they never make FTS5 walk most of the index.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not of off on once only or other our ours ourselves out over own same she should
    so some such than that the their theirs them themselves then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves""".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


class SearchError(ValueError):
    """A search request that cannot be run as given (an unknown mode, a bad k)."""


class NoteNotIndexed(SearchError):
    """A search or question limited to one note that the index does not hold."""


# -- the rules of a search request, for every front door -------------------------------------------


def check_query(query: str) -> str:
    """The query, stripped; an empty or over-long one is a SearchError saying so."""
    text = query.strip()
    if not text:
        raise SearchError("the query is empty; give some words to look for")
    if len(query) > QUERY_MAX_CHARS:
        raise SearchError(f"the query is {len(query)} characters long; the most is {QUERY_MAX_CHARS}")
    return text


def check_k(k: int) -> int:
    """How many results: 1 to `K_MAX`."""
    if not 1 <= k <= K_MAX:
        raise SearchError(f"k (how many results) must be between 1 and {K_MAX}, not {k}")
    return k


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise SearchError(f"unknown search mode {mode!r}; use one of: {', '.join(MODES)}")
    return mode


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise SearchError(f"unknown kind of source {kind!r}; use one of: {', '.join(KINDS)}")
    return kind


def check_note_indexed(store: IndexStore, path: str) -> str:
    """The vault-relative path of a note the index holds; else NoteNotIndexed saying what to do."""
    if store.source_by_path(path) is None:
        raise NoteNotIndexed(
            f"the index holds no note at '{path}'; give its vault-relative path as search results "
            "show it (e.g. 'Folder/Note.md'), or index or sync the note first"
        )
    return path


def check_request(
    query: str, k: int | None = None, mode: str | None = None, kind: str | None = None
) -> tuple[str, int | None, str | None, str | None]:
    """A search as a front door received it, checked by the rules above (None: the setting's default)."""
    return (
        check_query(query),
        None if k is None else check_k(k),
        None if mode is None else check_mode(mode),
        None if kind is None else check_kind(kind),
    )


@dataclass
class SearchResult:
    path: str
    title: str
    heading_path: list[str]
    start_line: int | None
    end_line: int | None
    page: int | None
    kind: str
    snippet: str
    score: float
    keyword_rank: int | None
    semantic_rank: int | None
    link: str
    chunk_id: int = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RelatedNote:
    path: str
    title: str
    score: float
    similarity: float
    links_to: bool
    linked_from: bool
    link: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_terms(text: str) -> list[str]:
    """The words of a query, lower-cased, stop-words dropped unless nothing else is left."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOPWORDS]
    return list(dict.fromkeys(kept or words))


NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve").split()
_NUMERALS = {
    **{w: str(i) for i, w in enumerate(NUMBER_WORDS)},
    **{str(i): w for i, w in enumerate(NUMBER_WORDS)},
}


def with_numerals(terms: list[str]) -> list[str]:
    """The terms and, for a small number, its other spelling: "every two weeks" finds `every 2 weeks`."""
    return list(dict.fromkeys([*terms, *(_NUMERALS[t] for t in terms if t in _NUMERALS)]))


def obsidian_link(
    vault: str, path: str, heading_path: list[str] | None = None, page: int | None = None
) -> str:
    """An `obsidian://open` link to the note (and heading), or to the PDF's page (`#page=N`, as
    Obsidian's own PDF links do); a web page's link is its own URL."""
    if path.startswith(("http://", "https://")):
        return path
    target = path[:-3] if path.lower().endswith(".md") else path
    if page is not None and path.lower().endswith(".pdf"):
        target += f"#page={page}"
    elif heading_path:
        target += "#" + heading_path[-1]
    return f"obsidian://open?vault={quote(vault, safe='')}&file={quote(target, safe='')}"


def snippet_heading(row: ChunkRow, terms: list[str]) -> list[str]:
    """The most specific heading holding the place a snippet shows (the first query term in the chunk,
    as `make_snippet` centres on it); the chunk's own heading path when no term is in its text."""
    if not row.section_starts:
        return row.heading_path
    low = row.text.lower()
    positions = [p for p in (low.find(t) for t in terms if len(t) > 2) if p >= 0]
    return heading_at(row, offset=min(positions)) if positions else row.heading_path


def make_snippet(text: str, terms: list[str], width: int = 240) -> str:
    """A window of the chunk around the first query term it contains, cut at word boundaries."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    low = flat.lower()
    positions = [p for p in (low.find(t) for t in terms if len(t) > 2) if p >= 0]
    start = max(0, min(positions) - width // 4) if positions else 0
    if start:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


_SIDES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="search-semantic")
"""Runs a hybrid search's semantic side (embed the query, kNN) while the caller runs the keyword side,
so a search takes the longer of the two, not their sum. Shared by every searcher of the process; its
size bounds the semantic sides in flight (the model takes one call at a time anyway)."""


_SLOTS = threading.BoundedSemaphore(4 * usable_cores())
"""Searches running at once in this process; the rest wait their turn. Measured in one process on 2
cores (vaultofknowledge, 8.5k chunks): 8 threads searching gave 130 searches/s and 32 threads 75 (82 with
these slots), each search then costing 22 ms of CPU instead of 12.5."""


class InFlight:
    """How many searches are running in this process, so background work (`answer_vectors`) can wait
    for a quiet moment instead of taking the model and the cores from them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._n = 0

    def __enter__(self) -> None:
        with self._cond:
            self._n += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._n -= 1
            if not self._n:
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no search is running; False if one still is after `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._n, timeout=timeout)


SEARCHES = InFlight()


class Searcher:
    """Runs searches against one store with one embedder; cheap to call, safe from several threads."""

    def __init__(
        self, store: IndexStore, embedder: Embedder, settings: SearchSettings, vault_name: str = "vault"
    ):
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.vault_name = vault_name
        self.vectors = vectors_for(store)
        self.queries = QueryCache(embedder)

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: str | None = None,
        *,
        folder: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        path: str | None = None,
    ) -> list[SearchResult]:
        """`path`: only that note (NoteNotIndexed when the index has none there)."""
        with SEARCHES, _SLOTS:
            return self._search(query, k, mode, folder=folder, tag=tag, kind=kind, path=path)

    def _search(
        self,
        query: str,
        k: int | None,
        mode: str | None,
        *,
        folder: str | None,
        tag: str | None,
        kind: str | None,
        path: str | None = None,
    ) -> list[SearchResult]:
        mode = check_mode(mode or self.settings.default_mode)
        if kind is not None:
            check_kind(kind)
        k = self.settings.k if k is None else k
        if k < 1 or k > 1000:
            raise SearchError(f"k must be between 1 and 1000, not {k}")
        query = query.strip()
        if not query:
            return []
        allowed: list[int] | None = None
        if path is not None:
            check_note_indexed(self.store, path)
        if folder or tag or kind or path:
            allowed = self.store.filter_source_ids(folder=folder, tag=tag, kind=kind, path=path)
            if not allowed:
                return []
        terms = with_numerals(query_terms(query))
        n = max(self.settings.candidates, k)
        kw: list[int] = []
        sem: list[int] = []
        keyword = mode in ("hybrid", "keyword") and bool(terms)
        pending: Future[list[int]] | None = None
        if mode in ("hybrid", "semantic"):
            if keyword:  # the two sides at once: the model and SQLite both let the other thread run
                pending = _SIDES.submit(self._semantic, query, n, allowed)
            else:
                sem = self._semantic(query, n, allowed)
        if keyword:
            try:
                kw = [cid for cid, _ in self.store.keyword_search(terms, self._weights(), n, allowed)]
            except BaseException:
                if pending is not None:
                    pending.cancel()
                raise
        if pending is not None:
            sem = pending.result()
        fused = self._fuse(kw, sem, mode)[:k]
        rows = self.store.chunks([cid for cid, _ in fused])
        kw_rank = {cid: i + 1 for i, cid in enumerate(kw)}
        sem_rank = {cid: i + 1 for i, cid in enumerate(sem)}
        results = []
        for cid, score in fused:
            row = rows.get(cid)
            if row is None:  # removed between the two reads
                continue
            results.append(self._result(row, score, kw_rank.get(cid), sem_rank.get(cid), terms))
        return results

    def _weights(self) -> list[float]:
        return [self.settings.field_weights[f] for f in FIELDS]

    def chunks_with(self, term: str, limit: int) -> list[int]:
        """The ids of chunks holding a word (best keyword matches first, at most `limit`)."""
        return [cid for cid, _ in self.store.keyword_search([term], self._weights(), limit)]

    def _semantic(self, query: str, n: int, allowed: list[int] | None) -> list[int]:
        return [cid for cid, _ in self.vectors.search(self.queries.get(query), n, allowed)]

    def _fuse(self, kw: list[int], sem: list[int], mode: str) -> list[tuple[int, float]]:
        c = self.settings.rrf_k
        scores: dict[int, float] = {}
        if mode != "semantic":
            for rank, cid in enumerate(kw, 1):
                scores[cid] = scores.get(cid, 0.0) + self.settings.keyword_weight / (c + rank)
        if mode != "keyword":
            for rank, cid in enumerate(sem, 1):
                scores[cid] = scores.get(cid, 0.0) + self.settings.semantic_weight / (c + rank)
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))

    def _result(
        self, row: ChunkRow, score: float, kw: int | None, sem: int | None, terms: list[str]
    ) -> SearchResult:
        heading = snippet_heading(row, terms)
        return SearchResult(
            path=row.path,
            title=row.title,
            heading_path=heading,
            start_line=row.start_line,
            end_line=row.end_line,
            page=row.page,
            kind=row.kind,
            snippet=make_snippet(row.text, terms),
            score=round(score, 6),
            keyword_rank=kw,
            semantic_rank=sem,
            link=obsidian_link(self.vault_name, row.path, heading, row.page),
            chunk_id=row.id,
        )

    def related(self, path: str, k: int = 10) -> list[RelatedNote]:
        """Notes related to a note: similar note-level vectors, and notes it links to or that link to it."""
        src = self.store.source_by_path(path)
        if src is None:
            raise SearchError(
                f"'{path}' is not in the index; give a path relative to the vault, as `status` shows"
            )
        sids, mat = self.vectors.note_vectors()
        out_links, back_links = self.store.linked_source_ids(src.id)
        sims: dict[int, float] = {}
        pos = {int(s): i for i, s in enumerate(sids)}
        if src.id in pos:
            sim = mat @ mat[pos[src.id]]
            for i in sim.argsort()[::-1][: k * 3 + 1]:
                sims[int(sids[i])] = float(sim[i])
            for sid in out_links | back_links:
                if sid in pos:
                    sims.setdefault(sid, float(sim[pos[sid]]))
        sims.pop(src.id, None)
        # A link is the author's own statement that two notes belong together: worth a fixed boost.
        scored = {sid: s + 0.15 * (sid in out_links) + 0.1 * (sid in back_links) for sid, s in sims.items()}
        top = sorted(scored.items(), key=lambda kv: -kv[1])[:k]
        info = self.store.sources([sid for sid, _ in top])
        return [
            RelatedNote(
                path=info[sid].path,
                title=info[sid].title,
                score=round(score, 6),
                similarity=round(sims[sid], 6),
                links_to=sid in out_links,
                linked_from=sid in back_links,
                link=obsidian_link(self.vault_name, info[sid].path),
            )
            for sid, score in top
            if sid in info
        ]
