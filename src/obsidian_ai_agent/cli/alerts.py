"""Commands for alerts: list (the incident log, also as JSON or CSV), show, ack, test."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
import time
from typing import Annotated, Any

import typer

from ..ops import alerts
from .common import JsonOpt, app, emit, engine, err, fail, out, styled

alerts_app = typer.Typer(
    help="The monitor's alerts: list (the incident log), show, ack (acknowledge), test.", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")

COLOURS = {"critical": "red", "warning": "yellow", "info": "cyan"}


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _line(a: dict[str, Any]) -> None:
    state = "FIRING" if a["state"] == "firing" else "resolved"
    acked = f"  acknowledged by {a['acked_by']}" if a["acked_by"] else ""
    out.print(
        styled(
            f"#{a['id']:<5} ",
            (f"{a['severity']:<9}", COLOURS.get(a["severity"], "")),
            f"{state:<9} {a['rule']:<22} {_when(a['started_at'])}  ",
            a["summary"],
            acked,
        )
    )


@alerts_app.command("list")
def alerts_list(
    hours: Annotated[float, typer.Option(help="How far back the list reaches, in hours.")] = 24.0,
    all_: Annotated[
        bool, typer.Option("--all", help="Every alert ever recorded (the incident log).")
    ] = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print the incident log as CSV.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Open alerts, then the recent ones. With --json or --csv: the incident log for export.

    Example: obsidian-ai-agent alerts list --all --csv > incidents.csv
    """
    since = 0.0 if all_ else time.time() - hours * 3600
    with engine() as e:
        if csv or as_json:
            sys.stdout.write(alerts.export(e, since, "csv" if csv else "json") + ("" if csv else "\n"))
            return
        data = alerts.overview(e, hours=hours if not all_ else 24 * 3650)
    if not data["open"]:
        out.print("no alert is firing")
    for a in data["open"]:
        _line(a)
    past = [a for a in data["recent"] if a["state"] != "firing"]
    if past:
        out.print("")
        out.print("resolved:" if not all_ else "resolved (all):")
        for a in past:
            _line(a)


@alerts_app.command("show")
def alerts_show(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (from `alerts list`).")],
    as_json: JsonOpt = False,
) -> None:
    """One alert with its history (firing, acknowledged, resolved) and its deliveries to each channel."""
    with engine() as e:
        try:
            a = alerts.detail(e, alert_id)
        except alerts.AlertNotFound as ex:
            fail(str(ex))
    if as_json:
        emit(a)
        return
    _line(a)
    out.print(
        f"value {a['value']}, threshold {a['threshold']}"
        + (", rollback recommended" if a["rollback"] else "")
    )
    if a["acked_by"]:
        out.print(f"acknowledged by {a['acked_by']} at {_when(a['acked_at'])}: {a['ack_note'] or ''}")
    for ev in a["events"]:
        out.print(f"  {_when(ev['at'])}  {ev['event']:<13} {ev['detail']}")
    for d in a["deliveries"]:
        done = (
            f"delivered {_when(d['delivered_at'])}"
            if d["delivered_at"]
            else (f"given up {_when(d['gave_up_at'])}" if d["gave_up_at"] else "pending")
        )
        error = f"  last error: {d['error']}" if d["error"] else ""
        out.print(f"  -> {d['channel']:<12} {d['event']:<9} {done}, {d['attempts']} attempts{error}")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (from `alerts list`).")],
    note: Annotated[str, typer.Option("--note", "-n", help="What you are doing about it.")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who is on it (default: your user name).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an alert: it is no longer repeated; it still resolves by itself.

    Example: obsidian-ai-agent alerts ack 12 --note "disk cleanup running"
    """
    who = by or f"cli:{getpass.getuser()}"
    with engine() as e:
        try:
            a = alerts.acknowledge(e, alert_id, who, note)
        except alerts.AlertNotFound as ex:
            fail(str(ex))
    if as_json:
        emit(a)
        return
    out.print(f"alert #{a['id']} ({a['rule']}) acknowledged by {who}")


@alerts_app.command("test")
def alerts_test(as_json: JsonOpt = False) -> None:
    """Send a test alert through every configured channel and report each one's outcome (exit 1 when
    any channel failed)."""
    with engine() as e:
        results = alerts.test_alert(e)
    if as_json:
        emit({"channels": results})
    else:
        if not results:
            out.print("no alert channel is configured (setting monitor.channels)")
        for r in results:
            if r["ok"]:
                out.print(styled(("ok  ", "green"), f" {r['channel']} ({r['type']}) in {r['seconds']:.2f} s"))
            else:
                out.print(styled(("FAIL", "red"), f" {r['channel']} ({r['type']}): {r['error']}"))
    if any(not r["ok"] for r in results):
        err.print("some channels failed: check their settings (monitor.channels) and `alerts test` again")
        raise typer.Exit(1)
