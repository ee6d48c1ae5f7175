"""Turning sources into chunks: Markdown notes, PDFs, plain text; and finding a vault's sources."""

from __future__ import annotations

from pathlib import Path

from .chunker import Chunker, Section, Unit
from .markdown import parse_markdown
from .model import (
    Chunk,
    Link,
    ParsedSource,
    SourceError,
    SourceKind,
    TokenCounter,
    default_token_counter,
    heading_at,
    line_at,
    sha256,
)
from .pdf import PdfLimits, parse_pdf
from .scan import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, ScannedFile, is_inside, kind_of, scan_vault

MAX_SOURCE_BYTES = 200 * 1024 * 1024

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_INCLUDE",
    "MAX_SOURCE_BYTES",
    "Chunk",
    "Link",
    "ParsedSource",
    "PdfLimits",
    "ScannedFile",
    "SourceError",
    "TokenCounter",
    "default_token_counter",
    "heading_at",
    "is_inside",
    "kind_of",
    "line_at",
    "parse_markdown",
    "parse_pdf",
    "parse_source",
    "parse_text",
    "scan_vault",
]


def parse_source(
    abs_path: Path,
    rel_path: str,
    counter: TokenCounter,
    *,
    raw: bytes | None = None,
    pdf_password: str | None = None,
    pdf_max_pages: int = 2000,
    pdf_limits: PdfLimits | None = None,
) -> ParsedSource:
    """Parse one vault file (read unless `raw` is given); any reason it cannot be indexed is a one-line
    `SourceError`."""
    kind = kind_of(rel_path) or kind_of(abs_path)
    if kind is None:
        raise SourceError(f"unsupported file type: {Path(rel_path).suffix or 'no extension'}")
    try:
        size = len(raw) if raw is not None else Path(abs_path).stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise SourceError(f"file too large ({size // (1024 * 1024)} MiB)")
        if raw is None:
            raw = Path(abs_path).read_bytes()
    except SourceError:
        raise
    except IsADirectoryError as e:
        raise SourceError("is a directory, not a file") from e
    except FileNotFoundError as e:
        raise SourceError("file not found") from e
    except PermissionError as e:
        raise SourceError("cannot read file: permission denied") from e
    except OSError as e:
        raise SourceError(f"cannot read file: {e.strerror or type(e).__name__}") from e
    try:
        if kind == "pdf":
            return parse_pdf(
                raw, rel_path, counter, password=pdf_password, max_pages=pdf_max_pages, limits=pdf_limits
            )
        return parse_markdown(raw, rel_path, counter)
    except SourceError:
        raise
    except RecursionError as e:
        raise SourceError("cannot parse: nested too deeply") from e
    except Exception as e:  # a parser bug must not stop a batch; the reason still names it
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise SourceError(f"cannot parse: {type(e).__name__}{': ' + first if first else ''}") from e


def parse_text(
    text: str, source_path: str, title: str, kind: SourceKind, counter: TokenCounter
) -> ParsedSource:
    """Plain text (a web page's main text, a corpus document) as a source: paragraphs chunked under
    the title. Line numbers refer to lines of `text`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    units: list[Unit] = []
    para: list[int] = []

    def flush() -> None:
        if para:
            units.append(Unit("\n".join(lines[i] for i in para), para[0] + 1, para[-1] + 1))
            para.clear()

    for i, line in enumerate(lines):
        if line.strip():
            para.append(i)
        else:
            flush()
    flush()
    title = " ".join(title.split()) or source_path
    chunker = Chunker(counter)
    chunks = chunker.chunk(title, [Section([], units)])
    if not chunks:
        chunks = [
            Chunk(ordinal=0, text="", embed_text=chunker.embed_text(title, [], ""), start_line=1, end_line=1)
        ]
    return ParsedSource(path=source_path, kind=kind, title=title, content_hash=sha256(text), chunks=chunks)
