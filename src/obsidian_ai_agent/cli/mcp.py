"""`obsidian-ai-agent mcp`: the MCP server over stdio, for desktop clients that start it themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app, engine, settings, state


@app.command("mcp")
def mcp_stdio(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the index lives (as the global --data-dir; env OAA_DATA_DIR)."
        ),
    ] = None,
) -> None:
    """Serve the index to an MCP client (Claude Desktop, Cursor, an agent) over stdin and stdout.

    The client starts this command: stdout carries only the protocol, logs go to stderr.

    Writing tools (write_note, append_to_note) only with the setting mcp.write_tools (OAA_MCP__WRITE_TOOLS).

    Example: obsidian-ai-agent mcp --data-dir ~/.local/share/obsidian-ai-agent
    """
    import anyio

    from ..mcp.server import serve_stdio
    from ..observability import setup_logging

    if data_dir is not None:
        state.data_dir = data_dir
    s = settings()
    setup_logging(s)  # to stderr (and logging.file): before the SDK would set up a handler of its own
    with engine(s) as e:
        anyio.run(serve_stdio, e)
