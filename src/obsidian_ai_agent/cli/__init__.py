"""The command line: each command parses its input, calls the library once, and prints the result.

Every command takes `--json` for scripts; human output goes to stdout, progress and errors to stderr.
Note text is printed verbatim: the consoles never read markup (`- [/]`, `[[link]]`, `[x]` are text), and
styles come only from `Text` objects built here (`styled`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..config import default_workers
from .common import (
    JsonOpt,
    ModeOpt,
    app,
    config_app,
    emit,
    engine,
    err,
    eval_app,
    fail,
    out,
    progress_bar,
    settings,
    state,
    styled,
)

# -- commands -----------------------------------------------------------------------------------


@app.command()
def index(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The vault folder (default: setting `vault`, else the vault this index already holds)."
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Index a vault: new and changed notes and PDFs are embedded, deleted ones removed.

    Example: obsidian-ai-agent index ~/Notes
    """
    from ..jobs import run, submit_reindex

    with engine() as e:
        job_id = submit_reindex(e, path)  # names the vault first: no folder is guessed
        with progress_bar("indexing", enabled=not quiet) as display:
            display.phase("loading model")
            _ = e.indexer  # the model loads here, named on the bar, not silently inside the job
            display.phase("scanning")
            job = run(e, job_id, progress=display)
    if job.status != "succeeded" or job.result is None:
        fail(f"indexing job {job.id} {job.status}: {job.error}")
    data = {**job.result, "job_id": job.id}
    if as_json:
        emit(data)
        return
    out.print(
        f"indexed {data['indexed']}, unchanged {data['unchanged']}, removed {data['removed']}, "
        f"moved {data['moved']}; {data['chunks_embedded']} chunks embedded, {data['chunks_reused']} reused "
        f"in {data['seconds']:.1f} s (job {job.id})"
    )
    for f in data["failed"]:
        out.print(styled(("failed", "yellow"), f" {f['path']}: {f['error']}"))
    for w in data["warnings"][:20]:
        out.print(styled((f"warning {w['path']}: {w['warning']}", "dim")))
    if len(data["warnings"]) > 20:
        out.print(styled((f"... and {len(data['warnings']) - 20} more warnings (see --json)", "dim")))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for; any text is safe.")],
    k: Annotated[
        int | None, typer.Option("--k", "-k", help="How many results, 1 to 100 (setting search.k).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option("--mode", "-m", help="hybrid, keyword or semantic (setting search.default_mode)."),
    ] = None,
    folder: Annotated[str | None, typer.Option(help="Only notes under this folder.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only notes with this tag (nested tags included).")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind of source: note, pdf or web.")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only this note (vault-relative, e.g. 'Folder/Note.md').")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the index.

    Example: obsidian-ai-agent search "recurring tasks every two weeks" --k 5
    """
    from ..search import SearchError, check_request

    try:  # the same rules /api/search applies
        query, k, mode, kind = check_request(query, k, mode, kind)
    except SearchError as ex:
        fail(str(ex), 2)
    with engine() as e:
        try:
            results = e.search(query, k=k, mode=mode, folder=folder, tag=tag, kind=kind, path=path)
        except SearchError as ex:  # a note the index does not hold
            fail(str(ex))
    if as_json:
        emit({"results": [r.to_dict() for r in results]})
        return
    if not results:
        out.print("no results")
    for i, r in enumerate(results, 1):
        where = f"p. {r.page}" if r.page else f"lines {r.start_line}-{r.end_line}"
        heading = " > ".join(r.heading_path)
        out.print(
            styled(
                (f"{i}. {r.title}", "bold"),
                f"  {r.path}" + (f"  # {heading}" if heading else "") + f"  ({where})",
            )
        )
        out.print(f"   {r.snippet}")
        out.print(
            styled("   ", (f"{r.link}  score {r.score:.4f} kw {r.keyword_rank} sem {r.semantic_rank}", "dim"))
        )


@app.command()
def related(
    path: Annotated[str, typer.Argument(help="A note's path relative to the vault.")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many notes, 1 to 100.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Notes related to a note, by meaning and by links.

    Example: obsidian-ai-agent related "Getting Started/Dates.md"
    """
    from ..search import SearchError, check_k

    try:  # the same rule /api/related applies
        check_k(k)
    except SearchError as ex:
        fail(str(ex), 2)
    with engine() as e:
        notes = e.related(path, k)
    if as_json:
        emit({"results": [n.to_dict() for n in notes]})
        return
    for i, n in enumerate(notes, 1):
        why = ", ".join(x for x, on in (("links to it", n.links_to), ("linked from it", n.linked_from)) if on)
        out.print(f"{i}. {n.title}  {n.path}  {n.similarity:.3f}" + (f"  ({why})" if why else ""))


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """What the index holds: sources, chunks, vectors, model, generation, database."""
    s = settings()
    with engine(s) as e:
        data = e.status()
    if as_json:
        emit(data)
        return
    for key, value in data.items():
        out.print(f"{key}: {value}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (setting server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (setting server.port).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (setting server.workers; default one per core, at most 4).", min=1, max=64
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM); serve HTTPS.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM).")] = None,
    index_first: Annotated[
        bool, typer.Option("--index/--no-index", help="Index the vault before serving.")
    ] = True,
    allow_new_database: Annotated[
        bool,
        typer.Option(
            "--allow-new-database",
            help="Start even on an empty or damaged index.sqlite: move it aside and begin a new index "
            "(setting allow_new_database).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (and bring the configured vault's index up to date first).

    Example: obsidian-ai-agent serve --host 0.0.0.0 --workers 4 --ssl-certfile c.pem --ssl-keyfile k.pem
    """
    import uvicorn

    # Each worker process reads its settings afresh: hand the command line's choices over through the
    # environment, where they rank above the config file just as flags should.
    chosen = {
        "OAA_DATA_DIR": state.data_dir,
        "OAA_CONFIG": state.config,
        "OAA_SERVER__HOST": host,
        "OAA_SERVER__PORT": port,
        "OAA_SERVER__WORKERS": workers,
        "OAA_SERVER__SSL_CERTFILE": ssl_certfile,
        "OAA_SERVER__SSL_KEYFILE": ssl_keyfile,
        "OAA_ALLOW_NEW_DATABASE": "true" if allow_new_database else None,
    }
    for name, value in chosen.items():
        if value is not None:
            os.environ[name] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
    s = settings()
    if s.server.workers is None:
        # One per core; the workers read it from the environment too (shared rate-limit counts, one model
        # thread each).
        os.environ["OAA_SERVER__WORKERS"] = str(default_workers())
        s = settings()
    workers_n = s.server.workers or 1
    for f in (s.server.ssl_certfile, s.server.ssl_keyfile):
        if f is not None and not f.is_file():
            fail(f"TLS file {f} does not exist; give a PEM certificate and key", 2)
    if index_first and s.vault:
        with engine(s) as e, progress_bar("indexing") as update:
            report = e.index(s.vault, progress=update)
        err.print(f"indexed {report.indexed}, unchanged {report.unchanged}, failed {len(report.failed)}")
    else:
        with engine(s):  # a damaged index is one line here, not a traceback from every worker
            pass
    from ..observability import setup_logging

    setup_logging(s)  # the supervisor's own lines (a worker that died) go to the same log
    scheme = "https" if s.server.ssl_certfile else "http"
    err.print(f"serving on {scheme}://{s.server.host}:{s.server.port} with {workers_n} worker(s)")
    uvicorn.run(
        "obsidian_ai_agent.backend:app",
        host=s.server.host,
        port=s.server.port,
        workers=workers_n,
        ssl_certfile=str(s.server.ssl_certfile) if s.server.ssl_certfile else None,
        ssl_keyfile=str(s.server.ssl_keyfile) if s.server.ssl_keyfile else None,
        log_config=None,  # our JSON logging (observability) is set up by the app
        access_log=False,  # one line per request comes from our middleware, with the request id
        proxy_headers=False,  # X-Forwarded-For is honoured only from server.trusted_proxies
        server_header=False,
        timeout_keep_alive=int(s.server.keep_alive),
        timeout_graceful_shutdown=10,
        # Header-read timeout, connection cap, JSON 400s (server.header_timeout, server.max_connections).
        http="obsidian_ai_agent.api.protocol:ServerProtocol",
    )


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Print the effective settings (defaults < config file < OAA_* environment), secrets redacted."""
    s = settings()
    data = s.redacted()
    if as_json:
        emit(data)
        return
    import yaml

    out.print(f"# config file: {s.config_file or '(none)'}")
    out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


@eval_app.command("beir")
def eval_beir_cmd(
    corpus: Annotated[Path, typer.Option(help="corpus.jsonl")],
    queries: Annotated[Path, typer.Option(help="queries.jsonl")],
    qrels: Annotated[Path, typer.Option(help="qrels TSV (query-id, corpus-id, score)")],
    mode: ModeOpt = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10, recall@100 and MRR@10 on a BEIR-format benchmark (indexed once into the data dir).

    Example: obsidian-ai-agent eval beir --corpus scifact/corpus.jsonl --queries scifact/queries_train.jsonl
    --qrels scifact/qrels/train.tsv
    """
    from ..evaluate import eval_beir, eval_index_dir, index_beir_corpus

    base = settings()
    for f in (corpus, queries, qrels):
        if not f.is_file():
            fail(f"{f} does not exist")
    s = base.model_copy(update={"data_dir": eval_index_dir(base, "beir", str(corpus.resolve()))})
    with engine(s) as e:
        with progress_bar("indexing corpus") as update:
            index_beir_corpus(e, corpus, update)
        result = eval_beir(e, queries, qrels, mode)
    if as_json:
        emit(result)
    else:
        for key, value in result.items():
            out.print(f"{key}: {value}")


@eval_app.command("questions")
def eval_questions_cmd(
    file: Annotated[Path, typer.Argument(help="Questions JSONL (question, relevant, kind).")],
    vault: Annotated[Path, typer.Option(help="The vault the questions are about.")],
    mode: ModeOpt = "hybrid",
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="Answer with extractive, openai or llamacpp (setting llm.provider)."),
    ] = None,
    answers: Annotated[
        bool, typer.Option("--answers/--no-answers", help="Also answer each question and score the answers.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """hit@5 and MRR@10 of the relevant notes, and answer_ok / declined_ok of the answers, overall and
    per kind of question.

    Example: obsidian-ai-agent eval questions vault_questions_dev.jsonl --vault docs_vault --provider llamacpp
    """
    from ..evaluate import eval_index_dir, eval_questions

    base = settings()
    if provider is not None:
        if provider not in ("extractive", "openai", "llamacpp"):
            fail(f"unknown provider '{provider}'; use one of: extractive, openai, llamacpp", 2)
        base = base.model_copy(update={"llm": base.llm.model_copy(update={"provider": provider})})
    if not file.is_file():
        fail(f"{file} does not exist")
    s = base.model_copy(update={"data_dir": eval_index_dir(base, "vault", str(vault.resolve()))})
    with engine(s) as e:
        with progress_bar("indexing vault") as update:
            e.index(vault, progress=update)
        result = eval_questions(e, file, mode, answers=answers)
    if as_json:
        emit(result)
        return
    out.print(
        f"mode {result['mode']}: hit@5 {result['hit@5']}, mrr@10 {result['mrr@10']} "
        f"({result['questions']} questions)"
    )
    if answers:
        a = result["answers"]
        out.print(
            f"answers ({a['provider']} {a['model'] or ''}): answer_ok {result['answer_ok']}, "
            f"declined_ok {result['declined_ok']}; first token p50 {a['first_token_ms']['p50']} ms, "
            f"total p50 {a['total_ms']['p50']} ms"
        )
    for kind, r in result["per_kind"].items():
        extra = "".join(f", {k} {r[k]}" for k in ("answer_ok", "declined_ok") if k in r)
        out.print(
            f"  {kind}: hit@5 {r.get('hit@5', '-')}, mrr@10 {r.get('mrr@10', '-')}{extra} ({r['questions']})"
        )


# Commands of other areas live beside this module and register themselves on `app`.
from . import alerts as _alerts  # noqa: E402, F401
from . import answers as _answers  # noqa: E402, F401
from . import jobs as _jobs  # noqa: E402, F401
from . import keys as _keys  # noqa: E402, F401
from . import maintenance as _maintenance  # noqa: E402, F401
from . import mcp as _mcp  # noqa: E402, F401
from . import ops as _ops  # noqa: E402, F401
from . import store as _store  # noqa: E402, F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
