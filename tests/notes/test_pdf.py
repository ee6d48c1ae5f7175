from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from notes_corpora import PDFS

from obsidian_ai_agent.notes import SourceError, parse_pdf, parse_source
from obsidian_ai_agent.notes.model import TokenCounter

MANIFEST = {row["file"]: row for row in csv.DictReader((PDFS / "MANIFEST.tsv").open(), delimiter="\t")}
ALL_PDFS = sorted(MANIFEST)

# What each file gives with pypdf: True = chunks, or the start of the SourceError reason.
EXPECTED: dict[str, bool | str] = {
    "encrypted/pdfjs_empty_protected.pdf": "no extractable text",
    "encrypted/pdfminer_aes-256-r6.pdf": "encrypted: needs a password",
    "encrypted/pdfminer_rc4-40.pdf": "encrypted: needs a password",
    "encrypted/pypdf_crazyones-encrypted-256.pdf": "encrypted: needs a password",
    "encrypted/pypdf_r2-user-password.pdf": "encrypted: needs a password",
    "encrypted/pypdf_r4-aes-user-password.pdf": "encrypted: needs a password",
    "encrypted/pypdf_r6-both-passwords.pdf": "encrypted: needs a password",
    "encrypted/pypdf_r6-empty-password.pdf": True,
    "encrypted/pypdf_r6-user-password.pdf": True,  # empty owner password opens it
    "encrypted/pypdf_unencrypted.pdf": True,
    "encrypted/sf005_libreoffice-writer-password.pdf": "encrypted: needs a password",
    "image_only/pdfjs_scan-bad.pdf": "no extractable text (scanned or image-only PDF; OCR it first)",
    "image_only/pypdf_Seige_of_Vicksburg_Sample_OCR.pdf": True,  # has a hidden OCR layer
    "image_only/pypdf_jpeg.pdf": True,  # caption text
    "image_only/sf007_imagemagick-CCITTFaxDecode.pdf": "no extractable text",
    "image_only/sf007_imagemagick-images.pdf": "no extractable text",  # only "Background" over images
    "malformed/pdfjs_bug1020226.pdf": "damaged PDF: ",
    "malformed/pdfjs_issue15590.pdf": "damaged PDF: ",
    "malformed/pdfjs_xref_command_missing.pdf": True,
    "malformed/pdfminer_issue-1113-evil-xobjects.pdf": True,
    "malformed/pdfminer_zen_of_python_corrupted.pdf": True,
    "malformed/pypdf_issue-297_broken-xref.pdf": True,
    "malformed/synthetic_crazyones_truncated-6000B.pdf": "damaged PDF: ",
    "malformed/synthetic_not-a-pdf.pdf": "not a PDF file",
    "malformed/synthetic_zero-byte.pdf": "empty file",
}

KNOWN_TEXT = {
    "malformed/pdfjs_xref_command_missing.pdf": "Reduced test-case",
    "malformed/pypdf_issue-297_broken-xref.pdf": "test example",
    "malformed/pdfminer_zen_of_python_corrupted.pdf": "Beautiful is better than ugly.",
    "encrypted/pypdf_unencrypted.pdf": "password: asdfzxcv",
    "image_only/pypdf_jpeg.pdf": "A PDF with a JPEG image.",
    "text_known/pdfminer_simple1.pdf": "Hello World",
    "text_known/sf015_habibi_arabic.pdf": "habibi",
    "text_known/sf001_minimal-document.pdf": "Lorem ipsum dolor sit amet",
}


def test_the_manifest_lists_35_pdfs() -> None:
    assert len(ALL_PDFS) == 35
    assert all((PDFS / f).is_file() for f in ALL_PDFS)


@pytest.mark.parametrize("rel", ALL_PDFS)
def test_every_pdf_gives_chunks_or_a_one_line_reason(rel: str, counter: TokenCounter) -> None:
    path = PDFS / rel
    expected = EXPECTED.get(rel, True)  # text_known files all give text
    try:
        src = parse_source(path, rel, counter)
    except SourceError as e:
        reason = str(e)
        assert reason and "\n" not in reason and len(reason) < 200
        assert expected is not True, f"{rel}: unexpected error {reason!r}"
        assert isinstance(expected, str) and reason.startswith(expected)
        return
    assert expected is True, f"{rel}: expected an error starting {expected!r}"
    assert src.kind == "pdf" and src.chunks
    assert [c.ordinal for c in src.chunks] == list(range(len(src.chunks)))
    assert len(src.warnings) <= 6 and all("\n" not in w for w in src.warnings)
    pages = [c.page for c in src.chunks]
    assert all(isinstance(p, int) and p >= 1 for p in pages) and pages == sorted(pages)
    for c in src.chunks:
        assert c.heading_path == [] and c.start_line is None
        assert counter.count(c.embed_text) <= counter.max_tokens
        assert c.embed_text.startswith(src.title + "\n\n")
    if rel in KNOWN_TEXT:
        assert KNOWN_TEXT[rel] in " ".join(c.text for c in src.chunks)


