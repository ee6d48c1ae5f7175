"""Obsidian AI Agent: hybrid search and cited answers over an Obsidian vault, offline."""

__version__ = "0.1.0"
