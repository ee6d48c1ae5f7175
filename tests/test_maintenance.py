"""Maintenance mode, through the admin API, the CLI and a real two-worker server: writes answer 503 with
the operator's message and Retry-After, reads go on, the public status page says Maintenance and then
Operational again, and `parse_until` reads the expected end."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from obsidian_ai_agent import __version__
from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.ops import maintenance
from obsidian_ai_agent.security import keys
from obsidian_ai_agent.store import Store
from obsidian_ai_agent.store.monitoring import MonitorStore
from obsidian_ai_agent.web.status_page import utc_iso, utc_text

from .conftest import copy_tree
from .test_api_observability import free_port, log_lines

# Markup, a wiki link and text beyond ASCII: shown verbatim, escaped on the page.
MESSAGE = "Upgrading the index <b>now</b> — see [[Release notes]] · Wartung läuft ✓"
NOTE = "Getting Started/Tags.md"
PYTHON = [sys.executable, "-m", "obsidian_ai_agent"]


@dataclass
class Service:
    client: TestClient
    engine: Engine
    vault: Path
    data: Path
    admin: dict[str, str]
    writer: dict[str, str]
    reader: dict[str, str]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def service(example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """The app over a private copy of the indexed example vault, with an admin, a write and a read key."""
    engine, vault = example
    monkeypatch.setenv("OAA_SERVER__RATE_LIMITS__ENABLED", "false")
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    monkeypatch.setenv("OAA_MONITOR__ENABLED", "false")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    app = create_app(settings, embedder=engine.embedder)
    with ExitStack() as stack:
        client = stack.enter_context(TestClient(app))
        store = app.state.engine.store
        admin = (settings.data_dir / "admin.key").read_text().strip()
        writer = keys.create_key(store, "writer", ["write"]).secret
        reader = keys.create_key(store, "reader", ["read"]).secret
        yield Service(
            client,
            app.state.engine,
            vault,
            settings.data_dir,
            bearer(admin),
            bearer(writer),
            bearer(reader),
        )


def turn_on(s: Service, until: Any = "2h", message: str = MESSAGE) -> dict[str, Any]:
    r = s.client.post(
        "/api/maintenance", json={"on": True, "message": message, "until": until}, headers=s.admin
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def turn_off(s: Service) -> None:
    r = s.client.post("/api/maintenance", json={"on": False}, headers=s.admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"on": False, "message": None, "until": None, "since": None, "by": None}


def put_note(s: Service, name: str = "Inbox/Maintenance test.md") -> Any:
    """The TestClient's response (its httpx flavour depends on the Starlette version)."""
    return s.client.put(f"/api/notes/{name}", content=b"# written\n", headers=s.writer)


# -- the admin API and the gate -----------------------------------------------------------------------


def test_maintenance_turned_on_through_the_admin_api_refuses_writes_with_503_and_the_verbatim_message(
    service: Service,
) -> None:
    s = service
    before = time.time()
    state = turn_on(s, "2h")
    after = time.time()
    assert state["on"] is True and state["message"] == MESSAGE
    assert before + 7200 <= state["until"] <= after + 7200
    assert before <= state["since"] <= after
    assert state["by"].startswith("api:admin")

    refused = put_note(s)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "maintenance"
    assert refused.json()["error"]["message"] == MESSAGE
    assert refused.json()["error"]["details"]["until"] == state["until"]
    assert 1 <= int(refused.headers["retry-after"]) <= 7200
    assert not (s.vault / "Inbox" / "Maintenance test.md").exists()
    # Every other writing route too, whatever the key.
    for method, path, body, key in [
        ("DELETE", f"/api/notes/{NOTE}", None, s.writer),
        ("POST", "/api/reindex", {}, s.admin),
        ("POST", "/reindex", {}, s.admin),
        ("POST", "/api/index_web", {"url": "https://example.org/"}, s.writer),
        ("POST", "/api/keys", {"name": "new", "scopes": ["read"]}, s.admin),
    ]:
        r = s.client.request(method, path, json=body, headers=key)
        assert (r.status_code, r.json()["error"]["message"]) == (503, MESSAGE), (method, path)
        assert "retry-after" in r.headers
    assert (s.vault / NOTE).exists()


