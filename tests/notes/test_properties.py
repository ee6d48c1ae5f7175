from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obsidian_ai_agent.notes import parse_markdown
from obsidian_ai_agent.notes.model import TokenCounter, default_token_counter

_COUNTER: TokenCounter = default_token_counter()

_PIECES = st.sampled_from(
    [
        "---\n",
        "# ",
        "## ",
        "### H\n",
        "```\n",
        "~~~py\n",
        "> [!note] T\n",
        "> ",
        "[[",
        "]]",
        "|",
        "\\|",
        "#tag ",
        "#1 ",
        "![[e]]",
        "`",
        "\n",
        "\n\n",
        " ",
        "title: x\n",
        "tags: [a, b]\n",
        ": :",
        "-",
        "*",
        "漢字",
        "हिन्दी",
        "é",
        "\r\n",
        "\t",
        "word ",
        "Sentence. ",
        "x" * 300,
        "https://a.b/c#d ",
        "%%",
        "<!--",
        "-->",
        "<% ",
        " %>",
        "[t](n.md)",
        "](",
        "\n===\n",
        "\n---\n",
        "    ",
        "<div>\n",
    ]
)
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=40)), max_size=60).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_arbitrary_text_never_raises_and_every_chunk_fits(text: str) -> None:
    src = parse_markdown(text.encode("utf-8", "surrogatepass"), "note.md", _COUNTER)
    assert src.chunks
    assert [c.ordinal for c in src.chunks] == list(range(len(src.chunks)))
    n_lines = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").count("\n") + 1
    for c in src.chunks:
        assert _COUNTER.count(c.embed_text) <= _COUNTER.max_tokens
        assert c.start_line is not None and c.end_line is not None
        assert 1 <= c.start_line <= c.end_line <= n_lines + text.count("\r")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    src = parse_markdown(raw, "note.md", _COUNTER)
    assert src.chunks
    assert all(_COUNTER.count(c.embed_text) <= _COUNTER.max_tokens for c in src.chunks)
