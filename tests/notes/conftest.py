from __future__ import annotations

import os

import pytest
from notes_corpora import CORPORA

from obsidian_ai_agent.notes.model import TokenCounter, default_token_counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if not CORPORA.is_dir():  # pragma: no cover - the corpora are part of the shared workspace
    pytest.skip("shared corpora not available", allow_module_level=True)


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return default_token_counter()