def test_reads_go_on_during_maintenance_including_the_reads_sent_as_post(service: Service) -> None:
    s = service
    turn_on(s, "30m")
    assert s.client.get("/health").status_code == 200
    assert s.client.get("/status", headers=s.reader).status_code == 200
    search = s.client.post("/api/search", json={"query": "recurring tasks"}, headers=s.reader)
    assert search.status_code == 200 and search.json()["results"]
    related = s.client.post("/api/related", json={"path": NOTE}, headers=s.reader)
    assert related.status_code == 200
    ask = s.client.post("/api/ask", json={"question": "How do I make a task repeat?"}, headers=s.reader)
    assert ask.status_code == 200
    assert s.client.post("/ask", json={"question": "What are tags?"}, headers=s.reader).status_code == 200
    assert s.client.get("/api/notes/manifest", headers=s.writer).status_code == 200
    shown = s.client.get("/api/maintenance", headers=s.admin)
    assert shown.status_code == 200 and shown.json()["message"] == MESSAGE


def test_a_read_key_or_a_write_key_cannot_turn_maintenance_on_and_no_key_is_refused_too(
    service: Service,
) -> None:
    s = service
    change = {"on": True, "message": "nope", "until": "1h"}
    assert s.client.post("/api/maintenance", json=change, headers=s.reader).status_code == 403
    assert s.client.post("/api/maintenance", json=change, headers=s.writer).status_code == 403
    assert s.client.post("/api/maintenance", json=change).status_code == 401
    assert s.client.get("/api/maintenance", headers=s.reader).status_code == 403
    assert s.client.get("/api/maintenance", headers=s.admin).json()["on"] is False
    assert put_note(s).status_code == 202


def test_turning_maintenance_off_accepts_writes_again(service: Service) -> None:
    s = service
    turn_on(s, None)
    refused = put_note(s)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == str(maintenance.DEFAULT_RETRY_AFTER)
    assert refused.json()["error"]["details"]["until"] is None
    turn_off(s)
    assert put_note(s).status_code == 202
    assert (s.vault / "Inbox" / "Maintenance test.md").read_bytes() == b"# written\n"
    assert s.client.get("/api/maintenance", headers=s.admin).json()["on"] is False


def test_the_admin_api_refuses_a_bad_end_or_a_missing_message_saying_what_to_send(service: Service) -> None:
    s = service
    for body, said in [
        ({"on": True, "message": "x", "until": "next tuesday"}, "neither a time nor a duration"),
        ({"on": True, "message": "x", "until": "2001-01-01T00:00:00Z"}, "in the past"),
        ({"on": True, "message": "x", "until": 1000.0}, "in the past"),
        ({"on": True, "until": "1h"}, "give a message"),
    ]:
        r = s.client.post("/api/maintenance", json=body, headers=s.admin)
        assert r.status_code == 400, body
        assert said in r.json()["error"]["message"]
    too_long = {"on": True, "message": "x" * 501}
    assert s.client.post("/api/maintenance", json=too_long, headers=s.admin).status_code == 422
    assert s.client.get("/api/maintenance", headers=s.admin).json()["on"] is False


def test_maintenance_whose_expected_end_has_passed_ends_by_itself(service: Service) -> None:
    s = service
    now = time.time()
    # As if turned on ten minutes ago, to end a minute ago.
    maintenance.turn_on(s.engine, MESSAGE, now - 60, "cli:test", now=now - 600)
    assert maintenance.current(s.engine) is None
    assert s.client.get("/api/maintenance", headers=s.admin).json()["on"] is False
    assert put_note(s).status_code == 202
    page = s.client.get("/status-page")
    assert "Operational" in page.text and "Maintenance" not in page.text


