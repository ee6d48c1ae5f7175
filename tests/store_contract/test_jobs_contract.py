"""The durable job queue behaves the same on SQLite and PostgreSQL: submitting, deduplicating, claiming
(exactly once, across threads and processes, within each lane's concurrency), leases and their takeover,
conditional writes by the lease holder, cancel, timeout, retries, stage timings, item spans, quarantine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.store import IndexStore
from obsidian_ai_agent.store.jobs import ItemSpan, JobStore, LaneLimit, StageTiming

ROOT = Path(__file__).resolve().parents[2]
BULK = [LaneLimit("bulk", 0, 1000)]
LANES = [LaneLimit("interactive", 100, 2), LaneLimit("web", 50, 1), LaneLimit("bulk", 10, 1)]


@pytest.fixture
def jobs(store: IndexStore) -> JobStore:
    return JobStore(store)


def progress(jobs: JobStore, job_id: int, owner: str, **kw: Any) -> tuple[bool, bool]:
    fields: dict[str, Any] = {
        "done": 1,
        "total": 2,
        "bytes_done": 10,
        "bytes_total": 20,
        "stage": "embed",
        "eta_at": None,
    }
    fields.update(kw)
    return jobs.save_progress(job_id, owner, **fields)


# -- submitting, claiming, finishing --------------------------------------------------------------


def test_a_submitted_job_is_claimed_run_and_finished_with_its_result(jobs: JobStore) -> None:
    job_id, created = jobs.submit("reindex", "bulk", {"vault": "/v", "full": False})
    assert created and isinstance(job_id, int) and job_id > 0
    queued = jobs.get(job_id)
    assert queued is not None and queued.status == "queued" and queued.attempts == 0
    assert queued.payload == {"vault": "/v", "full": False} and queued.lease_owner is None
    assert jobs.counts() == {"queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}

    before = time.time()
    job = jobs.claim("runner-a", BULK, 30.0)
    assert job is not None and job.id == job_id and job.status == "running" and job.attempts == 1
    assert job.lease_owner == "runner-a" and job.lease_expires is not None
    assert job.lease_expires >= before + 30.0 and job.started_at is not None and job.started_at >= before
    assert jobs.claim("runner-b", BULK, 30.0) is None  # nothing else to claim
    assert [j.id for j in jobs.running()] == [job_id]

    assert progress(jobs, job_id, "runner-a", checkpoint={"done": 1}) == (True, False)
    assert jobs.finish(job_id, "runner-a", "succeeded", result={"indexed": 2})
    done = jobs.get(job_id)
    assert done is not None and done.status == "succeeded" and done.result == {"indexed": 2}
    assert done.checkpoint == {"done": 1} and (done.done, done.total) == (1, 2)
    assert (done.bytes_done, done.bytes_total, done.stage) == (10, 20, "embed")
    assert done.lease_owner is None and done.lease_expires is None and done.finished_at is not None
    assert done.timed_out is False and done.cancel_requested is False and done.error is None
    assert jobs.counts()["succeeded"] == 1 and jobs.running() == []
    assert [j.id for j in jobs.finished_jobs()] == [job_id]
    assert jobs.finished_jobs(since=time.time() + 60) == []
    assert not jobs.finish(job_id, "runner-a", "failed")  # finished is final
    with pytest.raises(ValueError, match="not a final status"):
        jobs.finish(job_id, "runner-a", "running")


def test_recent_jobs_are_newest_first_and_filtered_by_status_lane_and_kind(jobs: JobStore) -> None:
    a, _ = jobs.submit("reindex", "bulk", {})
    b, _ = jobs.submit("upsert_note", "interactive", {"paths": ["x.md"]})
    c, _ = jobs.submit("index_web", "web", {})
    assert a < b < c
    assert [j.id for j in jobs.recent()] == [c, b, a]
    assert [j.id for j in jobs.recent(limit=2)] == [c, b]
    assert [j.id for j in jobs.recent(lane="interactive")] == [b]
    assert [j.id for j in jobs.recent(kind="index_web", status="queued")] == [c]
    assert jobs.recent(status="running") == []


def test_an_unfinished_job_with_the_same_dedupe_key_is_returned_instead_of_a_new_one(jobs: JobStore) -> None:
    first, created = jobs.submit("reindex", "bulk", {"vault": "/v"}, dedupe_key="reindex:/v")
    assert created
    assert jobs.submit("reindex", "bulk", {"vault": "/v"}, dedupe_key="reindex:/v") == (first, False)
    claimed = jobs.claim("runner", BULK, 30.0)
    assert claimed is not None and claimed.id == first
    assert jobs.submit("reindex", "bulk", {"vault": "/v"}, dedupe_key="reindex:/v") == (first, False)
    other, created = jobs.submit("reindex", "bulk", {"vault": "/w"}, dedupe_key="reindex:/w")
    assert created and other != first
    assert jobs.finish(first, "runner", "succeeded")
    again, created = jobs.submit("reindex", "bulk", {"vault": "/v"}, dedupe_key="reindex:/v")
    assert created and again not in (first, other)
    no_key = {jobs.submit("reindex", "bulk", {})[0] for _ in range(2)}
    assert len(no_key) == 2  # without a key, every submit queues a job


def test_a_claim_takes_the_highest_priority_lane_first_and_honours_each_lanes_concurrency(
    jobs: JobStore,
) -> None:
    bulk = [jobs.submit("reindex", "bulk", {})[0] for _ in range(2)]
    web = [jobs.submit("index_web", "web", {})[0] for _ in range(2)]
    inter = [jobs.submit("upsert_note", "interactive", {})[0] for _ in range(3)]
    claimed = []
    while (job := jobs.claim("runner", LANES, 30.0)) is not None:
        claimed.append(job.id)
    # interactive (2 at once), then web (1), then bulk (1): oldest first within a lane
    assert claimed == [inter[0], inter[1], web[0], bulk[0]]
    assert jobs.finish(inter[0], "runner", "succeeded")
    job = jobs.claim("runner", LANES, 30.0)
    assert job is not None and job.id == inter[2]
    # `job_id` considers that job only
    assert jobs.claim("runner", LANES, 30.0, job_id=bulk[1]) is None  # its lane is full
    assert jobs.finish(bulk[0], "runner", "succeeded")
    job = jobs.claim("runner", LANES, 30.0, job_id=bulk[1])
    assert job is not None and job.id == bulk[1]
    assert jobs.claim("runner", LANES, 30.0, job_id=10_000) is None


# -- exactly once -----------------------------------------------------------------------------------


def test_many_threads_claiming_at_once_take_every_job_exactly_once(jobs: JobStore) -> None:
    ids = [jobs.submit("probe", "bulk", {"n": i})[0] for i in range(60)]
    claims: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer(owner: str) -> None:
        try:
            start.wait()
            while True:
                job = jobs.claim(owner, BULK, 60.0)
                if job is None:
                    if jobs.counts()["queued"] == 0:
                        return
                    continue
                assert job.lease_owner == owner and job.attempts == 1
                with lock:
                    claims.append((owner, job.id))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=claimer, args=(f"runner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert Counter(job_id for _, job_id in claims) == Counter(ids)  # each job once, none left out
    for owner, job_id in claims:
        job = jobs.get(job_id)
        assert job is not None and job.status == "running" and job.lease_owner == owner


def test_threads_claiming_at_once_never_run_more_jobs_of_a_lane_than_its_concurrency(
    jobs: JobStore,
) -> None:
    for _ in range(12):
        jobs.submit("probe", "bulk", {})
    lanes = [LaneLimit("bulk", 10, 3)]
    got: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer(owner: str) -> None:
        start.wait()
        for _ in range(3):
            job = jobs.claim(owner, lanes, 60.0)
            if job is not None:
                with lock:
                    got.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"runner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == len(set(got)) == 3
    assert jobs.counts()["running"] == 3 and jobs.counts()["queued"] == 9


def worker(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jobs_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_runner_processes_on_one_store_run_every_job_exactly_once(
    jobs: JobStore, backend: str, tmp_path: Path
) -> None:
    """Each process opens its own store: the same SQLite file (the data dir's index.sqlite) or the same
    PostgreSQL database (`OAA_DATABASE_URL`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAA_")}
    env.update(
        {
            "OAA_LANES": json.dumps([{"name": "bulk", "concurrency": 32}]),
            "OAA_JOBS__LEASE": "5",
            "OAA_JOBS__POLL": "0.05",
            "OAA_DATA_DIR": str(tmp_path),
            "HF_HUB_OFFLINE": "1",
        }
    )
    if backend == "postgres":
        env["OAA_DATABASE_URL"] = getattr(jobs.store, "url")  # noqa: B009
    else:
        assert jobs.store.path == tmp_path / "index.sqlite"
    log = tmp_path / "probe.log"
    procs = [worker("work", str(tmp_path), str(log), "40", env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            assert line == "ready", p.stderr.read() if p.stderr else line
        ids = [jobs.submit("probe", "bulk", {"sleep": 0.05})[0] for _ in range(40)]
        for p in procs:
            _, errors = p.communicate(timeout=180)
            assert p.returncode == 0, errors
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = Counter(int(x[1]) for x in lines if x[0] == "start")
    ends = Counter(int(x[1]) for x in lines if x[0] == "end")
    assert starts == ends == Counter(ids)  # each job started once and finished once
    assert len({x[2] for x in lines}) == 2, "both processes should have taken jobs"
    rows = [jobs.get(i) for i in ids]
    assert all(r is not None and r.status == "succeeded" and r.attempts == 1 for r in rows)


# -- leases ---------------------------------------------------------------------------------------


def test_an_expired_lease_is_taken_over_and_the_old_holder_can_no_longer_write(jobs: JobStore) -> None:
    job_id, _ = jobs.submit("reindex", "bulk", {})
    now = time.time()
    first = jobs.claim("old", BULK, 10.0, now=now)
    assert first is not None and first.attempts == 1
    assert jobs.claim("new", BULK, 10.0, now=now + 5) is None  # the lease is live
    assert jobs.heartbeat(job_id, "old", 10.0) == (True, False)

    later = time.time() + 11
    second = jobs.claim("new", BULK, 10.0, now=later)
    assert second is not None and second.id == job_id and second.lease_owner == "new"
    assert second.attempts == 2 and second.started_at == first.started_at
    # every write of the old holder is refused; the new holder's go through
    assert jobs.heartbeat(job_id, "old", 10.0) == (False, False)
    assert progress(jobs, job_id, "old", stages=[StageTiming("embed", 1.0, 1, 1)]) == (False, False)
    assert jobs.requeue(job_id, "old", delay=0, error="x") is False
    assert jobs.expire_lease(job_id, "old") is False
    assert jobs.finish(job_id, "old", "succeeded") is False
    assert jobs.stages(job_id) == []
    assert jobs.heartbeat(job_id, "new", 10.0) == (True, False)
    assert jobs.finish(job_id, "new", "succeeded")
    job = jobs.get(job_id)
    assert job is not None and job.status == "succeeded"


def test_an_expired_lease_of_a_dead_holder_lets_another_take_the_job_at_once(jobs: JobStore) -> None:
    job_id, _ = jobs.submit("reindex", "bulk", {})
    assert jobs.claim("dead", BULK, 600.0) is not None
    assert jobs.claim("alive", BULK, 600.0) is None
    assert jobs.expire_lease(job_id, "dead")
    job = jobs.claim("alive", BULK, 600.0)
    assert job is not None and job.id == job_id and job.lease_owner == "alive" and job.attempts == 2


def test_a_requeued_job_waits_out_its_delay_keeps_its_checkpoint_and_is_claimed_again(
    jobs: JobStore,
) -> None:
    job_id, _ = jobs.submit("reindex", "bulk", {})
    assert jobs.claim("runner", BULK, 30.0) is not None
    assert progress(jobs, job_id, "runner", checkpoint={"done": 5}) == (True, False)
    assert jobs.requeue(job_id, "runner", delay=60.0, error="server busy; retrying")
    job = jobs.get(job_id)
    assert job is not None and job.status == "queued" and job.lease_owner is None
    assert job.error == "server busy; retrying" and job.checkpoint == {"done": 5}
    assert jobs.claim("runner", BULK, 30.0) is None  # not before its delay
    again = jobs.claim("runner", BULK, 30.0, now=time.time() + 61)
    assert again is not None and again.id == job_id and again.attempts == 2
    assert again.checkpoint == {"done": 5}


def test_a_job_over_its_time_is_finished_as_failed_and_timed_out(jobs: JobStore) -> None:
    job_id, _ = jobs.submit("reindex", "bulk", {})
    assert jobs.claim("runner", BULK, 30.0) is not None
    assert jobs.finish(
        job_id, "runner", "failed", result={"done": 3}, error="timed out after 5 s", timed_out=True
    )
    job = jobs.get(job_id)
    assert job is not None and job.status == "failed" and job.timed_out is True
    assert job.error == "timed out after 5 s" and job.result == {"done": 3}
    assert job.to_dict()["timed_out"] is True


# -- cancel ---------------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_at_once_and_a_running_one_is_asked_to_stop(jobs: JobStore) -> None:
    queued, _ = jobs.submit("reindex", "bulk", {})
    running, _ = jobs.submit("reindex", "bulk", {})
    assert jobs.claim("runner", BULK, 30.0, job_id=running) is not None
    assert jobs.request_cancel(queued) == "cancelled"
    job = jobs.get(queued)
    assert job is not None and job.status == "cancelled" and job.cancel_requested
    assert job.error == "cancelled before it started" and job.finished_at is not None
    assert jobs.claim("runner", BULK, 30.0) is None  # a cancelled job is never claimed

    assert jobs.request_cancel(running) == "running"
    assert jobs.heartbeat(running, "runner", 30.0) == (True, True)
    assert progress(jobs, running, "runner") == (True, True)
    assert jobs.finish(running, "runner", "cancelled", error="cancelled; 1 of 2 items done")
    assert jobs.request_cancel(running) == "cancelled"  # finished: unchanged
    assert jobs.request_cancel(10_000) is None
    assert jobs.counts()["cancelled"] == 2


# -- timings and spans -----------------------------------------------------------------------------


def test_stage_timings_come_back_in_the_order_they_were_last_written_with_their_totals(
    jobs: JobStore,
) -> None:
    job_id, _ = jobs.submit("reindex", "bulk", {})
    other, _ = jobs.submit("reindex", "bulk", {})
    assert jobs.claim("runner", BULK, 30.0, job_id=job_id) is not None
    assert jobs.claim("runner", BULK, 30.0, job_id=other) is not None
    assert jobs.stages(job_id) == []
    first = [StageTiming("parse", 0.5, 2, 200), StageTiming("embed", 1.5, 2, 200)]
    assert progress(jobs, job_id, "runner", stages=first) == (True, False)
    assert jobs.stages(job_id) == first
    progress(jobs, other, "runner", stages=[StageTiming("write", 9.0, 9, 9)])
    # written again (as the profiler does, every stage in its order): a new stage goes where it is given
    second = [
        StageTiming("scan", 0.25, 3, 0),
        StageTiming("parse", 1.0, 4, 400),
        StageTiming("embed", 2.75, 4, 400),
        StageTiming("write", 0.125, 4, 400),
    ]
    assert progress(jobs, job_id, "runner", stages=second) == (True, False)
    assert jobs.stages(job_id) == second
    # a stage not written again keeps its place, before those that were
    progress(jobs, job_id, "runner", stages=[StageTiming("parse", 1.5, 5, 500)])
    assert [s.stage for s in jobs.stages(job_id)] == ["scan", "embed", "write", "parse"]
    assert jobs.stages(job_id)[-1] == StageTiming("parse", 1.5, 5, 500)
    assert jobs.stages(other) == [StageTiming("write", 9.0, 9, 9)]

    assert jobs.finish(job_id, "runner", "succeeded")
    history = jobs.stage_history(kind="reindex")
    assert [(h[0], h[1], h[2], h[3].stage) for h in history] == [
        (job_id, "bulk", "reindex", s) for s in ("scan", "embed", "write", "parse")
    ]  # succeeded jobs only
    assert jobs.stage_history(kind="upsert_note") == []
    assert jobs.stage_history(since=time.time() + 60) == []


def test_item_spans_are_kept_with_their_job_and_the_slowest_come_first(jobs: JobStore) -> None:
    a, _ = jobs.submit("reindex", "bulk", {})
    b, _ = jobs.submit("reindex", "bulk", {})
    for job_id in (a, b):
        assert jobs.claim("runner", BULK, 30.0, job_id=job_id) is not None
    spans_a = [ItemSpan("A.md", 0.5, 0.1, 0.3, 0.1, 2, 100), ItemSpan("B.md", 2.0, 0.5, 1.0, 0.5, 8, 900)]
    spans_b = [ItemSpan("C.md", 1.25, 0.25, 0.75, 0.25, 4, 400)]
    progress(jobs, a, "runner", items=spans_a)
    progress(jobs, b, "runner", items=spans_b)
    progress(jobs, a, "old-holder", items=[ItemSpan("lost.md", 99.0, 0, 0, 0, 0, 0)])  # refused
    assert jobs.items() == [(a, spans_a[1]), (b, spans_b[0]), (a, spans_a[0])]
    assert jobs.items(a) == [(a, spans_a[1]), (a, spans_a[0])]
    assert jobs.items(limit=1) == [(a, spans_a[1])]


# -- quarantine -----------------------------------------------------------------------------------


def test_quarantined_sources_count_their_attempts_and_leave_when_released(jobs: JobStore) -> None:
    job_id, _ = jobs.submit("reindex", "bulk", {})
    assert jobs.quarantined() == []
    jobs.quarantine("Notes/Tea.md", "embed", "server said 500", "h1", job_id)
    jobs.quarantine("broken.pdf", "parse", "not a PDF", None, None)
    first = jobs.quarantined(["Notes/Tea.md"])[0]
    time.sleep(0.01)
    jobs.quarantine("Notes/Tea.md", "parse", "still broken", "h2", job_id)
    held = jobs.quarantined()
    assert [q["path"] for q in held] == ["Notes/Tea.md", "broken.pdf"]
    tea, pdf = held
    assert tea["stage"] == "parse" and tea["error"] == "still broken" and tea["content_hash"] == "h2"
    assert tea["attempts"] == 2 and tea["job_id"] == job_id
    assert tea["first_at"] == first["first_at"] and tea["last_at"] > first["last_at"]
    assert pdf["attempts"] == 1 and pdf["job_id"] is None and pdf["content_hash"] is None
    assert jobs.quarantined(["broken.pdf", "absent.md"]) == [pdf]
    assert jobs.quarantined([]) == []
    assert jobs.release([]) == 0
    assert jobs.release(["Notes/Tea.md", "absent.md"]) == 1
    assert jobs.quarantined() == [pdf]
    assert jobs.release(["broken.pdf"]) == 1 and jobs.quarantined() == []


# -- PostgreSQL: claims beside other writes ------------------------------------------------------------


def test_on_postgresql_a_claim_waits_neither_for_a_serial_write_nor_for_a_locked_job_row(
    jobs: JobStore, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite has one writer at a time: a claim waits for the write in progress")
    import psycopg

    first, _ = jobs.submit("reindex", "bulk", {})
    second, _ = jobs.submit("reindex", "bulk", {})
    holding = threading.Event()
    release = threading.Event()

    def serial_writer() -> None:
        with jobs.store._write():  # holds the store's write lock until released
            holding.set()
            release.wait(30)

    t = threading.Thread(target=serial_writer)
    t.start()
    try:
        assert holding.wait(10)
        with psycopg.connect(getattr(jobs.store, "url")) as other:  # noqa: B009
            other.execute("SELECT id FROM jobs WHERE id=%s FOR UPDATE", (first,))  # a row held elsewhere
            t0 = time.monotonic()
            job = jobs.claim("runner", BULK, 30.0)
            assert time.monotonic() - t0 < 2.0
            assert job is not None and job.id == second  # the locked row is skipped, not waited for
            assert jobs.claim("runner", BULK, 30.0, job_id=first) is None
        job = jobs.claim("runner", BULK, 30.0, job_id=first)  # its row is free again
        assert job is not None and job.id == first
    finally:
        release.set()
        t.join(30)
