"""What every command module shares: the Typer app with its global options, the two consoles (which
never read markup), `--json`, and the way to open settings and the engine or fail with one line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from .. import __version__
from ..config import ConfigError, Settings, load_settings
from ..engine import Engine
from .progress import IndexDisplay
from .progress import progress_bar as _progress_bar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    name="obsidian-ai-agent",
    help="Index an Obsidian vault, search it (keyword + semantic), and serve it over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure retrieval quality on benchmark sets.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(eval_app, name="eval")

# markup=False, emoji=False: whatever a note says is printed as it is (`:x:` stays `:x:`, `[/]` stays).
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModeOpt = Annotated[str, typer.Option("--mode", "-m", help="hybrid, keyword or semantic.")]


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of output: plain strings as they are, `(text, style)` pairs styled; never parsed as markup."""
    return Text.assemble(*parts)


class _State:
    config: Path | None = None
    data_dir: Path | None = None


state = _State()


def _version(wanted: bool) -> None:
    # Eager: runs while the options are parsed, before click asks for a command.
    if wanted:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the index lives (env OAA_DATA_DIR).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A YAML settings file (env OAA_CONFIG).")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_version),
    ] = False,
) -> None:
    state.config, state.data_dir = config, data_dir


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(styled(("error:", "red"), " ", message))
    raise typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    try:
        return load_settings(state.config, state.data_dir, **overrides)
    except ConfigError as e:
        fail(str(e), 2)


@contextmanager
def engine(s: Settings | None = None) -> Iterator[Engine]:
    from ..embeddings import EmbeddingError
    from ..evaluate import EvalError
    from ..search import SearchError
    from ..store import StoreError

    try:
        with Engine(s or settings()) as e:
            yield e
    except (StoreError, EmbeddingError, SearchError, EvalError, FileNotFoundError, ValueError) as e:
        fail(str(e))


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[IndexDisplay]:
    """A progress bar on stderr: phase, files done, chunks embedded, a measured ETA (see `progress`)."""
    with _progress_bar(label, err, enabled) as display:
        yield display
