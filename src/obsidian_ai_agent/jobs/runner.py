"""The job runner: claims jobs from the store, runs them under a renewed lease, and records the outcome.

Lifecycle: `JobRunner(engine)`; `start()` runs worker threads that claim and run jobs until `stop()`;
`run_job(id)` runs one job in the calling thread (the CLI's `index`), or follows it while another
runner has it; `run_until_idle()` drains the queue. Any number of runners, in any number of processes,
can share one store: a claim is exclusive, a lease is renewed by a heartbeat thread, and a job whose
holder died (lease expired, or its process on this machine is gone) is taken over and resumed from its
checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import LaneSettings
from ..embeddings import Embedder, TransientEmbeddingError
from ..engine import Engine
from ..indexer import IndexHooks, IndexReport, Progress
from ..store.jobs import FINISHED, Job, JobStore
from .eta import EtaModel
from .lanes import backoff_delay, lane_for, limits
from .profiler import Profiler
from .tuning import BatchTuner

log = logging.getLogger(__name__)

ProgressListener = Callable[[Progress], None]
# How often a running job's progress row is refreshed between checkpoints (for `jobs show` elsewhere).
PROGRESS_EVERY = 1.0


GIVE_WAY_DELAY = 2.0
"""Seconds a job that gave way (`JobContext.give_way`) stays out of the queue, so the job it gave way
to is claimed first."""


class JobStopped(Exception):
    """Raised inside a running job to stop it: cancelled, timed out, its lease was lost, or it gave way."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Offsets:
    """What earlier attempts of a resumed job did (from its checkpoint)."""

    done: int = 0
    bytes_done: int = 0
    chunks_embedded: int = 0


