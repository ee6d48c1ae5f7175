"""Commands for answers; registered on the main `app`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from .common import JsonOpt, app, emit, engine, err, fail, out, settings, styled

cache_app = typer.Typer(help="The answer and search cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

ProviderOpt = Annotated[
    str | None,
    typer.Option("--provider", help="extractive, openai or llamacpp (setting llm.provider)."),
]


def settings_with_provider(provider: str | None) -> Any:
    s = settings()
    if provider is None:
        return s
    if provider not in ("extractive", "openai", "llamacpp"):
        fail(f"unknown provider '{provider}'; use one of: extractive, openai, llamacpp", 2)
    return s.model_copy(update={"llm": s.llm.model_copy(update={"provider": provider})})


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, as you would ask a person.")],
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Continue (or start) this conversation id.")
    ] = None,
    provider: ProviderOpt = None,
    folder: Annotated[str | None, typer.Option(help="Only notes under this folder.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only notes with this tag.")] = None,
    path: Annotated[
        str | None,
        typer.Option("--path", help="Only this note (vault-relative, e.g. 'Folder/Note.md')."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the notes, citing them; the answer streams as it is written.

    Example: obsidian-ai-agent ask "how do I make a task repeat every two weeks?"
    """
    from ..answer import AnswerEvent, ErrorEvent, TokenEvent
    from ..llm import LLMError
    from ..store.conversations import ConversationNotFound

    with engine(settings_with_provider(provider)) as e:
        final = None
        streamed = False
        try:
            events = e.answerer.stream(
                question, conversation_id=conversation, folder=folder, tag=tag, path=path
            )
            for event in events:
                if isinstance(event, TokenEvent) and not as_json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                    streamed = True
                elif isinstance(event, ErrorEvent):
                    if not event.recovered:
                        fail(event.message)
                    if streamed:
                        sys.stdout.write("\n")
                    err.print(styled(("warning:", "yellow"), " ", event.message))
                    if not as_json:
                        sys.stdout.write("\n")
                elif isinstance(event, AnswerEvent):
                    final = event.answer
        except (ConversationNotFound, LLMError) as ex:
            fail(str(ex))
    if final is None:
        fail("no answer was produced")
    if as_json:
        emit(final.to_dict())
        return
    sys.stdout.write("\n")
    if final.notice:
        err.print(styled((final.notice, "yellow")))
    if final.citations:
        out.print(styled("\n", ("Sources", "bold")))
    for c in final.citations:
        where = f"p. {c.page}" if c.page else f"lines {c.start_line}-{c.end_line}"
        heading = " > ".join(c.heading_path)
        out.print(f"[{c.n}] {c.title}  {c.path}" + (f"  # {heading}" if heading else "") + f"  ({where})")
        out.print(styled("    ", (c.link, "dim")))
    for note in final.closest if final.declined else []:
        out.print(styled(f"  {note['title']}  {note['path']}  ", (note["link"], "dim")))
    if conversation:
        err.print(styled((f"conversation {conversation}", "dim")))


@cache_app.command("clear")
def cache_clear(as_json: JsonOpt = False) -> None:
    """Remove every cached answer and search.

    Example: obsidian-ai-agent cache clear
    """
    from ..cache import make_cache

    s = settings()
    with engine(s) as e:
        removed = make_cache(s.cache, e.store).clear()
    if as_json:
        emit({"removed": removed})
    else:
        out.print(f"removed {removed} cached entries")


@cache_app.command("stats")
def cache_stats(as_json: JsonOpt = False) -> None:
    """How many entries the cache holds (hit and miss counts are per process: see the metrics endpoint)."""
    from ..cache import make_cache

    s = settings()
    with engine(s) as e:
        data = make_cache(s.cache, e.store).stats()
    if as_json:
        emit(data)
    else:
        out.print(f"backend {data['backend']}, {data['entries']} entries, enabled {data['enabled']}")
