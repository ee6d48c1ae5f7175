"""Compressed PDF bombs: a small file whose pages decode to tens of MB each is refused within a time and
memory budget, with a reason naming it, and the rest of the batch is indexed (issue 9, hole 2).

The bombs are built here with pypdf: each page's content stream is zlib-compressed blanks inside a text
object, so the page is a valid page with a font and a line of text (70 MB -> ~70 KB).
"""

from __future__ import annotations

import io
import shutil
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.notes import PdfLimits, SourceError, parse_pdf
from obsidian_ai_agent.notes.model import CharTokenCounter

TEXT_KNOWN = Path("/work/shared/corpora/pdfs/text_known")
MB = 1024 * 1024


def bomb_pdf(pages: int, mb_per_page: float, fill: bytes = b" ") -> bytes:
    """A PDF of `pages` pages, each a line of text padded to `mb_per_page` MB of `fill` once decoded."""
    from pypdf import PdfWriter
    from pypdf.generic import DictionaryObject, EncodedStreamObject, NameObject

    body = b"BT /F1 12 Tf 72 720 Td (Hello bomb) Tj " + fill * int(mb_per_page * MB / len(fill)) + b" ET"
    data = zlib.compress(body, 9)
    w = PdfWriter()
    font = w._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for _ in range(pages):
        page = w.add_blank_page(612, 792)
        stream = EncodedStreamObject()
        stream._data = data
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        page[NameObject("/Contents")] = w._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def measured(fn):  # type: ignore[no-untyped-def]
    """(result or SourceError, CPU seconds, peak traced MB, MB still held after)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    try:
        result = fn()
    except SourceError as e:
        result = SourceError(str(e))  # not `e`: its traceback holds the parser's frames
    cpu = time.process_time() - t0
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, cpu, (peak - base) / MB, (held - base) / MB


def test_a_717_kb_pdf_of_ten_70_mb_pages_is_refused_as_a_compression_bomb_in_bounded_time_and_memory() -> (
    None
):
    raw = bomb_pdf(10, 70)
    assert len(raw) < 1 * MB  # the shape of the report: ~700 KB upload
    result, cpu, peak_mb, held_mb = measured(lambda: parse_pdf(raw, "bomb.pdf", CharTokenCounter(256)))
    assert isinstance(result, SourceError)
    assert "page 1's decoded content exceeds 16 MB" in str(result)
    assert "compression bomb" in str(result)
    # Before: 57 s of CPU and ~600 MB kept. Generous bounds: decoding stops at the page budget.
    assert cpu < 10, cpu
    assert peak_mb < 120, peak_mb
    assert held_mb < 5, held_mb


def test_many_pages_each_under_the_page_budget_are_refused_by_the_file_budget_without_piling_up() -> None:
    limits = PdfLimits(page_bytes=2 * MB, file_bytes=8 * MB, seconds=120)
    raw = bomb_pdf(40, 1.5)
    result, cpu, peak_mb, held_mb = measured(
        lambda: parse_pdf(raw, "pages.pdf", CharTokenCounter(256), limits=limits)
    )
    assert isinstance(result, SourceError)
    assert "decoded content (pages 1-6) exceeds 8 MB" in str(result) and "compression bomb" in str(result)
    # Each page's decoded stream is dropped after the page: the peak is about one page, not forty.
    assert peak_mb < 40, peak_mb
    assert held_mb < 5, held_mb
    assert cpu < 30, cpu


def test_a_pdf_slower_to_read_than_its_time_budget_keeps_the_pages_read_with_a_warning() -> None:
    limits = PdfLimits(page_bytes=4 * MB, file_bytes=1000 * MB, seconds=0.5)
    raw = bomb_pdf(60, 1)
    t0 = time.monotonic()
    parsed = parse_pdf(raw, "slow.pdf", CharTokenCounter(256), limits=limits)
    took = time.monotonic() - t0
    assert any("reading stopped after 0.5 s" in w and "of 60 pages" in w for w in parsed.warnings)
    pages = {c.page for c in parsed.chunks}
    assert 1 in pages and len(pages) < 60
    assert took < 15, took  # the deadline is checked between pages: one page past it at most


def test_a_normal_pdf_is_not_refused_by_the_default_budgets() -> None:
    raw = (TEXT_KNOWN / "sf004_pdflatex-4-pages.pdf").read_bytes()
    parsed = parse_pdf(raw, "four.pdf", CharTokenCounter(256))
    assert len({c.page for c in parsed.chunks}) == 4
    assert not any("bomb" in w for w in parsed.warnings)


def test_a_bomb_in_a_batch_is_refused_with_its_reason_and_the_other_pdf_is_indexed(
    tmp_path: Path,
    embedder,  # type: ignore[no-untyped-def]
) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "bomb.pdf").write_bytes(bomb_pdf(10, 70))
    shutil.copy(TEXT_KNOWN / "pdfminer_simple1.pdf", vault / "simple.pdf")
    (vault / "note.md").write_text("# Plain note\n\nNothing hostile here.\n", encoding="utf-8")
    with Engine(load_settings(data_dir=tmp_path / "data"), embedder=embedder) as engine:
        t0 = time.monotonic()
        report = engine.index(vault)
        took = time.monotonic() - t0
        failed = {f["path"]: f["error"] for f in report.failed}
        assert set(failed) == {"bomb.pdf"}
        assert "compression bomb" in failed["bomb.pdf"]
        assert report.indexed == 2
        hits = engine.search("Hello World", k=5, mode="keyword")
        assert any(h.path == "simple.pdf" for h in hits)
    assert took < 60, took


@pytest.mark.parametrize("name", ["bulk"])
def test_the_bulk_lane_that_runs_pdfs_and_reindexes_has_a_default_timeout(name: str) -> None:
    lane = load_settings().lane(name)
    assert lane.timeout is not None and 3600 <= lane.timeout <= 24 * 3600
