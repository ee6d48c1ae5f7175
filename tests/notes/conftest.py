from __future__ import annotations

import os

import pytest
from notes_corpora import CORPORA

from obsidian_ai_agent.notes.model import TokenCounter, default_token_counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if not CORPORA.is_dir():
    # These tests are about the shared corpora: without them, fail loudly rather than pass by skipping.
    raise RuntimeError(f"the shared corpora are missing at {CORPORA}; the notes tests read them")


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return default_token_counter()
