"""A note at the body limit is parsed and chunked in bounded time, growing linearly with its size
(issue 9, hole 7). The note is real text: vaultofknowledge notes concatenated under their titles."""

from __future__ import annotations

import time
from pathlib import Path

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.notes import default_token_counter, parse_markdown

KNOWLEDGE_VAULT = Path("/work/shared/corpora/vaultofknowledge")


def big_note(nbytes: int) -> bytes:
    """About `nbytes` of real notes as one note: each note's body under a `##` heading of its name."""
    parts = ["# Everything in one note\n"]
    size = len(parts[0])
    for f in sorted(KNOWLEDGE_VAULT.rglob("*.md")):
        text = f.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            end = text.find("\n---", 3)
            text = text[end + 4 :] if end > 0 else text
        part = f"\n\n## {f.stem}\n\n{text}"
        parts.append(part)
        size += len(part.encode())
        if size >= nbytes:
            break
    raw = "".join(parts).encode()[:nbytes]
    return raw.decode("utf-8", errors="ignore").encode()


def _parse_seconds(raw: bytes) -> tuple[float, int]:
    counter = default_token_counter()
    t0 = time.process_time()
    parsed = parse_markdown(raw, "big.md", counter)
    return time.process_time() - t0, len(parsed.chunks)


def test_a_note_at_the_body_limit_is_parsed_and_chunked_in_time_that_grows_linearly() -> None:
    limit = load_settings().server.max_body_bytes
    small, big = big_note(limit // 4), big_note(limit)
    assert len(big) > 0.99 * limit
    _parse_seconds(small[:20_000])  # tokenizer and parser loaded before timing
    t_small, n_small = _parse_seconds(small)
    t_big, n_big = _parse_seconds(big)
    assert n_big > 3 * n_small  # the big note really is ~4x the text
    # Linear is ~4x; quadratic would be ~16x. Generous: this proves the shape, it is not a benchmark.
    assert t_big < 8 * max(t_small, 0.05), (t_small, t_big)
    assert t_big < 60, t_big


def test_a_big_pushed_note_waited_for_goes_to_the_bulk_lane_and_answers_202_not_504(
    example,  # type: ignore[no-untyped-def]
) -> None:
    from fastapi.testclient import TestClient

    from obsidian_ai_agent.backend import create_app
    from obsidian_ai_agent.security import keys

    engine, _vault = example
    settings = engine.settings
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"run_jobs": False})})
    writer = {"Authorization": "Bearer " + keys.create_key(engine.store, "plugin", ["read", "write"]).secret}
    headers = {**writer, "Content-Type": "text/markdown"}
    big = big_note(settings.jobs.big_note_bytes + 64 * 1024)
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        t0 = time.monotonic()
        r = client.put("/api/notes/Inbox/Everything.md?wait=true", content=big, headers=headers)
        assert r.status_code == 202, r.text
        assert r.json()["lane"] == "bulk" and r.json()["status"] == "queued"
        assert time.monotonic() - t0 < 30
        small = "# Small\n\nA small note is still indexed while the request waits.\n"
        r = client.put("/api/notes/Inbox/Small.md?wait=true", content=small, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["lane"] == "interactive" and r.json()["status"] == "succeeded"
