"""The tables beside the index (API keys, conversations, the answer cache, the monitor's, unit vectors,
rate-limit hits) behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from limits import parse

from obsidian_ai_agent.cache import Cache, SqliteBackend
from obsidian_ai_agent.config import Settings
from obsidian_ai_agent.security import ratelimit
from obsidian_ai_agent.security.keys import create_key, revoke_key, rotate_key, verify
from obsidian_ai_agent.security.ratelimit import Limiter
from obsidian_ai_agent.store import IndexStore, unitvectors
from obsidian_ai_agent.store import conversations as conv
from obsidian_ai_agent.store.keys import KeyStore
from obsidian_ai_agent.store.monitoring import FIVE_MIN, HOURLY, RAW, MonitorStore
from obsidian_ai_agent.store.ratelimits import SharedCounters, StoreCounters

from .conftest import open_backend


@pytest.fixture
def second(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, store: IndexStore
) -> Iterator[IndexStore]:
    """Another store object on the same database (another worker, or another replica)."""
    other = open_backend(backend, tmp_path, request)
    yield other
    other.close()


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls on threads of their own, released together; their results in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[i] = call()
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


# -- API keys ---------------------------------------------------------------------------------------


def test_a_created_key_verifies_and_a_wrong_or_malformed_secret_does_not(store: IndexStore) -> None:
    made = create_key(store, "laptop", ["write", "read"])
    assert made.key.scopes == ["read", "write"] and made.key.lineage == made.key.id
    found = verify(store, made.secret)
    assert found is not None and found.id == made.key.id and found.name == "laptop"
    assert verify(store, made.secret[:-1] + ("A" if made.secret[-1] != "A" else "B")) is None
    assert verify(store, "not a key") is None
    touched = KeyStore(store).get(made.key.id)
    assert touched is not None and touched.last_used_at is not None
    assert [k.id for k in KeyStore(store).list()] == [made.key.id] and KeyStore(store).count() == 1


def test_a_rotated_key_works_beside_its_replacement_until_the_grace_ends(store: IndexStore) -> None:
    first = create_key(store, "ci", ["read"])
    second = rotate_key(store, first.key.id, grace=3600)
    assert second.key.lineage == first.key.id and second.key.scopes == ["read"]
    assert verify(store, first.secret) is not None and verify(store, second.secret) is not None
    old = KeyStore(store).get(first.key.id)
    assert old is not None and old.replaced_by == second.key.id and old.expires_at is not None
    # Rotating again through the old id replaces the newest key, with no grace: it stops at once.
    third = rotate_key(store, first.key.id, grace=0)
    time.sleep(0.01)
    assert verify(store, second.secret) is None and verify(store, third.secret) is not None
    assert verify(store, first.secret) is not None  # it keeps the expiry it had


def test_revoking_any_key_of_a_rotation_chain_ends_every_secret_of_it(store: IndexStore) -> None:
    first = create_key(store, "phone", ["read"])
    second = rotate_key(store, first.key.id, grace=3600)
    other = create_key(store, "other", ["read"])
    revoked = revoke_key(store, second.key.id)
    assert revoked.revoked_at is not None and not revoked.active()
    assert verify(store, first.secret) is None and verify(store, second.secret) is None
    assert verify(store, other.secret) is not None


def test_a_key_past_its_expiry_no_longer_verifies(store: IndexStore) -> None:
    made = create_key(store, "temp", ["read"])
    with store._write() as db:
        db.execute("UPDATE api_keys SET expires_at=? WHERE id=?", (time.time() - 1, made.key.id))
    assert verify(store, made.secret) is None
    row = KeyStore(store).get(made.key.id)
    assert row is not None and not row.active()


def test_the_admin_check_counts_only_working_keys_that_hold_the_admin_scope(store: IndexStore) -> None:
    keys = KeyStore(store)
    assert not keys.has_active_admin()
    create_key(store, "admin reader", ["read", "write"])  # "admin" in its name only
    keys.insert("aaaaaaaaaaaa", "odd", ["administrator", 'x"admin'], "digest")  # near misses of the LIKE
    assert not keys.has_active_admin()
    admin = create_key(store, "ops", ["admin", "read"])
    assert keys.has_active_admin()
    with store._write() as db:
        db.execute("UPDATE api_keys SET expires_at=? WHERE id=?", (time.time() - 1, admin.key.id))
    assert not keys.has_active_admin()
    again = create_key(store, "ops again", ["admin"])
    assert keys.has_active_admin()
    revoke_key(store, again.key.id)
    assert not keys.has_active_admin()


def test_two_writers_making_the_first_admin_key_at_once_make_exactly_one(
    store: IndexStore, second: IndexStore
) -> None:
    made = race(
        *(
            (lambda s=s, i=i: KeyStore(s).insert(f"{i:012x}", "first", ["admin"], "d", only_if_no_admin=True))
            for i, s in enumerate([store, second, store, second])
        )
    )
    assert sorted(made) == [False, False, False, True]
    assert KeyStore(store).count() == 1 and KeyStore(second).has_active_admin()


# -- conversations and the answer cache -------------------------------------------------------------------


def test_conversations_keep_their_newest_turns_title_and_order_per_owner(store: IndexStore) -> None:
    cid = conv.new_conversation(store, owner="alice")
    conv.add_turns(
        store,
        cid,
        [conv.Turn("user", "Where are the seeds?"), conv.Turn("assistant", "In the shed.")],
        10,
        "alice",
    )
    conv.add_turns(
        store,
        cid,
        [
            conv.Turn("user", "And the tools?", query="tools"),
            conv.Turn("assistant", "Also.", citations=[{"n": 1}]),
        ],
        keep=3,
        owner="alice",
    )
    turns = conv.conversation_turns(store, cid, "alice")
    assert [t.content for t in turns] == ["In the shed.", "And the tools?", "Also."]
    assert turns[1].query == "tools" and turns[2].citations == [{"n": 1}]
    listed = conv.list_conversations(store, "alice")
    assert [c["id"] for c in listed] == [cid] and listed[0]["title"] == "Where are the seeds?"
    time.sleep(0.01)
    later = conv.new_conversation(store, owner="alice", title="later")
    conv.add_turns(store, later, [conv.Turn("user", "hi")], 10, "alice")
    assert [c["id"] for c in conv.list_conversations(store, "alice")] == [later, cid]
    assert [c["id"] for c in conv.list_conversations(store, "alice", limit=1)] == [later]
    assert conv.list_conversations(store, "bob") == []


def test_a_conversation_id_names_a_different_conversation_for_every_owner(store: IndexStore) -> None:
    conv.ensure_conversation(store, "chat-1", "alice")
    conv.ensure_conversation(store, "chat-1", "alice")  # already there: kept as it is
    conv.ensure_conversation(store, "chat-1", "bob")
    conv.add_turns(store, "chat-1", [conv.Turn("user", "alice's")], 10, "alice")
    assert [t.content for t in conv.conversation_turns(store, "chat-1", "bob")] == []
    assert [t.content for t in conv.conversation_turns(store, "chat-1", "alice")] == ["alice's"]
    with pytest.raises(conv.ConversationNotFound):
        conv.conversation_turns(store, "chat-1", "carol")
    assert conv.delete_conversation(store, "chat-1", "bob")
    assert not conv.delete_conversation(store, "chat-1", "bob")
    assert [t.content for t in conv.conversation_turns(store, "chat-1", "alice")] == ["alice's"]
    conv.delete_conversation(store, "chat-1", "alice")
    assert int(store._query("SELECT COUNT(*) FROM conversation_turns")[0][0]) == 0  # the turns went too


def test_the_answer_cache_replaces_counts_clears_and_evicts_the_least_recently_used(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Cache(SqliteBackend(store, max_entries=3))
    assert cache.get("ask:a") is None
    for k in "abc":
        cache.set(f"ask:{k}", {"answer": k})
        time.sleep(0.01)
    cache.set("ask:a", {"answer": "A"})  # a replacement is one entry, newly used
    assert cache.backend.size() == 3 and cache.get("ask:a") == {"answer": "A"}
    monkeypatch.setattr(conv, "TOUCH_EVERY", -1.0)  # every hit refreshes its place
    time.sleep(0.01)
    assert cache.get("ask:b") == {"answer": "b"}
    time.sleep(0.01)
    cache.set("ask:d", {"answer": "d"})  # c is the least recently used now
    assert conv.cache_get(store, "ask:c") is None
    assert {k: conv.cache_get(store, f"ask:{k}") is not None for k in "abd"} == {
        "a": True,
        "b": True,
        "d": True,
    }
    assert cache.stats()["entries"] == 3 and cache.stats()["hits"] == 2
    assert cache.clear() == 3 and conv.cache_count(store) == 0


def test_the_answer_cache_is_shared_by_two_store_objects_on_one_database(
    store: IndexStore, second: IndexStore
) -> None:
    conv.cache_put(store, "search:x", '{"v": 1}', 10)
    assert conv.cache_get(second, "search:x") == '{"v": 1}'
    conv.cache_put(second, "search:x", '{"v": 2}', 10)
    assert conv.cache_get(store, "search:x") == '{"v": 2}' and conv.cache_count(store) == 1


# -- the monitor's tables ---------------------------------------------------------------------------


def test_a_lease_is_renewed_by_its_holder_refused_to_others_and_taken_over_once_expired(
    store: IndexStore,
) -> None:
    m = MonitorStore(store)
    assert m.lease("monitor") is None
    assert m.take_lease("monitor", "a", 30, now=1000.0)
    assert not m.take_lease("monitor", "b", 30, now=1010.0)
    assert m.take_lease("monitor", "a", 30, now=1020.0)
    assert m.lease("monitor") == {"holder": "a", "acquired_at": 1000.0, "expires_at": 1050.0}
    assert not m.take_lease("monitor", "b", 30, now=1049.0)
    assert m.take_lease("monitor", "b", 30, now=1051.0)
    assert m.lease("monitor") == {"holder": "b", "acquired_at": 1051.0, "expires_at": 1081.0}
    m.release_lease("monitor", "a")  # not the holder: nothing happens
    assert m.lease("monitor") is not None
    m.release_lease("monitor", "b")
    assert m.lease("monitor") is None


def test_two_monitors_asking_for_a_free_lease_at_once_get_it_once(
    store: IndexStore, second: IndexStore
) -> None:
    now = time.time()
    got = race(
        lambda: MonitorStore(store).take_lease("monitor", "a", 30, now=now),
        lambda: MonitorStore(second).take_lease("monitor", "b", 30, now=now),
    )
    assert sorted(got) == [False, True]


def test_samples_are_thinned_to_five_minute_and_hourly_means_and_old_means_go(store: IndexStore) -> None:
    m = MonitorStore(store)
    day = 86400.0
    now = 400 * day
    old = now - 3 * day  # a whole 5-minute bucket, three days old
    m.add_samples([(old + i * 30, {"rss_mb": 100 + i, "rss_max": i, "state": f"s{i}"}) for i in range(10)])
    m.add_sample(now - 10, {"rss_mb": 7})
    m.add_samples([(now - 100 * day + i * 300, {"rss_mb": 1.0}) for i in range(3)])  # 5-minute means
    with store._write() as db:
        db.execute("UPDATE monitor_samples SET resolution=? WHERE at < ?", (FIVE_MIN, now - 50 * day))
        db.execute(
            "INSERT INTO monitor_samples (at, resolution, figures) VALUES (?, ?, ?)", (1.0, HOURLY, "{}")
        )
    assert m.sample_counts() == {RAW: 11, FIVE_MIN: 3, HOURLY: 1}
    done = m.thin(now, retention_days=30)
    assert done == {"five_min": 10, "hourly": 3, "deleted": 1}
    assert m.sample_counts() == {RAW: 1, FIVE_MIN: 1, HOURLY: 1}
    (mean,) = m.samples(old - 1, FIVE_MIN, until=old + 300)
    assert mean["rss_mb"] == 104.5 and mean["rss_max"] == 9 and mean["state"] == "s9"
    assert mean["samples"] == 10 and old <= mean["at"] < old + 300
    assert [s["rss_mb"] for s in m.samples(0, until=now)] == [1.0, 104.5, 7]
    latest = m.latest_sample()
    assert latest is not None and latest["at"] == now - 10 and latest["rss_mb"] == 7
    assert m.thin(now, retention_days=30) == {"five_min": 0, "hourly": 0, "deleted": 0}


def test_an_alert_fires_once_per_rule_and_severity_resolves_and_fires_anew(store: IndexStore) -> None:
    m = MonitorStore(store)
    first, made = m.fire("disk", "critical", "disk 95% full", 95.0, 90.0, rollback=True)
    assert made and first.state == "firing" and first.rollback is True and first.value == 95.0
    again, made = m.fire("disk", "critical", "disk 96% full", 96.0, 90.0, rollback=True)
    assert not made and again.id == first.id
    warning, made = m.fire("disk", "warning", "disk 96% full", 96.0, 80.0, rollback=False)
    assert made and warning.id != first.id and warning.rollback is False
    current = m.open_alert("disk", "critical")
    assert current is not None and current.value == 96.0 and current.summary == "disk 96% full"
    assert {(a.rule, a.severity) for a in m.open_alerts()} == {("disk", "critical"), ("disk", "warning")}
    acked = m.acknowledge(first.id, "sam", "on it")
    assert acked is not None and acked.acked_by == "sam" and acked.ack_note == "on it"
    assert m.acknowledge(10_000, "sam", "") is None
    m.notified(first.id, 123.0)
    resolved = m.resolve(first.id, "back to 70%")
    assert resolved is not None and resolved.state == "resolved" and resolved.resolved_at is not None
    assert resolved.notifications == 1 and resolved.last_notified_at == 123.0
    assert m.resolve(first.id) is None
    m.add_event(first.id, "note", "checked")
    assert [e["event"] for e in m.events(first.id)] == ["firing", "acknowledged", "resolved", "note"]
    assert m.events(first.id)[2]["detail"] == "back to 70%"
    anew, made = m.fire("disk", "critical", "disk 99% full", 99.0, 90.0, rollback=True)
    assert made and anew.id not in (first.id, warning.id)
    assert [a.id for a in m.alerts(state="resolved")] == [first.id]
    assert [a.id for a in m.alerts()] == [anew.id, warning.id, first.id]
    assert [a.id for a in m.alerts(limit=1)] == [anew.id]
    alert = m.alert(first.id)
    assert alert is not None and alert.to_dict()["state"] == "resolved" and m.alert(10_000) is None


def test_two_monitors_firing_the_same_alert_at_once_open_it_once(
    store: IndexStore, second: IndexStore
) -> None:
    for round_ in range(3):
        rule = f"rule-{round_}"
        out = race(
            *(
                (lambda s=s, r=rule: MonitorStore(s).fire(r, "warning", "high", 1.0, 0.5, rollback=False))
                for s in [store, second, store, second]
            )
        )
        assert sorted(made for _, made in out) == [False, False, False, True]
        assert len({alert.id for alert, _ in out}) == 1
    opened = MonitorStore(store).open_alerts()
    assert sorted(a.rule for a in opened) == ["rule-0", "rule-1", "rule-2"]
    assert all(len(MonitorStore(store).events(a.id)) == 1 for a in opened)


def test_the_outbox_keeps_what_is_due_retries_later_and_records_delivery_or_giving_up(
    store: IndexStore,
) -> None:
    m = MonitorStore(store)
    alert, _ = m.fire("errors", "critical", "5xx", 0.2, 0.1, rollback=False)
    for alert_id, channel, event, payload in [
        (alert.id, "ops-mail", "firing", {"summary": "5xx"}),
        (alert.id, "chat", "firing", {"summary": "5xx"}),
        (None, "chat", "test", {}),
    ]:
        m.queue_delivery(alert_id, channel, event, payload)
        time.sleep(0.002)  # due in the order queued
    now = time.time() + 1
    due = m.due_deliveries(now)
    assert [(d.channel, d.event, d.attempts) for d in due] == [
        ("ops-mail", "firing", 0),
        ("chat", "firing", 0),
        ("chat", "test", 0),
    ]
    assert due[0].payload == {"summary": "5xx"} and due[0].alert_id == alert.id and due[2].alert_id is None
    assert len(m.due_deliveries(now, limit=1)) == 1
    mail, chat, test = due
    m.delivered(mail.id)
    m.delivery_failed(chat.id, "timed out", retry_at=now + 60)
    m.delivery_failed(test.id, "no such channel", retry_at=None)
    assert m.due_deliveries(now) == []
    (retry,) = m.due_deliveries(now + 61)
    assert retry.id == chat.id and retry.attempts == 1
    m.delivered(chat.id)
    assert m.due_deliveries(now + 10_000) == []
    rows = m.deliveries(alert.id)
    assert [(r["channel"], r["attempts"], r["error"]) for r in rows] == [
        ("ops-mail", 1, None),
        ("chat", 2, None),
    ]
    assert all(r["delivered_at"] is not None and r["gave_up_at"] is None for r in rows)
    gave_up = store._query("SELECT attempts, error, gave_up_at FROM alert_deliveries WHERE id=?", (test.id,))[
        0
    ]
    assert gave_up[0] == 1 and gave_up[1] == "no such channel" and gave_up[2] is not None


# -- unit vectors -------------------------------------------------------------------------------------


def test_unit_vectors_are_kept_as_float16_the_first_written_wins_and_the_oldest_go_first(
    store: IndexStore,
) -> None:
    rng = np.random.default_rng(3)
    vecs = {
        unitvectors.digest("model:64", f"sentence {i}"): rng.standard_normal(8).astype(np.float32)
        for i in range(5)
    }
    digests = list(vecs)
    unitvectors.save(store, {d: vecs[d] for d in digests[:3]}, max_entries=10)
    unitvectors.save(store, {digests[0]: np.zeros(8, np.float32)}, max_entries=10)  # already kept
    loaded = unitvectors.load(store, [*digests, "unknown"])
    assert set(loaded) == set(digests[:3])
    for d in digests[:3]:
        assert loaded[d].dtype == np.float32
        np.testing.assert_allclose(loaded[d], vecs[d].astype(np.float16).astype(np.float32))
    unitvectors.save(store, {d: vecs[d] for d in digests[3:]}, max_entries=3)
    assert set(unitvectors.load(store, digests)) == set(digests[2:])
    assert unitvectors.load(store, []) == {}
    assert unitvectors.clear(store) == 3 and unitvectors.load(store, digests) == {}


def test_unit_vectors_are_read_in_batches_past_five_hundred(store: IndexStore) -> None:
    items = {unitvectors.digest("m", str(i)): np.full(4, i, np.float32) for i in range(1200)}
    unitvectors.save(store, items, max_entries=5000)
    loaded = unitvectors.load(store, list(items))
    assert len(loaded) == 1200 and loaded[unitvectors.digest("m", "1100")][0] == 1100


# -- rate-limit hits ----------------------------------------------------------------------------------


def test_rate_limit_hits_are_one_budget_for_two_store_objects_on_one_database(
    store: IndexStore, second: IndexStore
) -> None:
    a, b = StoreCounters(store), StoreCounters(second)
    first = a.hit("key/k1/read", 3, 60.0, 60.0)
    assert first[0] and first[1] == 2 and first[2] == pytest.approx(time.time() + 60, abs=2)
    assert b.hit("key/k1/read", 3, 60.0, 60.0)[:2] == (True, 1)
    assert a.hit("key/k1/read", 3, 60.0, 60.0)[:2] == (True, 0)
    refused = b.hit("key/k1/read", 3, 60.0, 60.0)
    assert refused[:2] == (False, 0) and refused[2] == pytest.approx(first[2], abs=0.01)
    assert a.hit("key/k2/read", 3, 60.0, 60.0)[:2] == (True, 2)  # another identity, another budget


def test_rate_limit_hits_leave_the_window_and_old_rows_are_pruned(
    store: IndexStore, second: IndexStore
) -> None:
    a = StoreCounters(store)
    assert a.hit("x", 1, 0.3, 0.3)[0]
    assert not a.hit("x", 1, 0.3, 0.3)[0]
    time.sleep(0.4)
    assert StoreCounters(second).hit("x", 1, 0.3, 0.3)[0]  # prunes too: its first charge
    assert a.hit("y", 5, 0.3, 0.3)[0]
    time.sleep(0.4)
    StoreCounters(second).hit("z", 5, 0.3, 0.3)
    left = store._query("SELECT identity FROM rate_limit_hits ORDER BY identity")
    assert [r[0] for r in left] == ["z"]


def test_many_charges_racing_on_two_store_objects_allow_exactly_the_budget(
    store: IndexStore, second: IndexStore
) -> None:
    a, b = StoreCounters(store), StoreCounters(second)
    out = race(*((lambda c=c: c.hit("key/race/ask", 5, 60.0, 60.0)) for c in [a, b] * 6))
    assert sum(1 for allowed, _, _ in out if allowed) == 5


def test_counters_that_open_their_store_on_first_use_open_it_once_and_close_it(
    store: IndexStore, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    opened: list[IndexStore] = []

    def opener() -> IndexStore:
        opened.append(open_backend(backend, tmp_path, request))
        return opened[-1]

    counters = StoreCounters(opener)
    assert not opened
    assert counters.hit("k", 2, 60.0, 60.0)[:2] == (True, 1)
    assert counters.hit("k", 2, 60.0, 60.0)[:2] == (True, 0)
    assert len(opened) == 1
    assert not StoreCounters(store).hit("k", 2, 60.0, 60.0)[0]
    counters.close()
    assert StoreCounters(store).hit("other", 2, 60.0, 60.0)[0]  # the given store is left open


# -- where the limiter counts -----------------------------------------------------------------------------


def limiter_settings(tmp_path: Path, url: str | None, **server: Any) -> Settings:
    database = {"url": url} if url else {}
    return Settings(data_dir=tmp_path, database=database, server={"run_jobs": False, **server})  # type: ignore[arg-type]


def test_a_limiter_with_a_database_url_counts_in_the_postgresql_table_shared_by_every_replica(
    tmp_path: Path, pg_url: str
) -> None:
    replicas = [Limiter(limiter_settings(tmp_path, pg_url)) for _ in range(2)]
    assert all(isinstance(r.table, StoreCounters) for r in replicas)
    assert "***" in replicas[0].where or "@" not in pg_url
    limit = parse("3/minute")

    async def charges() -> list[bool]:
        return [(await replicas[i % 2].charge(limit, "key", "k1", "read")).allowed for i in range(5)]

    assert anyio.run(charges) == [True, True, True, False, False]
    for r in replicas:
        assert r.table is not None
        r.table.close()


def test_a_limiter_without_a_database_url_keeps_the_sqlite_file_or_memory_as_before(tmp_path: Path) -> None:
    assert Limiter(limiter_settings(tmp_path, None)).table is None
    settings = limiter_settings(tmp_path, None, workers=2)
    table = Limiter(settings).table
    assert isinstance(table, SharedCounters) and table.path == settings.database_path


def test_a_limiter_whose_postgresql_server_is_down_counts_in_memory_and_never_shows_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "postgresql://oaa:hunter2secret@127.0.0.1:1/oaa"
    limiter = Limiter(limiter_settings(tmp_path, url))
    limit = parse("2/minute")

    async def charges() -> list[bool]:
        return [(await limiter.charge(limit, "key", "k1", "read")).allowed for _ in range(3)]

    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        assert anyio.run(charges) == [True, True, False]
    assert "hunter2secret" not in caplog.text and "cannot count in the database" in caplog.text