# -- the public status page -----------------------------------------------------------------------------


def internals(s: Service) -> list[str]:
    return [str(s.data), str(s.data.resolve()), str(s.vault), str(s.vault.resolve()), __version__]


def test_the_status_page_says_maintenance_with_the_message_escaped_and_the_end_then_operational(
    service: Service,
) -> None:
    s = service
    state = turn_on(s, "2h")
    page = s.client.get("/status-page")  # no key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "<title>Maintenance - Service status</title>" in text
    assert html.escape(MESSAGE) in text and "<b>now</b>" not in text
    assert "[[Release notes]]" in text and "Wartung läuft ✓" in text
    assert f'datetime="{utc_iso(state["until"])}"' in text and utc_text(state["until"]) in text
    assert "(in 2 h)" in text or "(in 1 h 59 min)" in text
    assert "Last updated" in text and '<meta http-equiv="refresh" content="60">' in text
    # Nothing from elsewhere, no script, and its own strict policy.
    assert "<script" not in text and "http://" not in text and "https://" not in text
    policies = page.headers.get_list("content-security-policy")
    assert any("style-src 'self'" in p and "script-src" not in p for p in policies)
    css = s.client.get(text.split('<link rel="stylesheet" href="')[1].split('"')[0])
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    # Nothing internal: no path, no version, not who turned it on.
    for secret in [*internals(s), "admin (first start)", state["by"]]:
        assert secret not in text
    as_json = s.client.get("/status-page", headers={"Accept": "application/json"})
    assert as_json.json() == {
        "status": "maintenance",
        "message": MESSAGE,
        "until": state["until"],
        "updated_at": as_json.json()["updated_at"],
    }
    assert state["since"] <= as_json.json()["updated_at"]

    turn_off(s)
    page = s.client.get("/status-page")
    assert "<title>Operational - Service status</title>" in page.text and MESSAGE not in page.text
    assert html.escape(MESSAGE) not in page.text
    after = s.client.get("/status-page", headers={"Accept": "application/json"}).json()
    assert (after["status"], after["message"], after["until"]) == ("operational", None, None)


def test_the_status_page_says_degraded_for_an_open_critical_alert_or_a_component_down_without_internals(
    service: Service,
) -> None:
    s = service
    monitor = MonitorStore(s.engine.store)

    def status() -> str:
        value: str = s.client.get("/status-page", headers={"Accept": "application/json"}).json()["status"]
        return value

    warning, _ = monitor.fire("disk_warning", "warning", "disk at 85% on host-42", 85.0, 80.0, False)
    assert status() == "operational"
    critical, _ = monitor.fire("error_rate_critical", "critical", "5xx at 40% on host-42", 0.4, 0.1, True)
    assert status() == "degraded"
    text = s.client.get("/status-page").text
    assert "<title>Degraded - Service status</title>" in text
    for internal in ["error_rate_critical", "disk_warning", "host-42", "40%", *internals(s)]:
        assert internal not in text
    monitor.resolve(critical.id)
    monitor.resolve(warning.id)
    assert status() == "operational"
    # A component down in the latest sample; a sample from an hour ago says nothing about now.
    monitor.add_sample(time.time() - 3600, {"component_worst": 2})
    assert status() == "operational"
    monitor.add_sample(time.time(), {"component_worst": 1})
    assert status() == "operational"
    monitor.add_sample(time.time() + 0.001, {"component_worst": 2})
    assert status() == "degraded"
    # Maintenance comes first: it explains the trouble.
    turn_on(s, "1h")
    assert status() == "maintenance"


# -- the library --------------------------------------------------------------------------------------


