"""Job rows: the durable queue's SQL. Jobs, their per-stage and per-item timings, and quarantined sources.

Claiming is exactly-once across processes and replicas, and takes a job only if it is queued, or running
under a lease that has expired. On SQLite a claim runs inside `BEGIN IMMEDIATE` (one writer at a time).
On PostgreSQL it runs beside other writes (`_write(serial=False)`): the job row is taken with
`FOR UPDATE SKIP LOCKED`, so two replicas never take the same job and never wait for each other's row,
and a lane is claimed in by one transaction at a time (`pg_try_advisory_xact_lock`; a lane busy with
another claim is passed over), so a lane's concurrency holds across replicas. Every later write of a
running job is conditional on the claimer still holding the lease, so a runner that lost its job (it
stalled past the lease and another took over) can never overwrite the new holder's rows.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .schema import run_script

if TYPE_CHECKING:
    from .base import IndexStore

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
LANE_LOCK = 0x6F616A  # PostgreSQL: first key of the advisory lock a claim holds on a lane ("oaj")
CLAIM_TRIES = 20  # PostgreSQL: claims again this often while a lane is busy with another's claim...
CLAIM_PAUSE = 0.005  # ...this many seconds apart, before saying there is nothing to claim


def m002_jobs(db: sqlite3.Connection) -> None:
    """Schema for jobs, job stages, per-item spans and quarantined sources."""
    run_script(
        db,
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            lane TEXT NOT NULL,
            payload TEXT NOT NULL DEFAULT '{}',
            dedupe_key TEXT,
            status TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER,
            bytes_done INTEGER NOT NULL DEFAULT 0,
            bytes_total INTEGER,
            stage TEXT,
            checkpoint TEXT,
            result TEXT,
            error TEXT,
            timed_out INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires REAL,
            not_before REAL NOT NULL DEFAULT 0,
            eta_at REAL,
            created_at REAL NOT NULL,
            started_at REAL,
            heartbeat_at REAL,
            finished_at REAL
        );
        CREATE INDEX jobs_claim ON jobs(lane, status, id);
        CREATE INDEX jobs_status ON jobs(status, id);
        CREATE INDEX jobs_dedupe ON jobs(dedupe_key, status);
        CREATE TABLE job_stages (
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            stage TEXT NOT NULL,
            seconds REAL NOT NULL DEFAULT 0,
            items INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (job_id, stage)
        );
        CREATE TABLE job_items (
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            seconds REAL NOT NULL,
            parse REAL NOT NULL DEFAULT 0,
            embed REAL NOT NULL DEFAULT 0,
            write REAL NOT NULL DEFAULT 0,
            chunks INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX job_items_job ON job_items(job_id, seconds);
        CREATE INDEX job_items_seconds ON job_items(seconds);
        CREATE TABLE quarantine (
            path TEXT PRIMARY KEY,
            stage TEXT NOT NULL,
            error TEXT NOT NULL,
            content_hash TEXT,
            attempts INTEGER NOT NULL DEFAULT 1,
            job_id INTEGER,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL
        )
        """,
    )


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    lane: str
    payload: dict[str, Any]
    status: str
    attempts: int
    done: int
    total: int | None
    bytes_done: int
    bytes_total: int | None
    stage: str | None
    checkpoint: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    timed_out: bool
    cancel_requested: bool
    lease_owner: str | None
    lease_expires: float | None
    eta_at: float | None
    created_at: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        eta = None
        if self.status == "running" and self.eta_at is not None:
            eta = round(max(0.0, self.eta_at - time.time()), 1)
        return {
            "id": self.id,
            "kind": self.kind,
            "lane": self.lane,
            "status": self.status,
            "attempts": self.attempts,
            "payload": self.payload,
            "progress": {"done": self.done, "total": self.total, "stage": self.stage},
            "bytes": {"done": self.bytes_done, "total": self.bytes_total},
            "eta_seconds": eta,
            "timed_out": self.timed_out,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "result": self.result,
            "checkpoint": self.checkpoint,
            "lease_owner": self.lease_owner if self.status == "running" else None,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": round(self.duration, 3) if self.duration is not None else None,
        }


