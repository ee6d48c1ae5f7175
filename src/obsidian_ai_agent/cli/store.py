"""`store copy`: move the index between SQLite and PostgreSQL without re-embedding."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import JsonOpt, app, emit, engine, err, fail, out, styled

store_app = typer.Typer(
    help="The index database: copy it between SQLite and PostgreSQL.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


@store_app.command("copy")
def copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Where to copy: a postgresql://user:password@host/db URL, or an SQLite file "
            "(a folder means its index.sqlite).",
        ),
    ],
    origin: Annotated[
        str | None,
        typer.Option("--from", help="Copy this store instead of the configured one (same forms as --to)."),
    ] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the check after the copy.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy the index (sources, chunks with their vectors, links, keys, conversations) to another store.

    Nothing is re-embedded. Run it again after an interruption: what was copied is skipped. Then the
    counts and, for sampled chunks, the ten nearest chunks are compared on both sides.

    Example: obsidian-ai-agent store copy --to postgresql://oaa:secret@db.lan/oaa
    """
    last = [0.0]

    def progress(done: int, total: int, path: str) -> None:
        import time

        now = time.monotonic()
        if not as_json and (done == total or now - last[0] > 1.0):
            last[0] = now
            err.print(f"copying {done}/{total}: {path}", highlight=False, markup=False)

    with engine() as e:
        try:
            report: dict[str, Any] = e.copy_store(to, origin=origin, progress=progress, check=not no_verify)
        except ValueError as ex:
            fail(str(ex))
    verified = report.get("verified") or {}
    if as_json:
        emit(report)
    else:
        out.print(
            f"copied {report['sources_copied']} sources ({report['chunks_copied']} chunks) from "
            f"{report['from']} to {report['to']}; {report['sources_unchanged']} already there, "
            f"{report['sources_removed']} removed from the target; in {report['seconds']:.1f} s",
            highlight=False,
        )
        rows = ", ".join(f"{n} {t}" for t, n in report["rows"].items())
        out.print(f"also copied: {rows}", highlight=False)
        if verified:
            c = verified["counts"]
            line = (
                f"{c['sources']} sources, {c['chunks']} chunks, {c['links']} links, {c['api_keys']} keys on "
                f"both sides; nearest chunks identical for {verified['nearest_identical']} of "
                f"{verified['nearest_checked']} samples"
            )
            out.print(
                styled(
                    (
                        "verified: " if verified["ok"] else "NOT verified: ",
                        "green" if verified["ok"] else "red",
                    ),
                    line,
                )
            )
    if verified and not verified.get("ok"):
        raise typer.Exit(1)