def test_the_cache_reads_the_store_at_most_once_per_ttl_and_sees_a_passed_end_at_once(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    clock = [100.0]
    cache = maintenance.MaintenanceCache(ttl=1.0, clock=lambda: clock[0])
    assert cache.get(engine) is None and cache.reads == 1
    maintenance.turn_on(engine, MESSAGE, None, "cli:test")
    assert cache.get(engine) is None and cache.reads == 1  # within the second: not read again
    clock[0] += 1.0
    on = cache.get(engine)
    assert on is not None and on.message == MESSAGE and cache.reads == 2
    assert maintenance.turn_off(engine) is True and maintenance.turn_off(engine) is False
    cache.clear()
    assert cache.get(engine) is None and cache.reads == 3


def test_turning_maintenance_on_again_keeps_when_it_began_and_changes_the_message(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    first = maintenance.turn_on(engine, "first", None, "cli:a", now=time.time() - 100)
    second = maintenance.turn_on(engine, "second", time.time() + 600, "cli:b")
    assert second.since == first.since and second.message == "second" and second.by == "cli:b"
    assert maintenance.current(engine) == second


NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW + 1800),
        ("2h", NOW + 7200),
        ("90s", NOW + 90),
        ("1d", NOW + 86400),
        ("1h30m", NOW + 5400),
        (" 2H ", NOW + 7200),
        ("2030-01-01T14:30:00Z", NOW + 2.5 * 3600),
        ("2030-01-01T14:30:00+02:00", NOW + 0.5 * 3600),
        (NOW + 60, NOW + 60),
        (None, None),
        ("", None),
    ],
)
def test_parse_until_reads_iso_times_and_durations_from_now(text: Any, expected: float | None) -> None:
    assert maintenance.parse_until(text, now=NOW) == expected


def test_parse_until_takes_a_time_without_a_zone_as_local_time() -> None:
    local = time.mktime((2030, 1, 1, 13, 0, 0, 0, 0, -1))
    assert maintenance.parse_until("2030-01-01 13:00", now=local - 3600) == local
    assert maintenance.parse_until("2030-01-01T13:00:00", now=local - 3600) == local


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("2029-12-31T23:00:00Z", "is in the past"),
        ("2030-01-01T12:00:00Z", "is in the past"),
        (NOW - 1, "is in the past"),
        ("0m", "is zero"),
        ("next tuesday", "is neither a time nor a duration"),
        ("-5m", "is neither a time nor a duration"),
        ("30 minutes", "is neither a time nor a duration"),
        ("400d", "more than a year ahead"),
        (float("nan"), "is not a time"),
        (10**400, "is not a time"),
        ("0001-01-01T00:00:00", "is outside the times this server can use"),
    ],
)
def test_parse_until_refuses_a_past_time_and_unreadable_text_saying_what_to_give(
    text: Any, said: str
) -> None:
    with pytest.raises(ValueError, match=said) as e:
        maintenance.parse_until(text, now=NOW)
    if said != "more than a year ahead":
        assert "30m" in str(e.value) and "ISO 8601" in str(e.value)


# -- the CLI and every worker -------------------------------------------------------------------------


def cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OAA_DATA_DIR": str(data)}
    return subprocess.run([*PYTHON, *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_cli_refuses_an_unreadable_or_past_until_with_exit_2_and_the_reason(tmp_path: Path) -> None:
    proc = cli("maintenance", "on", "--message", "x", "--until", "yesterday", data=tmp_path / "data")
    assert proc.returncode == 2
    assert "--until: 'yesterday' is neither a time nor a duration" in proc.stderr
    assert "30m" in proc.stderr


class Server:
    """`python -m obsidian_ai_agent serve --workers 2` on a loopback port, until both workers are up."""

    def __init__(self, data: Path, vault: Path) -> None:
        self.port = free_port()
        self.log = data / "service.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OAA_")},
            "OAA_DATA_DIR": str(data),
            "OAA_VAULT": str(vault),
            "OAA_LOGGING__FILE": "service.log",
            "OAA_ANSWER__PREPARE_UNIT_VECTORS": "false",
            "OAA_LOGGING__SLOW_REQUESTS": "1000",
            "OAA_SERVER__SLOW_REQUEST_MS": "0",
            "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
            "OAA_SERVER__RUN_JOBS": "false",
            "OAA_MONITOR__ENABLED": "false",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [
                *PYTHON,
                "serve",
                "--no-index",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, "the server exited"
            if self.log.exists():
                started = [x for x in log_lines(self.log) if x["message"] == "Application startup complete."]
                if len(started) >= 2:
                    return
            time.sleep(0.2)
        raise AssertionError("the two workers did not start within 180 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def writes(url: str, key: dict[str, str], names: list[str]) -> list[httpx.Response]:
    """One PUT per name, eight at a time, each on a fresh connection so that both workers take some.

    One client for all of them (`Connection: close` still gives each request its own connection): a
    client per request cost the test process ~0.1-0.2 s of CPU each, taken from the two workers."""
    with httpx.Client(timeout=60, headers={**key, "Connection": "close"}) as client:

        def one(name: str) -> httpx.Response:
            return client.put(f"{url}/api/notes/Inbox/{name}.md", content=b"# w\n")

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, names))


