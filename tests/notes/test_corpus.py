from __future__ import annotations

from pathlib import Path

import pytest
from notes_corpora import DOCS_VAULT, KNOWLEDGE_VAULT

from obsidian_ai_agent.notes import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, parse_source, scan_vault
from obsidian_ai_agent.notes.model import TokenCounter


@pytest.mark.parametrize("vault", [DOCS_VAULT, KNOWLEDGE_VAULT], ids=["docs_vault", "vaultofknowledge"])
def test_every_chunk_of_every_note_fits_the_window(vault: Path, counter: TokenCounter) -> None:
    files = [f for f in scan_vault(vault, DEFAULT_INCLUDE, DEFAULT_EXCLUDE) if f.kind == "note"]
    assert len(files) >= 118
    sizes = []
    for f in files:
        src = parse_source(f.abs_path, f.rel_path, counter)
        assert src.chunks, f.rel_path
        texts = [c.embed_text for c in src.chunks]
        counts = counter.count_many(texts)
        assert max(counts) <= counter.max_tokens, f.rel_path
        assert [c.ordinal for c in src.chunks] == list(range(len(src.chunks)))
        lines = f.abs_path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n").split("\n")
        for c in src.chunks:
            assert c.start_line is not None and c.end_line is not None
            assert 1 <= c.start_line <= c.end_line <= max(1, len(lines)), f.rel_path
            if c.text and c.heading_path and c.text.startswith("#"):
                assert lines[c.start_line - 1].lstrip().startswith("#"), f.rel_path
        sizes.extend(counts)
    # chunks use the window: most are not tiny
    assert sum(sizes) / len(sizes) > 60
