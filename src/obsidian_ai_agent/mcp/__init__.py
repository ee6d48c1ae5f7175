"""The MCP server (the official `mcp` SDK): the vault's search, answers and notes as tools and resources.

Tools (`tools.py`) are thin calls of the `Engine`, the same library calls the API and the CLI make:
`search`, `ask`, `related`, `read_note`, `list_notes`, `index_status`, and, when `mcp.write_tools` is on,
`write_note` and `append_to_note` (the path `PUT /api/notes/{path}` takes). Notes are resources,
`obsidian-note://<path>`, listed page by page (`server.py`).

Two transports: stdio (`obsidian-ai-agent mcp`, for desktop clients that start the server themselves;
the local user is the operator and holds every scope), and streamable HTTP at `/mcp` in the service
(`http.py`), behind the service's API keys, scopes, rate limits and access log: a key without the write
scope neither sees nor calls a writing tool.

Inside this package `mcp` is the SDK: its imports are absolute (`from mcp.server... import`), ours are
relative.
"""

from __future__ import annotations