def test_maintenance_turned_on_with_the_cli_refuses_writes_in_every_worker_until_turned_off(
    tmp_path: Path, _example_index: tuple[Path, Path]
) -> None:
    vault_src, data_src = _example_index
    vault = copy_tree(vault_src, tmp_path / "vault")
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.sqlite").write_bytes((data_src / "index.sqlite").read_bytes())
    with Store(data / "index.sqlite") as store:  # the copy's index belongs to the copy of the vault
        store.set_meta("vault_root", str(vault.resolve()))
    server = Server(data, vault)
    try:
        server.wait_ready()
        key = bearer((data / "admin.key").read_text().strip())
        on = cli("maintenance", "on", "--message", MESSAGE, "--until", "1h", "--json", data=data)
        assert on.returncode == 0, on.stderr
        state = json.loads(on.stdout)
        assert state["on"] is True and state["message"] == MESSAGE and state["by"].startswith("cli:")
        shown = json.loads(cli("maintenance", "status", "--json", data=data).stdout)
        assert shown == state
        # A worker's cached state is at most CACHE_TTL old: past that, every worker has read it.
        time.sleep(maintenance.CACHE_TTL + 0.1)
        refused = writes(server.url, key, [f"during-{i}" for i in range(40)])
        assert {r.status_code for r in refused} == {503}
        assert {r.json()["error"]["message"] for r in refused} == {MESSAGE}
        assert all(1 <= int(r.headers["retry-after"]) <= 3600 for r in refused)
        served = httpx.get(
            f"{server.url}/api/performance/tracing/slow-requests?limit=1000", headers=key, timeout=30
        ).json()["requests"]
        pids = {x["pid"] for x in served if x["status"] == 503 and "during-" in x["path"]}
        assert len(pids) == 2, "both workers refused writes"
        page = httpx.get(f"{server.url}/status-page", timeout=30).text
        assert html.escape(MESSAGE) in page and "Maintenance" in page

        off = cli("maintenance", "off", "--json", data=data)
        assert off.returncode == 0, off.stderr
        assert json.loads(off.stdout)["was_on"] is True
        time.sleep(maintenance.CACHE_TTL + 0.1)
        accepted = writes(server.url, key, [f"after-{i}" for i in range(10)])
        assert {r.status_code for r in accepted} == {202}, accepted[0].text
        assert not (vault / "Inbox" / "during-0.md").exists() and (vault / "Inbox" / "after-0.md").exists()
        assert "Operational" in httpx.get(f"{server.url}/status-page", timeout=30).text
    finally:
        server.stop()


def test_the_status_page_keeps_the_line_breaks_of_the_message_and_escapes_each_line() -> None:
    from obsidian_ai_agent.web.status_page import render

    page = render("maintenance", "First <i>line</i>\nsecond & last", None, NOW)
    assert "First &lt;i&gt;line&lt;/i&gt;<br>\nsecond &amp; last" in page
    assert "No end time has been announced yet." in page
