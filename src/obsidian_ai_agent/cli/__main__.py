"""`python -m obsidian_ai_agent.cli`."""

from . import main

main()
