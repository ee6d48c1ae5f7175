"""PDF text per page (pypdf), chunked within each page; chunk citations carry the page."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import re
import threading
import time
import warnings as pywarnings
from dataclasses import dataclass
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
_MB = 1024 * 1024


@dataclass(frozen=True)
class PdfLimits:
    """What one PDF may cost to read: decoded content per page and per file, and seconds per file.

    pypdf caps each stream (75 MB) but keeps what it decoded, so a small file of many compressed pages
    (70 MB of blanks each) took minutes of CPU and GBs of memory: these bounds refuse it early.
    """

    page_bytes: int = 16 * _MB
    file_bytes: int = 128 * _MB
    seconds: float = 60.0

    @classmethod
    def from_mb(cls, page_mb: float, file_mb: float, seconds: float) -> PdfLimits:
        return cls(int(page_mb * _MB), int(file_mb * _MB), seconds)


class _Bomb(Exception):
    """Decoded content beyond a budget (the file is refused)."""


def _mb(n: int) -> str:
    return f"{n / _MB:.3g} MB"


def _bomb_reason(what: str, limit: int, raw: bytes) -> str:
    return (
        f"{what} exceeds {_mb(limit)} (from a {_mb(len(raw))} file); the file looks like a compression bomb"
        " and was not indexed (settings pdf_max_page_mb / pdf_max_decoded_mb)"
    )


def _pypdf_limits(limits: PdfLimits) -> contextlib.AbstractContextManager[Any]:
    """pypdf's own per-stream output caps lowered to the page budget, so decoding stops early (pypdf >= 6)."""
    import pypdf

    apply = getattr(pypdf, "apply_configuration", None)
    if apply is None:  # older pypdf: the decoded size is still checked below, after decoding
        return contextlib.nullcontext()
    cap = limits.page_bytes + 1
    fields = (
        "zlib_maximum_output_length",
        "lzw_maximum_output_length",
        "run_length_maximum_output_length",
        "brotli_maximum_output_length",
        "array_based_stream_maximum_output_length",
    )
    known = set(getattr(pypdf.get_configuration(), "__dataclass_fields__", {}))
    return apply(**{f: cap for f in fields if f in known})


def _streams(obj: Any) -> list[Any]:
    """The stream objects of a page's /Contents (one stream or an array of them)."""
    try:
        obj = obj.get_object()
    except Exception:
        return []
    if isinstance(obj, list):
        out = []
        for x in obj:
            try:
                out.append(x.get_object())
            except Exception:
                continue
        return out
    return [obj]


def _content_bytes(page: Any, limit: int) -> int:
    """Decoded size of a page's content streams; raises `_Bomb` past `limit` (decoding stops there)."""
    from pypdf.errors import LimitReachedError

    try:
        contents = page.get("/Contents")
    except Exception:
        return 0
    if contents is None:
        return 0
    total = 0
    for stream in _streams(contents):
        get_data = getattr(stream, "get_data", None)
        if get_data is None:
            continue
        try:
            total += len(get_data())
        except LimitReachedError as e:
            raise _Bomb from e
        except Exception:
            continue  # a broken stream is extract_text's to report
        if total > limit:
            raise _Bomb
    return total


def _forget_decoded(page: Any) -> None:
    """Drop pypdf's cached decoded copies of a page's streams: the reader keeps every object it read."""
    try:
        streams = _streams(page.get("/Contents")) if page.get("/Contents") is not None else []
        xobjects = page["/Resources"].get_object().get("/XObject")
        if xobjects is not None:
            xobjects = xobjects.get_object()
            streams += [xobjects[k].get_object() for k in xobjects]
    except Exception:
        pass
    for stream in streams:
        if getattr(stream, "decoded_self", None) is not None:
            stream.decoded_self = None


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
    limits: PdfLimits | None = None,
) -> ParsedSource:
    """Parse a PDF into page chunks, or raise `SourceError` with a one-line reason.

    `limits` bound what the file may cost (decoded bytes per page and per file, seconds); past a byte
    budget the file is refused as a compression bomb, past the time budget the pages read are kept."""
    limits = limits or PdfLimits()
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
    reader: Any = None
    page: Any = None
    deadline = time.monotonic() + limits.seconds
    with _Quiet() as log, pywarnings.catch_warnings(record=True) as caught, _pypdf_limits(limits):
        pywarnings.simplefilter("always")
        try:
            reader, rebuilt = _open(raw, password)
            title = _title(reader, stem)
            total = len(reader.pages)
            if total > max_pages:
                warnings.append(f"only the first {max_pages} of {total} pages were indexed")
            chars = 0
            decoded = 0
            for i in range(min(total, max_pages)):
                if time.monotonic() > deadline:
                    if not has_text:
                        raise SourceError(
                            f"reading took longer than {limits.seconds:g} s (stopped at page {i + 1} of "
                            f"{total}) and no text was found so far (setting pdf_timeout)"
                        )
                    warnings.append(
                        f"reading stopped after {limits.seconds:g} s: only the first {i} of {total} pages "
                        "were indexed (setting pdf_timeout)"
                    )
                    break
                page = reader.pages[i]
                try:
                    decoded += _content_bytes(page, limits.page_bytes)
                except _Bomb:
                    what = f"page {i + 1}'s decoded content"
                    raise SourceError(_bomb_reason(what, limits.page_bytes, raw)) from None
                if decoded > limits.file_bytes:
                    raise SourceError(
                        _bomb_reason(f"decoded content (pages 1-{i + 1})", limits.file_bytes, raw)
                    )
                try:
                    text = page.extract_text() or ""
                except RecursionError:
                    warnings.append(f"page {i + 1}: nested too deeply; skipped")
                    continue
                except Exception as e:
                    if type(e).__name__ == "LimitReachedError":  # a form XObject past the page budget
                        raise SourceError(
                            _bomb_reason(f"page {i + 1}'s decoded content", limits.page_bytes, raw)
                        ) from e
                    warnings.append(f"page {i + 1}: {_short(e)}; skipped")
                    continue
                finally:
                    _forget_decoded(page)
                text = text.replace("\x00", "")
                pages.append((i + 1, text))
                alnum = sum(ch.isalnum() for ch in text)
                if alnum >= _SCAN_TEXT_CHARS or (alnum and not _has_image(page)):
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
            if type(e).__name__ == "LimitReachedError":
                raise SourceError(_bomb_reason("a decoded stream", limits.page_bytes, raw)) from e
            raise SourceError(f"damaged PDF: {_short(e)}") from e
        finally:
            # The reader holds every object it decoded: let it go now, not when the batch ends.
            reader = page = None
            gc.collect()
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
