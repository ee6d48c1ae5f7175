"""The job commands as a user runs them: `index` through a job, `jobs ...` with --json, and `watch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from obsidian_ai_agent.engine import Engine

CLI = [str(Path(sys.executable).parent / "obsidian-ai-agent")]


def run(*args: str, data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OAA_DATA_DIR": str(data), **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full, timeout=300)


def ok(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_index_runs_as_a_job_and_the_jobs_commands_show_it(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    data = engine.settings.data_dir
    engine.close()
    (vault / "Getting Started" / "Tags.md").unlink()
    proc = run("index", str(vault), "--json", data=data)
    report = ok(proc)
    assert {"indexed", "unchanged", "removed", "chunks_embedded", "failed", "job_id"} <= set(report)
    assert report["removed"] == 1 and "indexing" in proc.stderr
    job_id = report["job_id"]

    listed = ok(run("jobs", "list", "--json", data=data))["jobs"]
    assert listed[0]["id"] == job_id and listed[0]["status"] == "succeeded" and listed[0]["lane"] == "bulk"
    shown = ok(run("jobs", "show", str(job_id), "--json", data=data))
    assert shown["kind"] == "reindex" and shown["stages"][0]["stage"] == "scan"
    assert shown["progress"]["done"] == shown["progress"]["total"] == 1
    stats = ok(run("jobs", "stats", "--json", data=data))
    assert stats["lanes"]["bulk"]["success_rate"] == 1.0 and stats["queue"]["succeeded"] == 1
    assert ok(run("jobs", "cancel", str(job_id), "--json", data=data))["status"] == "succeeded"
    human = run("jobs", "list", data=data)
    assert human.returncode == 0 and "reindex" in human.stdout
    missing = run("jobs", "show", "999", data=data)
    assert missing.returncode == 1 and "no job 999" in missing.stderr


def test_a_bad_lane_stops_the_command_with_the_lane_and_field_named(tmp_path: Path) -> None:
    proc = run("jobs", "list", data=tmp_path, env={"OAA_LANES": '[{"name": "bulk", "timeout": -1}]'})
    assert proc.returncode == 2 and "lane 'bulk'" in proc.stderr and "timeout" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_watch_makes_an_edited_note_searchable_and_a_deleted_one_disappear(
    example: tuple[Engine, Path], embedder: Any
) -> None:
    engine, vault = example
    data = engine.settings.data_dir
    env = {**os.environ, "OAA_DATA_DIR": str(data), "OAA_WATCH__DEBOUNCE_MS": "200"}
    proc = subprocess.Popen(
        [*CLI, "watch", str(vault), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "watching" in proc.stderr.readline()
        deadline = time.monotonic() + 120

        def eventually(check: Any) -> None:
            while not check():
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)

        note = vault / "Getting Started" / "Priority.md"
        note.write_text(note.read_text() + "\n\n## Zanzibar\n\nThe quokka protocol for priorities.\n")
        eventually(
            lambda: any(
                r.path == note.relative_to(vault).as_posix()
                for r in engine.search("quokka", k=3, mode="keyword")
            )
        )
        (vault / "Getting Started" / "Dates.md").unlink()
        eventually(lambda: engine.store.source_by_path("Getting Started/Dates.md") is None)
        # The edit may land in the first scan's reindex; the deletion comes after the watcher is up.
        kinds = {j.kind for j in engine.jobs.recent(limit=20)}
        assert "delete_note" in kinds
        assert all(j.lane == "interactive" for j in engine.jobs.recent(limit=20) if j.kind != "reindex")
    finally:
        proc.send_signal(signal.SIGINT)
        # Stopping lets a running job finish its item (its lease is released, not lost): on a loaded
        # machine the first scan's reindex may still be running.
        proc.communicate(timeout=180)
