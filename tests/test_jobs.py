"""Jobs in one process: lanes from settings, claiming, priority and concurrency, cancel, timeout, ETA,
batch-size tuning, analytics. Real SQLite files, the real embedding model."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent import indexer, jobs
from obsidian_ai_agent.config import ConfigError, load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.jobs.eta import EtaModel
from obsidian_ai_agent.jobs.lanes import backoff_delay
from obsidian_ai_agent.jobs.tuning import CANDIDATES, META_KEY, BatchTuner
from obsidian_ai_agent.store.jobs import LaneLimit, StageTiming

from .conftest import EXAMPLE_VAULT, copy_tree

# -- settings -------------------------------------------------------------------------------------


def test_the_default_lanes_are_interactive_web_and_bulk_in_that_priority(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert [x.name for x in sorted(s.lanes, key=lambda x: -x.priority)] == ["interactive", "web", "bulk"]
    assert s.jobs.routes["reindex"] == "bulk" and s.jobs.routes["upsert_note"] == "interactive"
    assert s.jobs.routes["index_web"] == "web"


def test_a_configured_lane_changes_only_the_fields_it_sets(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("lanes:\n  - name: bulk\n    concurrency: 3\n  - name: nightly\n")
    s = load_settings(data_dir=tmp_path)
    assert s.lane("bulk").concurrency == 3 and s.lane("bulk").priority == 10
    assert s.lane("nightly").priority == 0 and len(s.lanes) == 4


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("lanes:\n  - name: bulk\n    colour: red\n", ["bulk", "colour"]),
        ("lanes:\n  - name: web\n    timeout: -5\n", ["web", "timeout"]),
        ("lanes:\n  - name: bulk\n    concurrency: 0\n", ["bulk", "concurrency"]),
        ("lanes:\n  - name: fast\n  - name: fast\n", ["fast", "twice"]),
        ("watch:\n  lane: turbo\n", ["watch.lane", "turbo"]),
        ("jobs:\n  routes:\n    reindex: nightly\n", ["jobs.routes.reindex", "nightly"]),
    ],
)
def test_an_invalid_lane_fails_at_start_with_the_lane_and_field_named(
    tmp_path: Path, yaml_text: str, named: list[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert all(word in str(e.value) for word in named), str(e.value)
    assert str(cfg) in str(e.value)


# -- store-level claiming -------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path, embedder: Any) -> Iterator[Engine]:
    s = load_settings(data_dir=tmp_path / "data", jobs={"lease": 3, "poll": 0.05})
    with Engine(s, embedder=embedder) as e:
        yield e


def test_a_claim_takes_the_highest_priority_lane_first_and_honours_each_lanes_concurrency(
    engine: Engine,
) -> None:
    store = engine.jobs
    low = [store.submit("probe", "bulk", {})[0] for _ in range(2)]
    high = store.submit("probe", "interactive", {})[0]
    lanes = [LaneLimit("bulk", 10, 1), LaneLimit("interactive", 100, 1)]
    first = store.claim("a", lanes, lease=30)
    assert first is not None and first.id == high
    second = store.claim("b", lanes, lease=30)
    assert second is not None and second.id == low[0]
    # Both lanes are full: a third runner gets nothing until a job ends.
    assert store.claim("c", lanes, lease=30) is None
    assert store.finish(second.id, "b", "succeeded")
    third = store.claim("c", lanes, lease=30)
    assert third is not None and third.id == low[1]


def test_an_expired_lease_is_taken_over_and_the_old_holder_can_no_longer_write(engine: Engine) -> None:
    store = engine.jobs
    job_id, _ = store.submit("probe", "bulk", {})
    lanes = [LaneLimit("bulk", 10, 1)]
    now = time.time()
    held = store.claim("old", lanes, lease=5, now=now)
    assert held is not None and held.attempts == 1
    assert store.claim("new", lanes, lease=5, now=now + 1) is None  # still held
    taken = store.claim("new", lanes, lease=5, now=now + 6)
    assert taken is not None and taken.id == job_id and taken.attempts == 2
    assert store.heartbeat(job_id, "old", 5) == (False, False)
    assert not store.finish(job_id, "old", "failed", error="late")
    assert store.finish(job_id, "new", "succeeded")
    assert store.get(job_id).status == "succeeded"  # type: ignore[union-attr]


def test_an_unfinished_reindex_of_the_same_vault_is_resumed_rather_than_queued_twice(engine: Engine) -> None:
    vault = EXAMPLE_VAULT
    a = jobs.submit_reindex(engine, vault)
    b = jobs.submit_reindex(engine, vault)
    assert a == b and engine.jobs.counts()["queued"] == 1


# -- the runner -----------------------------------------------------------------------------------


def _record(order: list[str], hold: float = 0.0, running: dict[str, int] | None = None) -> Any:
    peak: dict[str, int] = {}
    lock = threading.Lock()

    def probe(ctx: Any) -> dict[str, Any]:
        lane = ctx.job.lane
        with lock:
            order.append(f"{lane}:{ctx.job.id}")
            if running is not None:
                running[lane] = running.get(lane, 0) + 1
                peak[lane] = max(peak.get(lane, 0), running[lane])
        time.sleep(hold)
        with lock:
            if running is not None:
                running[lane] -= 1
        return {}

    probe.peak = peak  # type: ignore[attr-defined]
    return probe


def test_a_higher_priority_lanes_job_starts_before_a_lower_ones(engine: Engine) -> None:
    order: list[str] = []
    jobs.register("probe", _record(order))
    bulk = [jobs.submit(engine, "probe", {}, lane="bulk") for _ in range(3)]
    inter = [jobs.submit(engine, "probe", {}, lane="interactive") for _ in range(2)]
    web = jobs.submit(engine, "probe", {}, lane="web")
    ran = jobs.JobRunner(engine, workers=1).run_until_idle()
    assert [j.status for j in ran] == ["succeeded"] * 6
    assert order == [f"interactive:{i}" for i in inter] + [f"web:{web}"] + [f"bulk:{i}" for i in bulk]


def test_a_lane_never_runs_more_jobs_at_once_than_its_concurrency(tmp_path: Path, embedder: Any) -> None:
    s = load_settings(
        data_dir=tmp_path,
        lanes=[{"name": "bulk", "concurrency": 2}, {"name": "interactive", "concurrency": 1}],
        jobs={"poll": 0.02},
    )
    running: dict[str, int] = {}
    order: list[str] = []
    probe = _record(order, hold=0.15, running=running)
    jobs.register("probe", probe)
    with Engine(s, embedder=embedder) as engine:
        for _ in range(6):
            jobs.submit(engine, "probe", {}, lane="bulk")
            jobs.submit(engine, "probe", {}, lane="interactive")
        with jobs.JobRunner(engine, workers=6):
            deadline = time.monotonic() + 60
            while engine.jobs.counts()["succeeded"] < 12 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert engine.jobs.counts()["succeeded"] == 12
    assert probe.peak["bulk"] <= 2 and probe.peak["interactive"] <= 1


def _fresh(tmp_path: Path, embedder: Any, **settings: Any) -> tuple[Engine, Path]:
    vault = copy_tree(EXAMPLE_VAULT / "Getting Started" / "Statuses", tmp_path / "vault")
    s = load_settings(data_dir=tmp_path / "data", **settings)
    return Engine(s, embedder=embedder), vault


def test_a_cancelled_running_reindex_stops_keeps_what_it_wrote_and_a_new_one_finishes_it(
    tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "EMBED_WINDOW", 4)  # many checkpoints, so the cancel lands mid-run
    engine, vault = _fresh(tmp_path, embedder, jobs={"lease": 3, "poll": 0.05})
    with engine:
        job_id = jobs.submit_reindex(engine, vault)
        seen_eta = False
        with jobs.JobRunner(engine, workers=1):
            while True:
                job = engine.jobs.get(job_id)
                assert job is not None and job.status in ("queued", "running")
                seen_eta = seen_eta or job.eta_at is not None
                if job.done >= 2 and seen_eta:
                    break
                time.sleep(0.02)
            assert jobs.cancel(engine, job_id) == "running"
            while (job := engine.jobs.get(job_id)) is not None and job.status == "running":
                time.sleep(0.05)
        assert job is not None and job.status == "cancelled" and job.error is not None
        assert "cancelled" in job.error and job.done < (job.total or 0)
        assert engine.store.integrity_check() == "ok"
        written = engine.store.counts()["sources"]
        assert 2 <= written < 9
        again = jobs.run(engine, jobs.submit_reindex(engine, vault))
        assert again.id != job_id and again.status == "succeeded"
        assert again.result is not None and again.result["unchanged"] == written
        assert engine.store.counts()["sources"] == 9


def test_a_queued_job_is_cancelled_at_once(engine: Engine) -> None:
    job_id = jobs.submit(engine, "probe", {}, lane="bulk")
    assert jobs.cancel(engine, job_id) == "cancelled"
    assert jobs.JobRunner(engine).run_until_idle() == []
    assert engine.jobs.get(job_id).status == "cancelled"  # type: ignore[union-attr]


def test_a_job_over_its_lanes_timeout_is_marked_timed_out_with_what_it_had_done(
    tmp_path: Path, embedder: Any
) -> None:
    engine, vault = _fresh(tmp_path, embedder, lanes=[{"name": "bulk", "timeout": 0.3}])
    with engine:
        job = jobs.run(engine, jobs.submit_reindex(engine, vault))
        assert job.status == "failed" and job.timed_out
        assert job.error is not None and "timed out after 0.3 s (lane bulk timeout)" in job.error
        assert f"of {job.total} items done" in job.error and job.done < (job.total or 0)
        assert engine.store.integrity_check() == "ok"
        assert jobs.job_stats(engine.jobs)["lanes"]["bulk"]["timed_out"] == 1


def test_retry_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half(tmp_path: Path) -> None:
    lane = load_settings(data_dir=tmp_path, lanes=[{"name": "bulk", "backoff": 1, "backoff_max": 8}]).lane(
        "bulk"
    )
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (9, 8)]:
        delays = [backoff_delay(lane, attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


# -- ETA and tuning -------------------------------------------------------------------------------


def test_the_eta_leans_on_history_early_and_on_the_jobs_own_throughput_later() -> None:
    history = [[StageTiming("parse", 1, 10, 1000), StageTiming("embed", 10, 10, 1000)]]
    model = EtaModel.from_history(history, job_bytes=10_000)
    assert model.remaining(10_000) == pytest.approx(11 * 10)  # history alone: 0.011 s/byte
    # This job embeds twice as slowly as history said; as its bytes grow its own rate takes over.
    model.observe("parse", 1, 1000)
    model.observe("embed", 20, 1000)
    early = model.seconds_per_byte("embed")
    model.observe("embed", 160, 8000)
    late = model.seconds_per_byte("embed")
    assert early is not None and late is not None and 0.01 < early < late < 0.02
    assert EtaModel().remaining(100) is None


def test_the_embedding_batch_size_is_tuned_on_first_use_and_remembered(engine: Engine, embedder: Any) -> None:
    original = embedder.batch_size
    try:
        tuner = BatchTuner(engine.store, embedder)
        texts = [f"note {i} about task {i % 7} and a status" for i in range(3 * 64 + 10)]
        seen: list[int] = []
        vectors = tuner.embed(embedder, texts, seen.append)
        assert vectors.shape == (len(texts), embedder.dimension) and seen[-1] == len(texts)
        assert tuner.state["batch_size"] in CANDIDATES
        assert f'"batch_size": {tuner.state["batch_size"]}' in (engine.store.get_meta(META_KEY) or "")
        embedder.batch_size = 1
        BatchTuner(engine.store, embedder)  # a later job reads it back
        assert embedder.batch_size == tuner.state["batch_size"]
    finally:
        embedder.batch_size = original


def test_stats_give_success_rate_percentiles_per_lane_and_stage_and_the_slowest_sources(
    engine: Engine, tmp_path: Path
) -> None:
    vault = tmp_path / "notes"
    vault.mkdir()
    (vault / "Short.md").write_text("# Short\n\nOne line about tea.\n")
    (vault / "Long.md").write_text(
        "# Long\n\n" + "\n\n".join(f"Paragraph {i} about coffee beans." for i in range(40))
    )
    job = jobs.run(engine, jobs.submit_reindex(engine, vault))
    assert job.status == "succeeded" and job.result is not None and job.result["indexed"] == 2
    stats = jobs.job_stats(engine.jobs)
    bulk = stats["lanes"]["bulk"]
    assert bulk["success_rate"] == 1.0 and bulk["duration_p50"] is not None
    assert set(bulk["stages"]) == {"scan", "parse", "embed", "write"}
    assert bulk["stages"]["parse"]["items"] == 2
    assert stats["slowest_sources"][0]["path"] == "Long.md"
    detail = jobs.job_detail(engine.jobs, job.id)
    assert detail is not None and [s["stage"] for s in detail["stages"]] == [
        "scan",
        "parse",
        "embed",
        "write",
    ]
    assert detail["slowest_items"][0]["chunks"] >= 1


# -- watch ----------------------------------------------------------------------------------------


def test_watch_sees_a_renamed_note_as_a_move_and_embeds_nothing(example: tuple[Engine, Path]) -> None:
    from obsidian_ai_agent.jobs.watch import Watcher

    engine, vault = example
    vault = vault.resolve()
    old, new = vault / "Getting Started" / "Priority.md", vault / "Getting Started" / "Priority levels.md"
    old.rename(new)
    watcher = Watcher(engine, vault)
    gen = engine.store.generation
    ids = watcher.submit({old, new})  # what watchfiles reports for a rename: deleted + added
    results = [jobs.run(engine, i) for i in ids]
    assert [j.status for j in results] == ["succeeded"] * len(ids)
    moved = sum(j.result["moved"] for j in results if j.result)
    embedded = sum(j.result.get("chunks_embedded", 0) for j in results if j.result)
    assert moved == 1 and embedded == 0, [j.result for j in results]
    states = engine.store.source_states()
    assert "Getting Started/Priority levels.md" in states and "Getting Started/Priority.md" not in states
    assert engine.store.generation > gen
    # A watch event for a file whose bytes did not change moves nothing.
    new.write_bytes(new.read_bytes())
    gen = engine.store.generation
    for i in watcher.submit({new}):
        assert jobs.run(engine, i).status == "succeeded"
    assert engine.store.generation == gen
