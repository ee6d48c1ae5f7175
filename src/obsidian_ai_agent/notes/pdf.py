"""PDF text per page (pypdf), chunked within each page; chunk citations carry the page."""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings as pywarnings
from pathlib import PurePosixPath
from typing import Any

from .chunker import Chunker, Section, Unit
from .model import Chunk, ParsedSource, SourceError, TokenCounter, sha256

MAX_PAGES = 2000
MAX_CHARS = 20_000_000  # stop extracting past this much text (about 10,000 dense pages)
MAX_WARNINGS = 5
_SCAN_TEXT_CHARS = 16  # a page with an image and fewer letters/digits than this is a scan
_FILE_NAME = re.compile(r"^\S+\.(?:pdf|txt|docx?|odt|rtf|tex|html?|pptx?|xlsx?|indd|ps|eps|dvi)$", re.I)
_NO_TEXT = "no extractable text (scanned or image-only PDF; OCR it first)"


class _Collect(logging.Handler):
    """Keeps pypdf's log warnings for this thread's parse instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            msg = record.getMessage().splitlines()[0].strip()
        except Exception:  # a broken log record must not break parsing
            return
        if len(msg) > 160:
            msg = msg[:157] + "..."
        if msg and not any(m[:60] == msg[:60] for m in self.messages):
            self.messages.append(msg)


class _Quiet:
    """Route the `pypdf` logger into a `_Collect` handler for the duration of a parse."""

    _lock = threading.Lock()
    _users = 0
    _saved_propagate = True

    def __enter__(self) -> _Collect:
        self.handler = _Collect()
        log = logging.getLogger("pypdf")
        with _Quiet._lock:
            if _Quiet._users == 0:
                _Quiet._saved_propagate = log.propagate
                log.propagate = False
            _Quiet._users += 1
        log.addHandler(self.handler)
        return self.handler

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger("pypdf")
        log.removeHandler(self.handler)
        with _Quiet._lock:
            _Quiet._users -= 1
            if _Quiet._users == 0:
                log.propagate = _Quiet._saved_propagate


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _open(raw: bytes, password: str | None) -> tuple[Any, bool]:
    """A readable (decrypted) PdfReader, and whether its cross-reference table had to be rebuilt."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    def reader_for(data: bytes) -> PdfReader:
        return PdfReader(io.BytesIO(data), strict=False)

    rebuilt = False
    try:
        reader = reader_for(raw)
    except PdfReadError as e:
        if "startxref" not in str(e):
            raise
        # No cross-reference pointer at all (hand-written or cut files): point at offset 0 so pypdf
        # falls back to rebuilding the table by scanning the objects.
        reader = reader_for(raw + b"\nstartxref\n0\n%%EOF\n")
        rebuilt = True
    if reader.is_encrypted:
        try:
            ok = bool(reader.decrypt(password or ""))
            if not ok and password:
                ok = bool(reader.decrypt(""))
        except DependencyError as e:
            raise SourceError("encrypted with AES: the 'cryptography' package is needed to open it") from e
        if not ok:
            raise SourceError("encrypted: needs a password" if not password else "encrypted: wrong password")
    return reader, rebuilt


def _title(reader: Any, stem: str) -> str:
    try:
        meta = reader.metadata
        title = meta.title if meta is not None else None
    except Exception:
        title = None
    if not isinstance(title, str):
        return stem
    title = " ".join(title.split())
    if not title or title.lower() in ("untitled", "title") or _FILE_NAME.match(title):
        return stem  # empty, a placeholder, or the producing tool's file name ("Binder1.pdf")
    return title


def _has_image(page: Any) -> bool:
    try:
        xobjects = page["/Resources"].get_object().get("/XObject")
        if xobjects is None:
            return False
        xobjects = xobjects.get_object()
        return any(xobjects[k].get_object().get("/Subtype") == "/Image" for k in xobjects)
    except Exception:
        return False


def _page_units(text: str) -> list[Unit]:
    """Paragraph units of a page; lines numbered within the page (not exposed on chunks)."""
    units: list[Unit] = []
    para: list[tuple[int, str]] = []
    for n, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            para.append((n, line.rstrip()))
        elif para:
            units.append(Unit("\n".join(t for _, t in para), para[0][0], para[-1][0]))
            para = []
    if para:
        units.append(Unit("\n".join(t for _, t in para), para[0][0], para[-1][0]))
    return units


def parse_pdf(
    raw: bytes,
    rel_path: str,
    counter: TokenCounter,
    password: str | None = None,
    *,
    max_pages: int = MAX_PAGES,
) -> ParsedSource:
    """Parse a PDF into page chunks, or raise `SourceError` with a one-line reason."""
    if not raw:
        raise SourceError("empty file")
    if b"%PDF-" not in raw[:1024]:
        raise SourceError("not a PDF file")
    stem = PurePosixPath(rel_path).name
    if stem.lower().endswith(".pdf") and len(stem) > 4:
        stem = stem[:-4]
    warnings: list[str] = []
    pages: list[tuple[int, str]] = []
    has_text = False
    rebuilt = False
    with _Quiet() as log, pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        try:
            reader, rebuilt = _open(raw, password)
            title = _title(reader, stem)
            total = len(reader.pages)
            if total > max_pages:
                warnings.append(f"only the first {max_pages} of {total} pages were indexed")
            chars = 0
            for i in range(min(total, max_pages)):
                try:
                    text = reader.pages[i].extract_text() or ""
                except RecursionError:
                    warnings.append(f"page {i + 1}: nested too deeply; skipped")
                    continue
                except Exception as e:
                    warnings.append(f"page {i + 1}: {_short(e)}; skipped")
                    continue
                text = text.replace("\x00", "")
                pages.append((i + 1, text))
                alnum = sum(ch.isalnum() for ch in text)
                if alnum >= _SCAN_TEXT_CHARS or (alnum and not _has_image(reader.pages[i])):
                    has_text = True
                chars += len(text)
                if chars > MAX_CHARS:
                    warnings.append(f"text capped at {MAX_CHARS} characters (page {i + 1} of {total})")
                    break
        except SourceError:
            raise
        except RecursionError as e:
            raise SourceError("damaged PDF: objects nested too deeply") from e
        except MemoryError as e:
            raise SourceError("damaged PDF: too large to read") from e
        except Exception as e:
            raise SourceError(f"damaged PDF: {_short(e)}") from e
    if rebuilt:
        warnings.insert(0, "no cross-reference table; rebuilt by scanning the file")
    noise = ("incorrect startxref", "parsing for object streams", "invalid parent xref")
    extra = [m for m in log.messages if not (rebuilt and m.lower().startswith(noise))] + [
        _short(w.message) for w in caught if isinstance(w.message, Warning)
    ]
    warnings.extend(extra)
    if len(warnings) > MAX_WARNINGS:
        warnings = [*warnings[:MAX_WARNINGS], f"... and {len(warnings) - MAX_WARNINGS} more warnings"]

    if not has_text:
        if rebuilt:
            raise SourceError("damaged PDF: no cross-reference table and no text could be recovered")
        raise SourceError(_NO_TEXT)

    chunker = Chunker(counter)
    chunks: list[Chunk] = []
    for number, text in pages:
        units = _page_units(text)
        if units:
            chunks.extend(
                chunker.chunk(
                    title, [Section([], units)], page=number, keep_lines=False, first_ordinal=len(chunks)
                )
            )
    return ParsedSource(
        path=rel_path, kind="pdf", title=title, content_hash=sha256(raw), chunks=chunks, warnings=warnings
    )
