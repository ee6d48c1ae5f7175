"""Commands for API keys: create (prints the key once), list, rotate, revoke."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from ..security import keys
from .common import JsonOpt, app, emit, engine, err, fail, out, settings

keys_app = typer.Typer(
    help="API keys for the HTTP service: create, list, rotate, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
    scope: Annotated[list[str], typer.Option("--scope", help="read, write or admin; repeat for several.")],
    as_json: JsonOpt = False,
) -> None:
    """Make a key and print it. It is shown only now: store it.

    Example: obsidian-ai-agent keys create --name plugin --scope read --scope write
    """
    with engine() as e:
        try:
            new = keys.create_key(e.store, name, scope)
        except ValueError as ex:
            fail(str(ex), 2)
        rows = keys.list_keys(e.store)
    if as_json:
        emit(new.to_dict())
        return
    err.print(
        f"created key {new.key.id} ({', '.join(new.key.scopes)}) for {new.key.name}; it is shown only once:"
    )
    out.print(new.secret)
    if not any("admin" in r.scopes and r.active() for r in rows):
        err.print(
            "note: no admin key exists yet; the service writes one to <data dir>/admin.key when it starts, "
            "or make one now with `obsidian-ai-agent keys create --name admin --scope admin`"
        )


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """Every key with its scopes and state; never the key itself."""
    with engine() as e:
        rows = [r.to_dict() for r in keys.list_keys(e.store)]
    if as_json:
        emit({"keys": rows})
        return
    if not rows:
        out.print("no keys (the service writes an admin key to <data dir>/admin.key when it starts)")
    for r in rows:
        state = "active" if r["active"] else ("revoked" if r["revoked_at"] else "expired")
        if r["active"] and r["expires_at"]:
            state = f"rotated, works until {_when(r['expires_at'])}"
        out.print(
            f"{r['id']}  {r['name']:<24} {','.join(r['scopes']):<18} {state:<30} "
            f"created {_when(r['created_at'])}  last used {_when(r['last_used_at'])}"
        )


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds the old key keeps working (setting server.auth.rotation_grace)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a key: prints the new key; the old one works until the grace period ends."""
    s = settings()
    with engine(s) as e:
        try:
            new = keys.rotate_key(e.store, key_id, s.server.auth.rotation_grace if grace is None else grace)
        except keys.UnknownKey as ex:
            fail(str(ex))
    if as_json:
        emit(new.to_dict())
        return
    err.print(f"key {key_id} replaced by {new.key.id}; the old key works for the grace period. New key:")
    out.print(new.secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key at once; the next request with it is refused by every worker."""
    with engine() as e:
        try:
            row = keys.revoke_key(e.store, key_id)
        except keys.UnknownKey as ex:
            fail(str(ex))
    if as_json:
        emit(row.to_dict())
        return
    out.print(f"revoked {row.id} ({row.name})")
