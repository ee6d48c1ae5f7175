"""Paths of the shared, read-only corpora used by the notes tests."""

from __future__ import annotations

from pathlib import Path

CORPORA = Path("/work/shared/corpora")
DOCS_VAULT = CORPORA / "obsidian-tasks" / "docs_vault"
DEMO_VAULT = CORPORA / "obsidian-tasks" / "Tasks-Demo_vault"
KNOWLEDGE_VAULT = CORPORA / "vaultofknowledge"
PDFS = CORPORA / "pdfs"