_COLUMNS = (
    "id, kind, lane, payload, status, attempts, done, total, bytes_done, bytes_total, stage, checkpoint,"
    " result, error, timed_out, cancel_requested, lease_owner, lease_expires, eta_at, created_at,"
    " started_at, heartbeat_at, finished_at"
)


def _job(r: Sequence[Any]) -> Job:
    return Job(
        id=r[0],
        kind=r[1],
        lane=r[2],
        payload=json.loads(r[3]),
        status=r[4],
        attempts=r[5],
        done=r[6],
        total=r[7],
        bytes_done=r[8],
        bytes_total=r[9],
        stage=r[10],
        checkpoint=json.loads(r[11]) if r[11] else None,
        result=json.loads(r[12]) if r[12] else None,
        error=r[13],
        timed_out=bool(r[14]),
        cancel_requested=bool(r[15]),
        lease_owner=r[16],
        lease_expires=r[17],
        eta_at=r[18],
        created_at=r[19],
        started_at=r[20],
        heartbeat_at=r[21],
        finished_at=r[22],
    )


@dataclass(frozen=True)
class StageTiming:
    stage: str
    seconds: float
    items: int
    bytes: int


@dataclass(frozen=True)
class ItemSpan:
    path: str
    seconds: float
    parse: float
    embed: float
    write: float
    chunks: int
    bytes: int


@dataclass(frozen=True)
class LaneLimit:
    name: str
    priority: int
    concurrency: int


