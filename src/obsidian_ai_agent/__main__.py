"""`python -m obsidian_ai_agent`: the command line, as `obsidian-ai-agent`."""

from .cli import main

main()