def test_crazyones_text_matches_the_expected_file(counter: TokenCounter) -> None:
    src = parse_source(PDFS / "text_known/pypdf_crazyones.pdf", "crazyones.pdf", counter)
    expected = (PDFS / "text_known/pypdf_crazyones.expected.txt").read_text(encoding="utf-8")
    text = "\n".join(c.text for c in src.chunks)
    assert text.startswith("The Crazy Ones\nOctober 14, 1998\nHeres to the crazy ones.")
    assert " ".join(expected.split()[:40]) in " ".join(text.split())
    assert src.title == "crazyones"


def test_page_numbers_follow_the_pages(counter: TokenCounter) -> None:
    src = parse_source(PDFS / "text_known/sf004_pdflatex-4-pages.pdf", "docs/four.pdf", counter)
    assert sorted({c.page for c in src.chunks}) == [1, 2, 3, 4]
    dmca = parse_source(PDFS / "text_known/pdfminer_dmca_usgov.pdf", "dmca.pdf", counter)
    assert dmca.title == "The Digital Millennium Copyright Act of 1998"  # PDF metadata /Title
    assert max(c.page for c in dmca.chunks if c.page) == 18  # 18 pages, empty user password


@pytest.mark.parametrize(
    ("rel", "password", "text"),
    [
        ("encrypted/pypdf_crazyones-encrypted-256.pdf", "password", "The Crazy Ones"),
        ("encrypted/pdfminer_rc4-40.pdf", "baz", "Secret!"),
        ("encrypted/pdfminer_aes-256-r6.pdf", "usersecret", "Hello World"),
        ("encrypted/pypdf_r6-both-passwords.pdf", "foo", "pdf encryption test"),
        ("encrypted/sf005_libreoffice-writer-password.pdf", "openpassword", "Lorem ipsum"),
        ("encrypted/pypdf_r4-aes-user-password.pdf", "asdfzxcv", "pdf encryption test"),
    ],
)
def test_encrypted_pdfs_open_with_the_password(
    rel: str, password: str, text: str, counter: TokenCounter
) -> None:
    assert password in MANIFEST[rel]["notes"]
    src = parse_source(PDFS / rel, rel, counter, pdf_password=password)
    assert text in " ".join(c.text for c in src.chunks)


def test_a_wrong_password_is_a_clear_error(counter: TokenCounter) -> None:
    raw = (PDFS / "encrypted/pypdf_r2-user-password.pdf").read_bytes()
    with pytest.raises(SourceError, match=r"^encrypted: wrong password$"):
        parse_pdf(raw, "x.pdf", counter, password="nope")


def test_evil_xobjects_neither_hang_nor_recurse_forever(counter: TokenCounter) -> None:
    raw = (PDFS / "malformed/pdfminer_issue-1113-evil-xobjects.pdf").read_bytes()
    src = parse_pdf(raw, "evil.pdf", counter)
    assert "Hello world" in src.chunks[0].text
    assert src.warnings  # the rebuilt xref and the cycle are reported, not printed


def test_pypdf_log_messages_become_warnings_not_stderr(
    counter: TokenCounter, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = (PDFS / "malformed/pypdf_issue-297_broken-xref.pdf").read_bytes()
    with caplog.at_level(logging.WARNING):
        src = parse_pdf(raw, "broken.pdf", counter)
    assert src.warnings
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert capsys.readouterr().err == ""
    assert logging.getLogger("pypdf").propagate is True


def test_page_cap_limits_work_and_says_so(counter: TokenCounter) -> None:
    raw = (PDFS / "text_known/sf004_pdflatex-4-pages.pdf").read_bytes()
    src = parse_pdf(raw, "four.pdf", counter, max_pages=2)
    assert {c.page for c in src.chunks} == {1, 2}
    assert "only the first 2 of 4 pages were indexed" in src.warnings


def test_unreadable_and_unsupported_files_are_source_errors(counter: TokenCounter, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file not found"):
        parse_source(tmp_path / "missing.md", "missing.md", counter)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match="unsupported file type"):
        parse_source(tmp_path / "x.txt", "x.txt", counter)
    (tmp_path / "dir.md").mkdir()
    with pytest.raises(SourceError):
        parse_source(tmp_path / "dir.md", "dir.md", counter)
