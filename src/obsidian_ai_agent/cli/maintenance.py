"""Commands for maintenance mode: on (writes refused with a message, reads go on), off, status."""

from __future__ import annotations

import datetime as dt
import getpass
import time
from typing import Annotated

import typer

from ..ops import maintenance as ops
from .common import JsonOpt, app, emit, engine, fail, out

maintenance_app = typer.Typer(
    help="Maintenance mode: writes answer 503 with your message, reads go on, alerts are muted and the "
    "status page says Maintenance.",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")

UNTIL_HELP = (
    "When it should end (it then ends by itself): an ISO 8601 time, e.g. 2025-06-01T14:30 (local time "
    "unless it names a zone), or a duration from now: 90s, 30m, 2h, 1h30m. Default: until `off`."
)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (a container without a passwd entry)
        return "cli:unknown"


def _when(ts: float) -> str:
    """Local time, with the UTC time beside it when the two differ."""
    local = dt.datetime.fromtimestamp(ts).astimezone()
    text = f"{local:%Y-%m-%d %H:%M:%S %Z}"
    if local.utcoffset():
        text += f" ({dt.datetime.fromtimestamp(ts, dt.UTC):%H:%M:%S} UTC)"
    return text


def _left(ts: float) -> str:
    s = max(0, round(ts - time.time()))
    h, rest = divmod(s, 3600)
    return f"{h} h {rest // 60} min" if h else f"{rest // 60} min {rest % 60} s"


def _describe(m: ops.Maintenance | None) -> str:
    if m is None:
        return "maintenance is off: writes are accepted"
    end = f"until {_when(m.until)}, in {_left(m.until)}" if m.until else "until `maintenance off`"
    return (
        f"maintenance is on since {_when(m.since)} (by {m.by}), {end}: writes answer 503 with the "
        f"message, reads go on\nmessage: {m.message}"
    )


@maintenance_app.command("on")
def maintenance_on(
    message: Annotated[
        str, typer.Option("--message", "-m", help="What users read while writes are refused (verbatim).")
    ],
    until: Annotated[str | None, typer.Option("--until", help=UNTIL_HELP)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn maintenance on (or change its message or end) for every worker of this data directory.

    Example: obsidian-ai-agent maintenance on --message "Upgrading, back soon" --until 30m
    """
    try:
        end = ops.parse_until(until)
    except ValueError as bad:
        fail(f"--until: {bad}", 2)
    with engine() as e:
        try:
            m = ops.turn_on(e, message, end, _who())
        except ValueError as ex:
            fail(str(ex), 2)
    if as_json:
        emit(ops.state_dict(m))
        return
    out.print(_describe(m))
    out.print("every worker refuses writes within a second; end it with `obsidian-ai-agent maintenance off`")


@maintenance_app.command("off")
def maintenance_off(as_json: JsonOpt = False) -> None:
    """End maintenance: writes are accepted again by every worker within a second."""
    with engine() as e:
        was = ops.turn_off(e)
    if as_json:
        emit({**ops.state_dict(None), "was_on": was})
        return
    out.print("maintenance is off: writes are accepted again" if was else "maintenance was already off")


@maintenance_app.command("status")
def maintenance_status(as_json: JsonOpt = False) -> None:
    """Whether maintenance is on, with its message and expected end."""
    with engine() as e:
        m = ops.current(e)
    if as_json:
        emit(ops.state_dict(m))
        return
    out.print(_describe(m))
