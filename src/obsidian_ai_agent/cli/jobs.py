"""Commands for jobs, quarantine and watch; registered on the main `app`."""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import JsonOpt, app, emit, engine, err, fail, out, styled

jobs_app = typer.Typer(help="Indexing jobs: list, inspect, analyse, cancel, run.", no_args_is_help=True)
quarantine_app = typer.Typer(
    help="Sources that failed for good: list them, retry them.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(quarantine_app, name="quarantine")


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _progress(j: dict[str, Any]) -> str:
    p = j["progress"]
    text = f"{p['done']}/{p['total']}" if p["total"] is not None else "-"
    if j["eta_seconds"] is not None:
        text += f" eta {j['eta_seconds']:.0f}s"
    return text


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")
    ] = None,
    lane: Annotated[str | None, typer.Option(help="Only jobs of this lane.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent jobs with status, progress and ETA.

    Example: obsidian-ai-agent jobs list --status running
    """
    with engine() as e:
        rows = [j.to_dict() for j in e.jobs.recent(status=status, lane=lane, limit=limit)]
    if as_json:
        emit({"jobs": rows})
        return
    if not rows:
        out.print("no jobs")
    for j in rows:
        dur = f"{j['duration_seconds']:.1f}s" if j["duration_seconds"] is not None else "-"
        out.print(
            styled(
                f"{j['id']:>5}  {j['kind']:<12} {j['lane']:<12} {j['status']:<10} {_progress(j):<18} "
                f"{dur:>9}  {_when(j['created_at'])}",
                (f"  {j['error']}" if j["error"] else "", "red"),
            )
        )


@jobs_app.command("show")
def jobs_show(job_id: Annotated[int, typer.Argument(help="The job's id.")], as_json: JsonOpt = False) -> None:
    """One job: status, progress, ETA, result, per-stage breakdown and slowest items.

    Example: obsidian-ai-agent jobs show 12 --json
    """
    from ..jobs import job_detail

    with engine() as e:
        data = job_detail(e.jobs, job_id)
    if data is None:
        fail(f"no job {job_id}")
    if as_json:
        emit(data)
        return
    out.print(
        styled((f"job {data['id']}", "bold"), f" {data['kind']} in lane {data['lane']}: {data['status']}")
    )
    out.print(
        f"progress {_progress(data)}, attempts {data['attempts']}, duration {data['duration_seconds']} s"
    )
    if data["error"]:
        out.print(f"error: {data['error']}")
    for s in data["stages"]:
        share = f"{100 * s['share']:.0f}%" if s["share"] is not None else "-"
        out.print(
            f"  {s['stage']:<6} {s['seconds']:>9.3f} s  {share:>4}  {s['items']} items  {s['items_per_s']}/s"
        )
    if data["slowest_items"]:
        out.print("slowest items:")
    for i in data["slowest_items"]:
        out.print(f"  {i['seconds']:>7.3f} s  {i['path']}  ({i['chunks']} chunks, embed {i['embed']} s)")


@jobs_app.command("stats")
def jobs_stats(
    hours: Annotated[float | None, typer.Option(help="Only jobs finished in the last N hours.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Success rate, p50/p95 duration and items/s per lane and stage, and the slowest sources.

    Example: obsidian-ai-agent jobs stats --json
    """
    from ..jobs import job_stats

    since = time.time() - hours * 3600 if hours else None
    with engine() as e:
        data = job_stats(e.jobs, since=since)
    if as_json:
        emit(data)
        return
    out.print("queue: " + ", ".join(f"{k} {v}" for k, v in data["queue"].items()))
    for lane, s in data["lanes"].items():
        out.print(
            styled(
                (lane, "bold"),
                f": {s.get('jobs', 0)} jobs, success rate {s.get('success_rate')}, "
                f"duration p50 {s.get('duration_p50')} s p95 {s.get('duration_p95')} s, "
                f"items/s p50 {s.get('items_per_s_p50')}",
            )
        )
        for stage, t in s["stages"].items():
            out.print(
                f"  {stage:<6} p50 {t['seconds_p50']} s p95 {t['seconds_p95']} s, "
                f"items/s p50 {t['items_per_s_p50']} p95 {t['items_per_s_p95']}"
            )
    if data["slowest_sources"]:
        out.print("slowest sources:")
    for i in data["slowest_sources"]:
        out.print(f"  {i['seconds']:>7.3f} s  {i['path']}  (job {i['job_id']}, {i['chunks']} chunks)")


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[int, typer.Argument(help="The job's id.")], as_json: JsonOpt = False
) -> None:
    """Cancel a job: a queued one at once, a running one at its next check (it keeps what it wrote).

    Example: obsidian-ai-agent jobs cancel 12
    """
    from ..jobs import cancel

    with engine() as e:
        status = cancel(e, job_id)
    if status is None:
        fail(f"no job {job_id}")
    data = {"id": job_id, "status": status, "cancel_requested": status in ("running", "cancelled")}
    if as_json:
        emit(data)
        return
    if status == "running":
        out.print(f"job {job_id} is running; asked it to stop")
    elif status == "cancelled":
        out.print(f"job {job_id} cancelled")
    else:
        out.print(f"job {job_id} has already ended ({status})")


@jobs_app.command("work")
def jobs_work(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop when no job is left to claim.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Worker threads (default: the lanes' concurrency).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run queued jobs here (as the service does); stop with Ctrl-C.

    Example: obsidian-ai-agent jobs work --until-idle
    """
    from ..jobs import JobRunner

    with engine() as e:
        runner = JobRunner(e, workers=workers)
        if until_idle:
            ran = [j.to_dict() for j in runner.run_until_idle()]
        else:
            import threading

            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            runner.start()
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            runner.stop()
            ran = []
    if as_json:
        emit({"ran": ran})
    else:
        for j in ran:
            out.print(
                f"job {j['id']} {j['kind']}: {j['status']}" + (f" ({j['error']})" if j["error"] else "")
            )


@quarantine_app.command("list")
def quarantine_list(as_json: JsonOpt = False) -> None:
    """Sources that failed for good, with the stage and the reason.

    Example: obsidian-ai-agent quarantine list
    """
    with engine() as e:
        rows = e.jobs.quarantined()
    if as_json:
        emit({"quarantined": rows})
        return
    if not rows:
        out.print("nothing in quarantine")
    for q in rows:
        out.print(f"{q['path']}  [{q['stage']}, {q['attempts']}x, job {q['job_id']}]  {q['error']}")


@quarantine_app.command("retry")
def quarantine_retry(
    path: Annotated[str | None, typer.Argument(help="One source's path (default: all of them).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Index quarantined sources again (as one job); those that succeed leave the quarantine.

    Example: obsidian-ai-agent quarantine retry "Projects/Plan.md"
    """
    from ..jobs import JobRunner, retry_quarantined

    with engine() as e:
        if path is not None and not e.jobs.quarantined([path]):
            fail(f"{path} is not in quarantine")
        job_id = retry_quarantined(e, [path] if path else None)
        if job_id is None:
            data: dict[str, Any] = {"job_id": None, "retried": 0, "still_quarantined": []}
        else:
            job = JobRunner(e).run_job(job_id)
            still = e.jobs.quarantined(job.payload["paths"])
            data = {
                "job_id": job_id,
                "status": job.status,
                "retried": len(job.payload["paths"]),
                "still_quarantined": still,
                "error": job.error,
            }
    if as_json:
        emit(data)
        return
    if data["job_id"] is None:
        out.print("nothing in quarantine")
        return
    out.print(
        f"job {data['job_id']} {data['status']}: retried {data['retried']}, "
        f"{len(data['still_quarantined'])} still quarantined"
    )
    for q in data["still_quarantined"]:
        out.print(f"  {q['path']}: {q['error']}")


@app.command("watch")
def watch_cmd(
    vault: Annotated[Path | None, typer.Argument(help="The vault folder (default: setting `vault`).")] = None,
    scan: Annotated[
        bool, typer.Option("--scan/--no-scan", help="Index what changed while not watching.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Follow the vault's changes and index each edited, added or deleted note within seconds.

    Example: obsidian-ai-agent watch ~/Notes
    """
    import json
    import sys

    from ..jobs.watch import Watcher

    with engine() as e:
        watcher = Watcher(e, vault)
        signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
        err.print(f"watching {watcher.root} (debounce {e.settings.watch.debounce_ms} ms); Ctrl-C to stop")

        def report(ids: list[int]) -> None:
            if not ids:
                return
            if as_json:
                sys.stdout.write(json.dumps({"submitted": ids}) + "\n")
                sys.stdout.flush()
            else:
                out.print(f"submitted job(s) {', '.join(map(str, ids))}")

        watcher.run(scan_first=scan, on_batch=report)