class JobContext(IndexHooks):
    """One running job: the hooks its indexing calls, its lease, progress, checkpoints, ETA and spans."""

    quarantines = True

    def __init__(self, runner: JobRunner, job: Job, lane: LaneSettings, listener: ProgressListener | None):
        self.runner = runner
        self.engine = runner.engine
        self.jobs = runner.jobs
        self.job = job
        self.lane = lane
        self.listener = listener
        self.checkpoint: dict[str, Any] = dict(job.checkpoint or {})
        self.off = _Offsets(
            int(self.checkpoint.get("done", 0)),
            int(self.checkpoint.get("bytes_done", 0)),
            int(self.checkpoint.get("chunks_embedded", 0)),
        )
        self.profiler = Profiler(self.jobs.stages(job.id))
        self.eta: EtaModel | None = None
        self.retries = 0
        self.quarantined: list[str] = []
        self._held_quarantine = {q["path"] for q in self.jobs.quarantined()}
        self._stop_reason: str | None = None
        self.gave_way_to: Job | None = None
        self.may_give_way = False
        """Only a job a worker claimed gives way; one run for its caller (`run_job`) goes on."""
        self._deadline = time.monotonic() + lane.timeout if lane.timeout else None
        self._last_progress = 0.0
        self._prog = Progress()
        self._tuner: BatchTuner | None = None
        self._beat = threading.Event()
        self._heart = threading.Thread(target=self._heartbeat, name=f"job-{job.id}-heartbeat", daemon=True)
        self._heart.start()

    # -- lease ----------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        every = max(0.05, self.runner.lease / 3)
        while not self._beat.wait(every):
            try:
                held, cancel = self.jobs.heartbeat(self.job.id, self.runner.owner, self.runner.lease)
            except Exception:  # a busy database must not kill the heartbeat; the next beat tries again
                log.exception("heartbeat of job %s failed", self.job.id)
                continue
            self._note(held, cancel)

    def _note(self, held: bool, cancel: bool) -> None:
        if not held:
            self._stop_reason = "lost"
        elif cancel and self._stop_reason is None:
            self._stop_reason = "cancel"

    def close(self) -> None:
        self._beat.set()
        self._heart.join(5)

    # -- IndexHooks -----------------------------------------------------------------------------

    def check(self) -> None:
        if self._stop_reason is None and self._deadline is not None and time.monotonic() > self._deadline:
            self._stop_reason = "timeout"
        if self._stop_reason is not None:
            raise JobStopped(self._stop_reason)

    def give_way(self) -> None:
        """Stop here and queue this job again (checkpoint kept) if another job waits in its lane: for
        background work that must not hold a lane slot while something a person asked for waits."""
        if not self.may_give_way:
            return
        for other in self.jobs.recent(status="queued", lane=self.lane.name, limit=20):
            if other.id != self.job.id:
                self.gave_way_to = other
                raise JobStopped("give way")

    def stage(self, stage: str, seconds: float, items: int, nbytes: int) -> None:
        self.profiler.stage(stage, seconds, items, nbytes)
        if self.eta is not None:
            self.eta.observe(stage, seconds, nbytes)

    def item(self, path: str, spans: dict[str, float], chunks: int, nbytes: int) -> None:
        self.profiler.item(path, spans, chunks, nbytes)

    def retry_delay(self, attempt: int, error: Exception) -> float | None:
        if attempt > self.lane.max_retries:
            return None
        self.retries += 1
        delay = backoff_delay(self.lane, attempt)
        log.warning("job %s: %s; retry %d in %.2f s", self.job.id, error, attempt, delay)
        return delay

    def quarantine(self, path: str, stage: str, error: str, content_hash: str | None) -> None:
        self.jobs.quarantine(path, stage, error, content_hash, self.job.id)
        self._held_quarantine.add(path)
        self.quarantined.append(path)

    def written(self, paths: list[str]) -> None:
        back = [p for p in paths if p in self._held_quarantine]
        if back:
            self.jobs.release(back)
            self._held_quarantine.difference_update(back)

    def window_done(self, prog: Progress, report: IndexReport) -> None:
        self.checkpoint.update(self._merged_counts(report))
        self.checkpoint.update(
            {
                "done": self.off.done + prog.done,
                "bytes_done": self.off.bytes_done + prog.bytes_done,
                "chunks_embedded": self.off.chunks_embedded + prog.chunks_embedded,
                "at": time.time(),
            }
        )
        self.save(prog, checkpoint=True)

    def embed(self, embedder: Embedder, texts: list[str], progress: Callable[[int], None]) -> np.ndarray:
        if self._tuner is None:
            self._tuner = BatchTuner(self.engine.store, embedder, self.engine.settings.jobs.tune_batch_size)
        return self._tuner.embed(embedder, texts, progress)

    # -- progress -------------------------------------------------------------------------------

    def progress(self, prog: Progress) -> None:
        """The indexer's progress callback: shown to the listener, saved now and then."""
        self._prog = prog
        if self.eta is None and prog.total:
            history = self.runner.history(self.job.kind)
            self.eta = EtaModel.from_history(history, prog.bytes_total)
        if self.listener is not None:
            self.listener(self.shown(prog))
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY:
            self.save(prog, checkpoint=False)

    def shown(self, prog: Progress) -> Progress:
        """Progress over the whole job: what earlier attempts did plus this one."""
        return Progress(
            done=self.off.done + prog.done,
            total=self.off.done + prog.total,
            chunks_embedded=self.off.chunks_embedded + prog.chunks_embedded,
            stage=prog.stage,
            bytes_done=self.off.bytes_done + prog.bytes_done,
            bytes_total=self.off.bytes_done + prog.bytes_total,
        )

    def eta_seconds(self, prog: Progress) -> float | None:
        if self.eta is None or not prog.bytes_total:
            return None
        return self.eta.remaining(prog.bytes_total)

    def save(self, prog: Progress, *, checkpoint: bool) -> None:
        self._last_progress = time.monotonic()
        shown = self.shown(prog)
        left = self.eta_seconds(prog)
        items = self.profiler.take_items() if checkpoint else []
        try:
            held, cancel = self.jobs.save_progress(
                self.job.id,
                self.runner.owner,
                done=shown.done,
                total=shown.total,
                bytes_done=shown.bytes_done,
                bytes_total=shown.bytes_total,
                stage=prog.stage,
                eta_at=time.time() + left if left is not None else None,
                checkpoint=self.checkpoint if checkpoint else None,
                stages=self.profiler.stages() if checkpoint else (),
                items=items,
            )
        except Exception:
            self.profiler.give_back(items)
            raise
        self._note(held, cancel)

    def _merged_counts(self, report: IndexReport) -> dict[str, int]:
        base = self.job.checkpoint or {}
        return {
            key: int(base.get(key, 0)) + int(getattr(report, key))
            for key in ("indexed", "removed", "moved", "chunks_embedded", "chunks_reused")
        }

    def merged_report(self, report: IndexReport) -> dict[str, Any]:
        """This attempt's report with what earlier attempts did: sources they wrote count as indexed,
        not as unchanged."""
        data = report.to_dict()
        base = self.job.checkpoint or {}
        data.update(self._merged_counts(report))
        earlier = int(base.get("indexed", 0))
        data["unchanged"] = max(0, report.unchanged - earlier)
        data["seconds"] = round(self.job.duration or report.seconds, 3)
        return data


