"""Commands for operating an install: backup (and backup verify), restore, doctor, smoke."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, app, emit, err, fail, out, settings, state, styled

backup_app = typer.Typer(
    help="Back up the index, keys and settings into one archive; `backup verify` checks one.",
    invoke_without_command=True,
)
app.add_typer(backup_app, name="backup")


def _size(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB" if n >= 1_048_576 else f"{n / 1024:.1f} kB"


@backup_app.callback()
def backup(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Archive to write (default <data dir>/backups/oaa-backup-<time>.tar.gz)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a consistent backup while the service runs: the index (with keys, jobs, conversations),
    the settings file and admin.key, with a checksum manifest.

    Example: obsidian-ai-agent backup --output /srv/backups/before-upgrade.tar.gz
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..ops.backup import BackupError, create_backup

    try:
        result = create_backup(settings(), output)
    except BackupError as e:
        fail(str(e))
    if as_json:
        emit(result.to_dict())
        return
    m = result.manifest
    out.print(
        f"backed up to {result.path} ({_size(result.size)}, {result.seconds:.1f} s): "
        f"{m.counts.get('sources', 0)} sources, {m.counts.get('chunks', 0)} chunks, "
        f"{m.counts.get('api_keys', 0)} keys, schema v{m.schema_version}"
    )


@backup_app.command("verify")
def backup_verify(
    archive: Annotated[Path, typer.Argument(help="The archive to check.")],
    as_json: JsonOpt = False,
) -> None:
    """Check an archive as a restore would: checksums, integrity, schema version and counts.

    Example: obsidian-ai-agent backup verify ~/.local/share/obsidian-ai-agent/backups/oaa-backup-*.tar.gz
    """
    from ..ops.backup import BackupError, verify_backup

    try:
        manifest = verify_backup(archive)
    except BackupError as e:
        fail(f"{archive}: {e}")
    if as_json:
        emit({"ok": True, "manifest": manifest.to_dict()})
        return
    out.print(
        f"ok: {archive} (made {manifest.created_at} by {manifest.version}, schema v{manifest.schema_version},"
        f" {manifest.counts.get('chunks', 0)} chunks)"
    )


@app.command()
def restore(
    archive: Annotated[Path | None, typer.Argument(help="The archive to restore.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Restore into this data dir (new or existing).")
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Restore the newest archive in <data dir>/backups/.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the index even while a process holds it open.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup: verified first; what it replaces is kept beside it as *.before-restore-<time>.

    Example: obsidian-ai-agent restore --latest
    """
    from ..ops.backup import BackupError, restore_backup

    if (archive is None) == (not latest):
        fail("name an archive or give --latest (not both)", 2)
    if data_dir is not None:
        state.data_dir = data_dir
    try:
        result = restore_backup(settings(), archive, latest=latest, force=force)
    except BackupError as e:
        fail(str(e))
    if as_json:
        emit(result.to_dict())
        return
    m = result.manifest
    out.print(
        f"restored the backup of {m.created_at} into {result.data_dir}: {m.counts.get('sources', 0)} sources,"
        f" {m.counts.get('chunks', 0)} chunks, {m.counts.get('api_keys', 0)} keys"
    )
    for p in result.kept_aside:
        out.print(styled(("kept aside ", "dim"), str(p)))
    for note in result.notes:
        err.print(styled(("note:", "yellow"), " ", note))


_MARKS = {
    "pass": ("pass", "green"),
    "warn": ("warn", "yellow"),
    "fail": ("FAIL", "red"),
    "skip": ("skip", "dim"),
}


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Pre-flight checks of the install (environment, settings, keys, index, model, services, disk,
    backups, TLS): pass / warn / fail, a reason and a fix each; exit 1 on any fail. No secret is printed.

    Example: obsidian-ai-agent doctor --json
    """
    from ..ops.doctor import run_doctor

    report = run_doctor(state.config, state.data_dir)
    if as_json:
        emit(report.to_dict())
    else:
        for c in report.checks:
            word, style = _MARKS[c.status]
            out.print(styled((f"{word:<4}", style), f" {c.name}: {c.reason}"))
            if c.fix and c.status in ("warn", "fail"):
                out.print(styled(("     fix: ", "dim"), c.fix))
        counts = report.to_dict()["counts"]
        out.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def smoke(
    url: Annotated[str, typer.Option("--url", help="The running server, e.g. https://notes.example.org.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="OBSIDIAN_AI_AGENT_KEY",
            show_envvar=True,
            help="An API key (write or admin scope "
            "checks the most); never printed. Env keeps it out of the process list.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=10_000, help="Requests sent at once in the load check.")
    ] = 100,
    web_url: Annotated[
        str | None, typer.Option("--web-url", help="Also index this page through /api/index_web.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Post-deployment checks against a running server: routes and their shapes, a note written, found
    and removed (read keys: one found again), the answer cache, the job runner, SLA timings and a burst
    of concurrent requests; exit 1 on any fail. It leaves the operator's data as it found it.

    Example: OBSIDIAN_AI_AGENT_KEY=$(cat admin.key) obsidian-ai-agent smoke --url http://127.0.0.1:8000
    """
    from ..ops.smoke import run_smoke

    report = run_smoke(url, key, concurrency=concurrency, web_url=web_url)
    if as_json:
        emit(report.to_dict())
    else:
        out.print(f"smoke tests against {report.url}")
        for c in report.checks:
            word, style = _MARKS[c.status]
            out.print(styled((f"{word:<4}", style), f" {c.name}: {c.reason}"))
        counts = report.to_dict()["counts"]
        out.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if not report.ok:
        raise typer.Exit(1)
