"""Crash safety and exactly-once claiming, with real processes on one real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from obsidian_ai_agent import jobs
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine

from .conftest import EXAMPLE_VAULT, copy_tree

ROOT = Path(__file__).resolve().parents[1]
SUBSET = [
    "Getting Started/Statuses",
    "Introduction.md",
    "Getting Started/Priority.md",
    "Getting Started/Settings.md",
    "Getting Started/Installation.md",
    "Getting Started/Global Filter.md",
    "Getting Started/About Getting Started.md",
]


def small_vault(dst: Path) -> Path:
    """About a hundred chunks of real notes: long enough to kill in the middle, short enough to embed."""
    for rel in SUBSET:
        src = EXAMPLE_VAULT / rel
        if src.is_dir():
            copy_tree(src, dst / rel)
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes(src.read_bytes())
    return dst


def worker(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jobs_worker", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def scalar(db: Path, sql: str) -> Any:
    """Read with a connection of our own, as another process would; a missing table reads as None."""
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def wait_for(cond: Any, proc: subprocess.Popen[str], what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"the worker ended before {what}: {proc.stderr.read() if proc.stderr else ''}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def index_state(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        return {
            "integrity": con.execute("PRAGMA integrity_check").fetchone()[0],
            "sources": con.execute("SELECT COUNT(*) FROM sources").fetchone()[0],
            "chunks": con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0],
            "vectors": con.execute("SELECT COUNT(*) FROM chunks WHERE length(vector) = 384 * 4").fetchone()[
                0
            ],
            "fts_rows": con.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0],
            "distinct_paths": con.execute("SELECT COUNT(DISTINCT path) FROM sources").fetchone()[0],
            "chunk_keys": sorted(
                con.execute(
                    "SELECT s.path, c.ordinal, c.hash FROM chunks c JOIN sources s ON s.id = c.source_id"
                ).fetchall()
            ),
        }
    finally:
        con.close()


def test_a_reindex_killed_at_several_points_resumes_to_the_same_index_as_an_uninterrupted_run(
    tmp_path: Path, embedder: Any
) -> None:
    vault = small_vault(tmp_path / "vault")
    reference = tmp_path / "reference"
    with Engine(load_settings(data_dir=reference), embedder=embedder) as engine:
        engine.index(vault)
    expected = index_state(reference / "index.sqlite")
    assert expected["sources"] == 15 and expected["chunks"] > 60

    data = tmp_path / "data"
    db = data / "index.sqlite"
    sources = "SELECT COUNT(*) FROM sources"
    kill_points = [
        (
            "the job is claimed, nothing written yet",
            lambda: scalar(db, "SELECT COUNT(*) FROM jobs WHERE status='running'") == 1,
        ),
        ("a few sources are written", lambda: (scalar(db, sources) or 0) >= 3),
        ("more than half are written", lambda: (scalar(db, sources) or 0) >= 9),
    ]
    for what, cond in kill_points:
        proc = worker("reindex", str(data), str(vault), "8")
        wait_for(cond, proc, what)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert scalar(db, "PRAGMA integrity_check") == "ok"
    proc = worker("reindex", str(data), str(vault), "8")
    out, errors = proc.communicate(timeout=300)
    assert proc.returncode == 0, errors
    job = json.loads(out)

    got = index_state(db)
    assert got["integrity"] == "ok"
    assert got["chunk_keys"] == expected["chunk_keys"]  # no source lost, none duplicated, same chunks
    for key in ("sources", "chunks", "vectors", "fts_rows", "distinct_paths"):
        assert got[key] == expected[key], key
    # One job, resumed by each restart, never restarted from zero.
    assert scalar(db, "SELECT COUNT(*) FROM jobs") == 1
    assert job["status"] == "succeeded" and job["attempts"] == len(kill_points) + 1
    assert job["result"]["indexed"] + job["result"]["unchanged"] >= expected["sources"] - 1
    assert job["progress"]["done"] == job["progress"]["total"]


def _probe_settings(data: Path) -> dict[str, str]:
    return {
        # More lane slots than one runner's threads, so a runner that is quicker to reclaim cannot hold
        # them all and starve the other (exactly-once is the point here, not fairness).
        "OAA_LANES": json.dumps([{"name": "bulk", "concurrency": 32}]),
        "OAA_JOBS__LEASE": "2",
        "OAA_JOBS__POLL": "0.05",
        "OAA_DATA_DIR": str(data),
    }


def test_two_runner_processes_on_one_store_run_every_job_exactly_once(
    tmp_path: Path, monkeypatch: Any
) -> None:
    data = tmp_path / "data"
    env = _probe_settings(data)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "probe.log"
    with Engine(load_settings()):
        pass  # the store exists before either worker opens it
    # Both runners are polling before the first job exists, so neither can drain the queue alone
    # while the other is still importing.
    procs = [worker("work", str(data), str(log), "60", env=env) for _ in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    with Engine(load_settings()) as engine:
        ids = [jobs.submit(engine, "probe", {"sleep": 0.05}, lane="bulk") for _ in range(60)]
    for p in procs:
        _, errors = p.communicate(timeout=120)
        assert p.returncode == 0, errors
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = Counter(int(x[1]) for x in lines if x[0] == "start")
    ends = Counter(int(x[1]) for x in lines if x[0] == "end")
    assert starts == ends == Counter(ids)  # each job started once and finished once
    assert len({x[2] for x in lines}) == 2, "both processes should have taken jobs"
    with Engine(load_settings()) as engine:
        rows = [engine.jobs.get(i) for i in ids]
    assert all(r is not None and r.status == "succeeded" and r.attempts == 1 for r in rows)


def test_a_job_whose_runner_process_dies_is_taken_over_and_finished_by_another(
    tmp_path: Path, monkeypatch: Any
) -> None:
    data = tmp_path / "data"
    env = _probe_settings(data)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with Engine(load_settings()) as engine:
        job_id = jobs.submit(engine, "probe", {"sleep": 3}, lane="bulk")
    log = tmp_path / "probe.log"
    first = worker("work", str(data), str(log), env=env)
    wait_for(lambda: log.exists() and "start" in log.read_text(), first, "the first runner starts the job")
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = worker("work", str(data), str(log), env=env)
    _, errors = second.communicate(timeout=120)
    assert second.returncode == 0, errors
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [x[0] for x in lines] == ["start", "start", "end"]
    assert lines[0][2] == str(first.pid) and lines[2][2] == str(second.pid)
    with Engine(load_settings()) as engine:
        job = engine.jobs.get(job_id)
    assert job is not None and job.status == "succeeded" and job.attempts == 2
