"""Rate limits over HTTP: per key and route group, per client address behind trusted proxies, one count
shared by two uvicorn workers through a real Redis, and failing open when Redis is gone."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import ConfigError, Settings, load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.security import ratelimit
from obsidian_ai_agent.security.keys import create_key
from obsidian_ai_agent.security.ratelimit import client_address, trusted_networks
from obsidian_ai_agent.store import Store

from .redis_server import free_port, redis_server

SEARCH = {"query": "due date", "k": 1, "mode": "keyword"}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings_for(engine: Engine, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(data_dir=engine.settings.data_dir)


def new_key(settings: Settings, name: str, scopes: list[str]) -> str:
    store = Store(settings.database_path)
    try:
        return create_key(store, name, scopes).secret
    finally:
        store.close()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextmanager
def ratelimit_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(ratelimit.__name__)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- per key and group ---------------------------------------------------------------------------------


def test_a_key_gets_429_on_its_fourth_read_in_a_minute_while_another_key_and_other_groups_still_get_through(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    settings = settings_for(engine, monkeypatch, OAA_SERVER__RATE_LIMITS__GROUPS='{"read": "3/minute"}')
    first = new_key(settings, "first", ["read", "admin"])
    second = new_key(settings, "second", ["read"])
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        for n in range(1, 4):
            before = time.time()
            r = client.post("/api/search", json=SEARCH, headers=bearer(first))
            assert r.status_code == 200, r.text
            assert r.headers["X-RateLimit-Limit"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == str(3 - n)
            assert before <= int(r.headers["X-RateLimit-Reset"]) <= before + 61

        r = client.post("/api/search", json=SEARCH, headers=bearer(first))
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "rate_limited"
        assert "3 per minute" in error["message"] and "retry in" in error["message"]
        assert error["details"]["group"] == "read"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert error["details"]["retry_after"] == int(r.headers["Retry-After"])
        assert r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert int(r.headers["X-RateLimit-Reset"]) >= time.time()

        # Another key has its own budget; the same key has another budget per group (admin: default).
        r = client.post("/api/search", json=SEARCH, headers=bearer(second))
        assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "2"
        r = client.get("/api/keys", headers=bearer(first))
        assert r.status_code == 200, r.text
        assert r.headers["X-RateLimit-Limit"] == "60" and r.headers["X-RateLimit-Remaining"] == "59"


def test_retry_after_is_long_enough_and_no_longer_than_needed(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    settings = settings_for(
        engine, monkeypatch, OAA_SERVER__RATE_LIMITS__GROUPS='{"read": "2 per 2 seconds"}'
    )
    key = new_key(settings, "k", ["read"])
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        for _ in range(2):
            assert client.post("/api/search", json=SEARCH, headers=bearer(key)).status_code == 200
        refused = client.post("/api/search", json=SEARCH, headers=bearer(key))
        assert refused.status_code == 429
        wait = int(refused.headers["Retry-After"])
        assert 1 <= wait <= 2
        time.sleep(wait)
        assert client.post("/api/search", json=SEARCH, headers=bearer(key)).status_code == 200


def test_switched_off_rate_limits_neither_refuse_nor_add_headers(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    settings = settings_for(
        engine,
        monkeypatch,
        OAA_SERVER__RATE_LIMITS__ENABLED="false",
        OAA_SERVER__RATE_LIMITS__GROUPS='{"read": "1/minute"}',
    )
    key = new_key(settings, "k", ["read"])
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        for _ in range(3):
            r = client.post("/api/search", json=SEARCH, headers=bearer(key))
            assert r.status_code == 200
            assert not any(h in r.headers for h in (*RATE_HEADERS, "Retry-After"))


def test_an_unlimited_group_is_not_counted(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    settings = settings_for(engine, monkeypatch, OAA_SERVER__RATE_LIMITS__GROUPS='{"read": "unlimited"}')
    assert settings.server.rate_limits.groups["admin"] == "60/minute"  # the other groups keep defaults
    key = new_key(settings, "k", ["read"])
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        r = client.post("/api/search", json=SEARCH, headers=bearer(key))
        assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("OAA_SERVER__RATE_LIMITS__GROUPS", '{"read": "3 per fortnight"}', "groups.read"),
        ("OAA_SERVER__RATE_LIMITS__GROUPS", '{"ask": "lots"}', "groups.ask"),
        ("OAA_SERVER__RATE_LIMITS__GROUPS", '{"write": "0/minute"}', "groups.write"),
        ("OAA_SERVER__RATE_LIMITS__GROUPS", '{"read": "1/second;5/minute"}', "groups.read"),
        ("OAA_SERVER__RATE_LIMITS__ANONYMOUS", "sixty a minute", "anonymous"),
    ],
)
def test_a_malformed_limit_fails_at_settings_load_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path)
    message = str(err.value)
    assert f"rate_limits.{field}" in message
    assert "300/minute" in message  # says what a limit looks like


# -- per client address --------------------------------------------------------------------------------


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app on a loopback port in this process (a real socket, real peers)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, proxy_headers=False, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_anonymous_callers_are_limited_per_address_and_x_forwarded_for_counts_only_from_a_trusted_proxy(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    settings = settings_for(
        engine,
        monkeypatch,
        OAA_SERVER__AUTH__ENABLED="false",
        OAA_SERVER__RATE_LIMITS__ANONYMOUS="2/minute",
        OAA_SERVER__TRUSTED_PROXIES='["127.0.0.1", "10.0.0.0/8"]',
    )
    with serve(create_app(settings, embedder=engine.embedder)) as url:
        # 127.0.0.1 is the trusted proxy; 127.0.0.2 is a client that connects directly.
        proxy = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
        direct = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))

        def via_proxy(forwarded: str) -> httpx.Response:
            return proxy.post("/api/search", json=SEARCH, headers={"X-Forwarded-For": forwarded})

        with proxy, direct:
            # Behind the proxy: the client is the right-most address that is not a trusted proxy.
            assert via_proxy("203.0.113.5").status_code == 200
            assert via_proxy("203.0.113.5, 10.1.2.3").status_code == 200  # a second trusted hop
            r = via_proxy("198.51.100.1, 203.0.113.5")  # a forged left-hand entry changes nothing
            assert r.status_code == 429
            assert "address 203.0.113.5" in r.json()["error"]["message"]
            assert r.headers["X-RateLimit-Limit"] == "2" and int(r.headers["Retry-After"]) >= 1
            # Another client behind the same proxy has its own budget.
            r = via_proxy("203.0.113.6")
            assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "1"

            # From an untrusted peer X-Forwarded-For is ignored: a new forged address each time is no escape.
            codes = [
                direct.post("/api/search", json=SEARCH, headers={"X-Forwarded-For": f"203.0.113.{100 + i}"})
                for i in range(3)
            ]
            assert [r.status_code for r in codes] == [200, 200, 429]
            assert "address 127.0.0.2" in codes[2].json()["error"]["message"]


def test_the_client_address_is_read_from_the_right_skipping_trusted_proxies() -> None:
    proxies = trusted_networks(["10.0.0.0/8", "192.0.2.1", "2001:db8:ffff::/48"])

    def client(peer: str, *forwarded: str, prefix: int = 64) -> str:
        return client_address(peer, list(forwarded), proxies, prefix)

    assert client("198.51.100.9", "203.0.113.5") == "198.51.100.9"  # untrusted peer: header ignored
    assert client("10.0.0.1", "203.0.113.5") == "203.0.113.5"
    assert client("10.0.0.1", "203.0.113.5, 10.9.9.9", "192.0.2.1") == "203.0.113.5"  # several headers
    assert client("10.0.0.1", "evil, 203.0.113.5:4711") == "203.0.113.5"  # a port, as some proxies add
    assert client("10.0.0.1", "10.2.2.2, 10.3.3.3") == "10.2.2.2"  # all trusted: the furthest one
    assert client("10.0.0.1", "not-an-address") == "10.0.0.1"  # garbage: stop at the proxy
    assert client("10.0.0.1") == "10.0.0.1"
    assert client("::ffff:10.0.0.1", "203.0.113.7") == "203.0.113.7"  # IPv4-mapped peer
    assert client("2001:db8:ffff::1", "[2001:db8:1:2:3:4:5:6]:443") == "2001:db8:1:2::/64"
    assert client("2001:db8:1:2::9", prefix=128) == "2001:db8:1:2::9"
    assert client("testclient") == "testclient"
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies.*'10\.0\.0\.300'"):
        trusted_networks(["10.0.0.300"])


# -- shared across workers through Redis -------------------------------------------------------------


def serving_pid(workers: list[psutil.Process], server_port: int, client_port: int) -> int | None:
    """The worker holding the server side of the connection from `client_port`."""
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if (
                conn.laddr
                and conn.laddr.port == server_port
                and conn.raddr
                and conn.raddr.port == client_port
            ):
                return worker.pid
    return None


def get(
    port: int, path: str, headers: dict[str, str], workers: list[psutil.Process]
) -> tuple[int, dict[str, str], int | None]:
    """One request on a fresh connection: (status, headers, pid of the worker that served it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        # The connection is still open (keep-alive): find which worker holds it.
        pid = serving_pid(workers, port, conn.sock.getsockname()[1])
        return response.status, {k.lower(): v for k, v in response.getheaders()}, pid
    finally:
        conn.close()


def limit_across_two_workers(engine: Engine, tmp_path: Path, allowed: int, **env_extra: str) -> None:
    """Two uvicorn workers on one port: `allowed` reads pass, then 429s, whichever worker answers."""
    extra = 4
    settings = load_settings(data_dir=engine.settings.data_dir)
    key = new_key(settings, "shared", ["read"])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAA_")}
    env.update(
        OAA_DATA_DIR=str(engine.settings.data_dir),
        OAA_SERVER__RATE_LIMITS__GROUPS=json.dumps({"read": f"{allowed}/minute"}),
        OAA_SERVER__RUN_JOBS="false",
        HF_HUB_OFFLINE="1",
        **env_extra,
    )
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "obsidian_ai_agent.backend:app", "--workers", "2"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers", "--log-level", "info"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Wait until both workers answer (/health is not rate limited).
        deadline = time.monotonic() + 120
        workers: list[psutil.Process] = []
        ready: set[int | None] = set()
        while len(ready - {None}) < 2:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "both workers did not answer within 120 s: " + (tmp_path / "server.log").read_text()[-3000:]
            )
            workers = psutil.Process(server.pid).children()  # the two workers (and a resource tracker)
            try:
                status, _, pid = get(port, "/health", {}, workers)
            except OSError:
                time.sleep(0.2)
                continue
            if status == 200:
                ready.add(pid)

        results = [get(port, "/status", bearer(key), workers) for _ in range(allowed + extra)]
        # The kernel may hand a run of connections to one worker; go on until the other has answered
        # too (with a 429: the count it sees is the shared one, not a fresh one of its own).
        while len({pid for _, _, pid in results}) < 2 and len(results) < allowed + extra + 200:
            results.append(get(port, "/status", bearer(key), workers))
        refused = len(results) - allowed
        statuses = [status for status, _, _ in results]
        assert statuses.count(200) == allowed, statuses
        assert statuses == [200] * allowed + [429] * refused
        served_by = {pid for _, _, pid in results}
        assert None not in served_by and len(served_by) == 2, f"one worker served every request: {served_by}"
        assert {headers["x-ratelimit-limit"] for _, headers, _ in results} == {str(allowed)}
        remaining = [int(headers["x-ratelimit-remaining"]) for _, headers, _ in results]
        assert remaining == [allowed - 1 - n for n in range(allowed)] + [0] * refused
        assert all(int(headers["retry-after"]) >= 1 for _, headers, _ in results[allowed:])
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_one_limit_holds_across_two_uvicorn_workers_sharing_redis(
    example: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, _ = example
    with redis_server(tmp_path / "redis") as redis_url:
        limit_across_two_workers(engine, tmp_path, 6, OAA_REDIS_URL=redis_url)
        # The counts are in Redis, under this service's prefix.
        assert redis.Redis.from_url(redis_url).keys(f"{ratelimit.KEY_PREFIX}*")


def test_without_redis_two_workers_of_one_host_share_one_limit_through_the_index_database(
    example: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, _ = example
    # Before: each worker counted alone, so 2 workers allowed twice what X-RateLimit-Limit said.
    limit_across_two_workers(engine, tmp_path, 6, OAA_SERVER__WORKERS="2")
    store = Store(engine.settings.database_path)
    try:
        assert store._query("SELECT COUNT(*) FROM rate_limit_hits")[0][0] == 6
    finally:
        store.close()


# -- Redis unreachable ------------------------------------------------------------------------------


def test_when_redis_goes_away_requests_are_still_served_counted_per_worker_with_one_warning(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine, _ = example
    with redis_server(tmp_path / "redis") as redis_url:
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        settings = settings_for(
            engine,
            monkeypatch,
            OAA_REDIS_URL=redis_url,
            OAA_SERVER__RATE_LIMITS__GROUPS='{"read": "3/minute"}',
        )
        key = new_key(settings, "k", ["read"])
        app = create_app(settings, embedder=engine.embedder)
        with ratelimit_log() as records, TestClient(app) as client:
            r = client.post("/api/search", json=SEARCH, headers=bearer(key))
            assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "2"
            assert redis.Redis.from_url(redis_url).keys(f"{ratelimit.KEY_PREFIX}*")
            assert records.text() == []
            stop = redis.Redis.from_url(redis_url)
            with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it goes
                stop.shutdown(nosave=True)
            # Fail open: served, counted in this worker's memory from now on.
            statuses = []
            for _ in range(4):
                r = client.post("/api/search", json=SEARCH, headers=bearer(key))
                statuses.append(r.status_code)
                assert all(h in r.headers for h in RATE_HEADERS)
            assert statuses == [200, 200, 200, 429]
        warnings = records.text()
        assert len(warnings) == 1, warnings
        assert f"127.0.0.1:{port}" in warnings[0] and "not reachable" in warnings[0]


def test_an_unreachable_redis_with_a_password_in_its_url_never_shows_the_password(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    port = free_port()  # nothing listens here
    settings = settings_for(
        engine,
        monkeypatch,
        OAA_REDIS_URL=f"redis://:hunter2-secret@127.0.0.1:{port}/0",
        OAA_SERVER__RATE_LIMITS__GROUPS='{"read": "2/minute"}',
    )
    key = new_key(settings, "k", ["read"])
    with ratelimit_log() as records, TestClient(create_app(settings, embedder=engine.embedder)) as client:
        responses = [client.post("/api/search", json=SEARCH, headers=bearer(key)) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    warnings = records.text()
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]
    everything = " ".join(records.text(logging.DEBUG)) + " ".join(r.text + str(r.headers) for r in responses)
    assert "hunter2" not in everything