class JobStore:
    """Named operations on the job tables of a `Store` (same connection, same write lock)."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    # -- submitting and reading -----------------------------------------------------------------

    def submit(
        self, kind: str, lane: str, payload: dict[str, Any], dedupe_key: str | None = None
    ) -> tuple[int, bool]:
        """Queue a job; with a `dedupe_key`, an unfinished job with the same key is returned instead.

        Returns (job id, created).
        """
        with self.store._write() as db:
            if dedupe_key is not None:
                row = db.execute(
                    "SELECT id FROM jobs WHERE dedupe_key=? AND status IN ('queued', 'running')"
                    " ORDER BY id LIMIT 1",
                    (dedupe_key,),
                ).fetchone()
                if row is not None:
                    return int(row[0]), False
            rows = db.execute(
                "INSERT INTO jobs (kind, lane, payload, dedupe_key, created_at) VALUES (?,?,?,?,?)"
                " RETURNING id",
                (kind, lane, json.dumps(payload, ensure_ascii=False), dedupe_key, time.time()),
            ).fetchall()
            return int(rows[0][0]), True

    def get(self, job_id: int) -> Job | None:
        rows = self.store._query(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))  # nosec B608
        return _job(rows[0]) if rows else None

    def recent(
        self, *, status: str | None = None, lane: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[Job]:
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE 1=1"  # nosec B608
        params: list[Any] = []
        for col, value in (("status", status), ("lane", lane), ("kind", kind)):
            if value is not None:
                sql += f" AND {col}=?"
                params.append(value)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_job(r) for r in self.store._query(sql, params)]

    def running(self) -> list[Job]:
        return self.recent(status="running", limit=10_000)

    def counts(self) -> dict[str, int]:
        rows = self.store._query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        out = dict.fromkeys(STATUSES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    # -- claiming and holding -------------------------------------------------------------------

    def claim(
        self,
        owner: str,
        lanes: Sequence[LaneLimit],
        lease: float,
        *,
        job_id: int | None = None,
        now: float | None = None,
    ) -> Job | None:
        """Take the next job a lane has room for, highest lane priority first, oldest first within a lane.

        A job is claimable when queued (and past its `not_before`), or running under an expired lease
        (its holder died). A lane never has more than its concurrency running under live leases.
        With `job_id`, only that job is considered (the CLI runs the job it submitted).
        """
        now = time.time() if now is None else now
        if self.store.backend == "postgres":
            return self._claim_skip_locked(owner, lanes, lease, job_id, now)
        with self.store._write() as db:
            live = dict(
                db.execute(
                    "SELECT lane, COUNT(*) FROM jobs WHERE status='running' AND lease_expires > ?"
                    " GROUP BY lane",
                    (now,),
                ).fetchall()
            )
            for lane in sorted(lanes, key=lambda x: -x.priority):
                if live.get(lane.name, 0) >= lane.concurrency:
                    continue
                sql = (
                    "SELECT id FROM jobs WHERE lane=? AND ((status='queued' AND not_before <= ?)"
                    " OR (status='running' AND lease_expires <= ?))"
                )
                params: list[Any] = [lane.name, now, now]
                if job_id is not None:
                    sql += " AND id=?"
                    params.append(job_id)
                row = db.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
                if row is None:
                    continue
                cur = db.execute(
                    "UPDATE jobs SET status='running', lease_owner=?, lease_expires=?, heartbeat_at=?,"
                    " attempts=attempts+1, started_at=COALESCE(started_at, ?), eta_at=NULL"
                    " WHERE id=? AND ((status='queued' AND not_before <= ?)"
                    " OR (status='running' AND lease_expires <= ?))",
                    (owner, now + lease, now, now, row[0], now, now),
                )
                if cur.rowcount == 1:
                    r = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (row[0],)).fetchone()  # nosec B608
                    return _job(r)
            return None

    def _claim_skip_locked(
        self, owner: str, lanes: Sequence[LaneLimit], lease: float, job_id: int | None, now: float
    ) -> Job | None:
        """`claim` on PostgreSQL, beside other writes. Per lane, highest priority first: take the lane's
        claim lock without waiting (a lane another transaction is claiming in is passed over), count its
        live leases (the statement sees every claim committed before the lock was had), and take the
        oldest claimable job whose row no one else holds (`SKIP LOCKED`). When nothing was claimed but a
        lane was passed over, claims again a moment later (a few times), so a claim comes back empty
        only when there is nothing for it, as on SQLite."""
        for attempt in range(CLAIM_TRIES):
            busy = False
            with self.store._write(serial=False) as db:
                for lane in sorted(lanes, key=lambda x: -x.priority):
                    got = db.execute(
                        "SELECT pg_try_advisory_xact_lock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
                        (LANE_LOCK, _lane_key(lane.name)),
                    ).fetchone()
                    if not got[0]:
                        busy = True
                        continue
                    live = db.execute(
                        "SELECT COUNT(*) FROM jobs WHERE lane=? AND status='running' AND lease_expires > ?",
                        (lane.name, now),
                    ).fetchone()
                    if int(live[0]) >= lane.concurrency:
                        continue
                    sql = (
                        "SELECT id FROM jobs WHERE lane=? AND ((status='queued' AND not_before <= ?)"
                        " OR (status='running' AND lease_expires <= ?))"
                    )
                    params: list[Any] = [lane.name, now, now]
                    if job_id is not None:
                        sql += " AND id=?"
                        params.append(job_id)
                    row = db.execute(sql + " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", params).fetchone()
                    if row is None:
                        continue
                    r = db.execute(
                        "UPDATE jobs SET status='running', lease_owner=?, lease_expires=?, heartbeat_at=?,"
                        " attempts=attempts+1, started_at=COALESCE(started_at, ?), eta_at=NULL"
                        " WHERE id=? AND ((status='queued' AND not_before <= ?)"
                        f" OR (status='running' AND lease_expires <= ?)) RETURNING {_COLUMNS}",  # nosec B608
                        (owner, now + lease, now, now, row[0], now, now),
                    ).fetchone()
                    if r is not None:
                        return _job(r)
            if not busy:
                return None
            if attempt + 1 < CLAIM_TRIES:
                time.sleep(CLAIM_PAUSE)
        return None

    def heartbeat(self, job_id: int, owner: str, lease: float) -> tuple[bool, bool]:
        """Renew a lease. Returns (still held, cancel requested)."""
        now = time.time()
        with self.store._write() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires=?, heartbeat_at=? WHERE id=? AND lease_owner=?"
                " AND status='running'",
                (now + lease, now, job_id, owner),
            )
            if cur.rowcount != 1:
                return False, False
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
            return True, bool(row[0])

    def expire_lease(self, job_id: int, owner: str) -> bool:
        """End the lease of a holder known to be dead, so the job can be taken over at once."""
        with self.store._write() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires=0 WHERE id=? AND lease_owner=? AND status='running'",
                (job_id, owner),
            )
            return cur.rowcount == 1

    def save_progress(
        self,
        job_id: int,
        owner: str,
        *,
        done: int,
        total: int | None,
        bytes_done: int,
        bytes_total: int | None,
        stage: str | None,
        eta_at: float | None,
        checkpoint: dict[str, Any] | None = None,
        stages: Iterable[StageTiming] = (),
        items: Iterable[ItemSpan] = (),
    ) -> tuple[bool, bool]:
        """Record progress (and a checkpoint, stage totals, new item spans) in one transaction.

        Returns (still held, cancel requested), like `heartbeat`.
        """
        with self.store._write() as db:
            sql = "UPDATE jobs SET done=?, total=?, bytes_done=?, bytes_total=?, stage=?, eta_at=?"
            params: list[Any] = [done, total, bytes_done, bytes_total, stage, eta_at]
            if checkpoint is not None:
                sql += ", checkpoint=?"
                params.append(json.dumps(checkpoint, ensure_ascii=False))
            cur = db.execute(
                sql + " WHERE id=? AND lease_owner=? AND status='running'", [*params, job_id, owner]
            )
            if cur.rowcount != 1:
                return False, False
            # As SQLite's INSERT OR REPLACE did: a stage written again is a new row, after the others.
            stages = list(stages)
            db.executemany(
                "DELETE FROM job_stages WHERE job_id=? AND stage=?", [(job_id, s.stage) for s in stages]
            )
            db.executemany(
                "INSERT INTO job_stages (job_id, stage, seconds, items, bytes) VALUES (?,?,?,?,?)",
                [(job_id, s.stage, s.seconds, s.items, s.bytes) for s in stages],
            )
            db.executemany(
                "INSERT INTO job_items (job_id, path, seconds, parse, embed, write, chunks, bytes)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [(job_id, i.path, i.seconds, i.parse, i.embed, i.write, i.chunks, i.bytes) for i in items],
            )
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
            return True, bool(row[0])

    def finish(
        self,
        job_id: int,
        owner: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        timed_out: bool = False,
    ) -> bool:
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status}")
        with self.store._write() as db:
            cur = db.execute(
                "UPDATE jobs SET status=?, result=?, error=?, timed_out=?, finished_at=?, lease_owner=NULL,"
                " lease_expires=NULL, eta_at=NULL WHERE id=? AND lease_owner=? AND status='running'",
                (
                    status,
                    json.dumps(result, ensure_ascii=False) if result is not None else None,
                    error,
                    int(timed_out),
                    time.time(),
                    job_id,
                    owner,
                ),
            )
            return cur.rowcount == 1

    def requeue(self, job_id: int, owner: str, *, delay: float, error: str) -> bool:
        """Give a job back to the queue to be retried after `delay` seconds (its checkpoint is kept)."""
        with self.store._write() as db:
            cur = db.execute(
                "UPDATE jobs SET status='queued', error=?, not_before=?, lease_owner=NULL,"
                " lease_expires=NULL, eta_at=NULL WHERE id=? AND lease_owner=? AND status='running'",
                (error, time.time() + delay, job_id, owner),
            )
            return cur.rowcount == 1

    def request_cancel(self, job_id: int) -> str | None:
        """Cancel a queued job at once; ask a running one to stop. Returns the job's status after."""
        with self.store._write() as db:
            # Each write is conditional on the status it expects: on PostgreSQL a claim runs beside this
            # transaction and may take the job between two statements.
            cur = db.execute(
                "UPDATE jobs SET status='cancelled', cancel_requested=1, finished_at=?,"
                " error='cancelled before it started' WHERE id=? AND status='queued'",
                (time.time(), job_id),
            )
            if cur.rowcount == 1:
                return "cancelled"
            cur = db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=? AND status='running'", (job_id,))
            if cur.rowcount == 1:
                return "running"
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            return None if row is None else str(row[0])

    # -- analytics ------------------------------------------------------------------------------

    @property
    def _stage_order(self) -> str:
        """The column that orders a job's stage rows as written: SQLite's rowid; PostgreSQL's `seq`."""
        return "seq" if self.store.backend == "postgres" else "rowid"

    def stages(self, job_id: int) -> list[StageTiming]:
        """A job's stage timings in the order they were (last) written."""
        sql = "SELECT stage, seconds, items, bytes FROM job_stages WHERE job_id=? ORDER BY "
        rows = self.store._query(sql + self._stage_order, (job_id,))
        return [StageTiming(*r) for r in rows]

    def items(self, job_id: int | None = None, limit: int = 10) -> list[tuple[int, ItemSpan]]:
        """The slowest item spans (of one job, or of all): (job id, span)."""
        sql = "SELECT job_id, path, seconds, parse, embed, write, chunks, bytes FROM job_items"
        params: list[Any] = []
        if job_id is not None:
            sql += " WHERE job_id=?"
            params.append(job_id)
        sql += " ORDER BY seconds DESC LIMIT ?"
        params.append(limit)
        return [(r[0], ItemSpan(*r[1:])) for r in self.store._query(sql, params)]

    def finished_jobs(self, since: float | None = None) -> list[Job]:
        rows = self.store._query(
            f"SELECT {_COLUMNS} FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"  # nosec B608
            " AND finished_at >= ? ORDER BY id",
            (since or 0.0,),
        )
        return [_job(r) for r in rows]

    def stage_history(
        self, since: float | None = None, kind: str | None = None, limit: int = 10_000
    ) -> list[tuple[int, str, str, StageTiming]]:
        """(job id, lane, kind, stage timing) of succeeded jobs, newest first."""
        sql = (
            "SELECT j.id, j.lane, j.kind, s.stage, s.seconds, s.items, s.bytes FROM job_stages s"
            " JOIN jobs j ON j.id = s.job_id WHERE j.status='succeeded' AND j.finished_at >= ?"
        )
        params: list[Any] = [since or 0.0]
        if kind is not None:
            sql += " AND j.kind=?"
            params.append(kind)
        sql += f" ORDER BY j.id DESC, s.{self._stage_order} LIMIT ?"
        params.append(limit)
        return [(r[0], r[1], r[2], StageTiming(*r[3:])) for r in self.store._query(sql, params)]

    # -- quarantine -----------------------------------------------------------------------------

    def quarantine(
        self, path: str, stage: str, error: str, content_hash: str | None, job_id: int | None
    ) -> None:
        now = time.time()
        with self.store._write() as db:
            db.execute(
                "INSERT INTO quarantine (path, stage, error, content_hash, attempts, job_id, first_at,"
                " last_at) VALUES (?,?,?,?,1,?,?,?) ON CONFLICT(path) DO UPDATE SET stage=excluded.stage,"
                " error=excluded.error, content_hash=excluded.content_hash,"
                " attempts=quarantine.attempts+1, job_id=excluded.job_id, last_at=excluded.last_at",
                (path, stage, error, content_hash, job_id, now, now),
            )

    def release(self, paths: Iterable[str]) -> int:
        """Take sources out of quarantine (they were indexed, or are gone)."""
        paths = list(paths)
        if not paths:
            return 0
        where, param = self.store.any_of("path", paths)
        with self.store._write() as db:
            cur = db.execute(f"DELETE FROM quarantine WHERE {where}", (param,))  # nosec B608
            return int(cur.rowcount)

    def quarantined(self, paths: Iterable[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT path, stage, error, content_hash, attempts, job_id, first_at, last_at FROM quarantine"
        params: list[Any] = []
        if paths is not None:
            where, param = self.store.any_of("path", list(paths))
            sql += f" WHERE {where}"
            params.append(param)
        rows = self.store._query(sql + " ORDER BY path", params)
        keys = ("path", "stage", "error", "content_hash", "attempts", "job_id", "first_at", "last_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _lane_key(name: str) -> int:
    """A lane's name as the second (signed 32-bit) key of its PostgreSQL claim lock."""
    return zlib.crc32(name.encode()) - (1 << 31)