class JobRunner:
    """Claims and runs jobs of the given lanes (default: all) from the engine's store."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str | None = None,
        workers: int | None = None,
        lanes: list[str] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.jobs: JobStore = engine.jobs
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = self.settings.jobs.lease
        self.poll = self.settings.jobs.poll
        self.lanes = lanes
        self.workers = workers or min(8, sum(x.concurrency for x in self.settings.lanes))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._history: dict[str, list[Any]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> JobRunner:
        """Run worker threads until `stop()`; each claims the next job its lanes allow."""
        self._stop.clear()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait:
            for t in self._threads:
                t.join()
        self._threads = []

    def __enter__(self) -> JobRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.run_one()
            except Exception:  # a store error must not end the worker; the claim is retried
                log.exception("job worker failed")
                job = None
            if job is None:
                self._stop.wait(self.poll)

    # -- running --------------------------------------------------------------------------------

    def claim(self, job_id: int | None = None) -> Job | None:
        self.reap()
        return self.jobs.claim(self.owner, limits(self.settings, self.lanes), self.lease, job_id=job_id)

    def run_one(self, job_id: int | None = None, progress: ProgressListener | None = None) -> Job | None:
        """Claim one job (that one, with `job_id`) and run it here; None when there was none to claim."""
        job = self.claim(job_id)
        if job is None:
            return None
        return self.execute(job, progress, may_give_way=job_id is None)

    def run_until_idle(self, progress: ProgressListener | None = None) -> list[Job]:
        """Run queued jobs in this thread until none is claimable."""
        ran = []
        while (job := self.run_one(progress=progress)) is not None:
            ran.append(job)
        return ran

    def run_job(self, job_id: int, progress: ProgressListener | None = None) -> Job:
        """Run a job here, or follow it to its end while another runner holds it."""
        while True:
            job = self.jobs.get(job_id)
            if job is None:
                raise KeyError(f"no job {job_id}")
            if job.status in FINISHED:
                return job
            ran = self.run_one(job_id, progress)
            if ran is not None and ran.status in FINISHED:
                return ran
            if ran is None and progress is not None and job.status == "running":
                progress(
                    Progress(
                        done=job.done,
                        total=job.total or 0,
                        stage=job.stage or "queued",
                        bytes_done=job.bytes_done,
                        bytes_total=job.bytes_total or 0,
                        chunks_embedded=int((job.checkpoint or {}).get("chunks_embedded", 0)),
                    )
                )
            time.sleep(self.poll if ran is None else 0)

    def execute(
        self, job: Job, progress: ProgressListener | None = None, *, may_give_way: bool = False
    ) -> Job:
        from .handlers import HANDLERS

        try:
            lane = lane_for(self.settings, job.kind, job.lane)
        except ValueError as e:
            self.jobs.finish(job.id, self.owner, "failed", error=str(e))
            return self.jobs.get(job.id) or job
        ctx = JobContext(self, job, lane, progress)
        ctx.may_give_way = may_give_way
        try:
            handler = HANDLERS.get(job.kind)
            if handler is None:
                raise ValueError(f"unknown kind of job {job.kind!r}; kinds: {', '.join(sorted(HANDLERS))}")
            ctx.check()
            result = handler(ctx)
            ctx.close()
            self._finish(ctx, "succeeded", result=result)
        except JobStopped as stop:
            ctx.close()
            self._stopped(ctx, stop.reason)
        except TransientEmbeddingError as e:
            ctx.close()
            # Failed before any source could be set aside (e.g. the server's first answer): retry the job.
            if job.attempts <= lane.max_retries:
                delay = backoff_delay(lane, job.attempts)
                self.jobs.requeue(job.id, self.owner, delay=delay, error=f"{e}; retrying in {delay:.1f} s")
            else:
                self._finish(ctx, "failed", error=str(e))
        except Exception as e:
            ctx.close()
            log.warning("job %s (%s) failed: %s", job.id, job.kind, e)
            self._finish(ctx, "failed", error=str(e) or type(e).__name__)
        finally:
            ctx.close()
        return self.jobs.get(job.id) or job

    def _stopped(self, ctx: JobContext, reason: str) -> None:
        if reason == "lost":
            log.warning("job %s: lease lost to another runner; leaving it to them", ctx.job.id)
            return
        partial = {**ctx.checkpoint, "retries": ctx.retries, "quarantined": len(ctx.quarantined)}
        shown = ctx.shown(ctx._prog)
        did = f"{shown.done} of {shown.total} items done" if shown.total else "no item done"
        try:
            ctx.save(ctx._prog, checkpoint=True)
        except Exception:
            log.exception("job %s: could not save its last progress", ctx.job.id)
        if reason == "give way" and ctx.gave_way_to is not None:
            other = ctx.gave_way_to
            note = f"gave way to job {other.id} ({other.kind}) in lane {ctx.lane.name}; {did}"
            self.jobs.requeue(ctx.job.id, self.owner, delay=GIVE_WAY_DELAY, error=note)
        elif reason == "timeout":
            self._finish(
                ctx,
                "failed",
                result=partial,
                error=f"timed out after {ctx.lane.timeout:g} s (lane {ctx.lane.name} timeout); {did}",
                timed_out=True,
            )
        else:
            self._finish(ctx, "cancelled", result=partial, error=f"cancelled; {did}")

    def _finish(
        self,
        ctx: JobContext,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        timed_out: bool = False,
    ) -> None:
        if status == "succeeded":
            try:
                ctx.save(ctx._prog, checkpoint=True)
            except Exception:
                log.exception("job %s: could not save its last progress", ctx.job.id)
        self.jobs.finish(ctx.job.id, self.owner, status, result=result, error=error, timed_out=timed_out)

    def reap(self) -> None:
        """End the leases of runners on this machine whose process is gone, so their jobs resume now."""
        host = socket.gethostname()
        for job in self.jobs.running():
            owner = job.lease_owner or ""
            parts = owner.split(":")
            if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _alive(int(parts[1])):
                self.jobs.expire_lease(job.id, owner)

    def history(self, kind: str) -> list[list[Any]]:
        """Stage timings of the last succeeded jobs of a kind, newest first (for the ETA prior)."""
        if kind not in self._history:
            by_job: dict[int, list[Any]] = {}
            for job_id, _lane, _kind, timing in self.jobs.stage_history(kind=kind, limit=200):
                by_job.setdefault(job_id, []).append(timing)
            self._history[kind] = [by_job[j] for j in sorted(by_job, reverse=True)[:10]]
        return self._history[kind]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
