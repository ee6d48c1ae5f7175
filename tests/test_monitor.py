"""The monitor on real parts: `serve --workers 4` on one data directory with a language model server that
hangs, a webhook receiver and an SMTP server on loopback; and in-process monitors over real index files for
rules, retention, maintenance muting, log errors and delivery retries."""

from __future__ import annotations

import email
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller

from obsidian_ai_agent.config import ConfigError, load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.ops import alerts, maintenance
from obsidian_ai_agent.ops.monitor import Monitor
from obsidian_ai_agent.ops.rules import evaluate, steady_growth, still_firing
from obsidian_ai_agent.store.monitoring import FIVE_MIN, HOURLY, RAW, MonitorStore

from .conftest import copy_tree, wait_for
from .openai_server import free_port

# -- loopback servers the monitor talks to ---------------------------------------------------------------


class Receiver:
    """A loopback HTTP server: records JSON bodies POSTed to it; `/v1/models` answers like an
    OpenAI-compatible server and `/v1/chat/completions` hangs (a model server that stopped answering)."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": "hang", "object": "model"}]})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/v1/chat"):
                    outer.release.wait(30)
                    self._json(503, {"error": "released"})
                    return
                outer.bodies.append({"path": self.path, **json.loads(body)})
                self._json(200, {"ok": True})

            def _json(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: as meant
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd on loopback; keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content)
                msg["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
                outer.messages.append(msg)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def close(self) -> None:
        self.controller.stop()


# -- serve --workers 4 ------------------------------------------------------------------------------------


class Team:
    """`obsidian-ai-agent serve --workers 4` on a copy of the indexed docs vault, monitoring every 1 s,
    with an LLM server that hangs, and alerts going to a webhook, Slack-style webhook and email."""

    WORKERS = 4

    def __init__(self, data: Path, hooks: Receiver, mail: Mailbox) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # One client for the test's requests (building one costs ~0.1-0.2 s of CPU, which the polling
        # loops took from the four workers); `Connection: close` keeps one connection per request.
        self.http = httpx.Client(timeout=30, headers={"Connection": "close"})
        config = {
            "llm": {"provider": "openai", "base_url": hooks.url + "/v1", "model": "hang", "timeout": 1.0},
            "server": {"rate_limits": {"enabled": False}},
            "logging": {"file": "service.log"},
            "monitor": {
                "enabled": True,
                "interval_s": 1.0,
                "lease_s": 3.0,
                "no_data_s": 4.0,
                # Only the latency rule is wanted here; the other defaults stay (none of them holds).
                # The test's own quick reads share the intervals with the slow answers: p99 and a few
                # seconds of keep_firing_for keep one interval of only quick reads from resolving it.
                "rules": {
                    "latency_warning": {
                        "metric": "latency_p99_s",
                        "threshold": 0.8,
                        "for": 0,
                        "keep_firing_for": 3,
                    }
                },
                "channels": [
                    {"name": "hook", "type": "webhook", "url": hooks.url + "/hook/secret-token"},
                    {"name": "slack", "type": "slack", "url": hooks.url + "/services/T0/B0/secret-token"},
                    {
                        "name": "mail",
                        "type": "email",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": mail.port,
                        "security": "none",
                        "sender": "oaa@example.org",
                        "recipients": ["ops@example.org", "oncall@example.org"],
                    },
                ],
            },
        }
        (data / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        env = {**os.environ, "OAA_DATA_DIR": str(data)}
        env.pop("OAA_MONITOR__ENABLED", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "obsidian_ai_agent", "serve", "--port", str(self.port), "--workers", "4"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self) -> None:
        log = self.data / "service.log"

        def started() -> bool:
            assert self.proc.poll() is None, "serve exited"
            if not log.exists():
                return False
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
            return sum(x["message"] == "Application startup complete." for x in lines) >= self.WORKERS

        wait_for(started, "four workers started", 180)
        self.key = (self.data / "admin.key").read_text().strip()

    def get(self, path: str) -> Any:
        r = self.http.get(self.url + path, headers={"X-API-Key": self.key})
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def team(
    tmp_path_factory: pytest.TempPathFactory, docs_index: Path
) -> Iterator[tuple[Team, Receiver, Mailbox]]:
    hooks, mail = Receiver(), Mailbox()
    data = copy_tree(docs_index, tmp_path_factory.mktemp("team") / "data")
    service = Team(data, hooks, mail)
    try:
        service.wait_ready()
        yield service, hooks, mail
    finally:
        service.stop()
        hooks.close()
        mail.close()


def holder_pid(service: Team) -> int | None:
    holder = service.get("/api/monitor")["holder"]
    return int(holder["holder"].split(":")[1]) if holder else None


def latency_alerts(service: Team) -> list[dict[str, Any]]:
    return [a for a in service.get("/api/health/alerts")["recent"] if a["rule"] == "latency_warning"]


def test_slow_answers_from_a_hanging_model_raise_one_alert_across_four_workers_and_it_resolves_by_itself(
    team: tuple[Team, Receiver, Mailbox],
) -> None:
    service, hooks, mail = team
    stop = threading.Event()

    def asker(n: int) -> None:  # questions differ, so none is answered from the cache
        i = 0
        while not stop.is_set():
            i += 1
            service.http.post(
                service.url + "/api/ask",
                json={"question": f"How do I filter tasks by due date? ({n}.{i})"},
                headers={"X-API-Key": service.key},
                timeout=60,
            )

    with ThreadPoolExecutor(4) as pool:
        for n in range(4):
            pool.submit(asker, n)
        try:
            firing = wait_for(
                lambda: [a for a in latency_alerts(service) if a["state"] == "firing"], "the latency alert"
            )
            # Every worker runs a monitor thread, one holds the lease: one alert, not four.
            time.sleep(3)
            assert len(latency_alerts(service)) == 1
            detailed = service.get("/api/health/detailed")
            assert [a["rule"] for a in detailed["alerts"]].count("latency_warning") == 1
            alert_id = firing[0]["id"]
            ack = httpx.post(
                f"{service.url}/api/health/alerts/{alert_id}/acknowledge",
                json={"by": "Ana", "note": "the model server is being restarted"},
                headers={"X-API-Key": service.key},
                timeout=30,
            )
            assert ack.status_code == 200, ack.text
            assert (ack.json()["acked_by"], ack.json()["ack_note"]) == (
                "Ana",
                "the model server is being restarted",
            )
        finally:
            stop.set()
    resolved = wait_for(
        lambda: [a for a in latency_alerts(service) if a["state"] == "resolved"], "the alert resolved"
    )
    assert len(latency_alerts(service)) == 1 and resolved[0]["id"] == alert_id

    # The firing and the resolved message reached every channel.
    def arrived() -> bool:
        events = [(b["path"].split("/")[1], b.get("event") or b.get("text", "")[:8]) for b in hooks.bodies]
        return ("hook", "resolved") in events and sum("RESOLVED" in s for s in mail.subjects()) >= 1

    wait_for(arrived, "the resolved messages", 30)
    plain = [b for b in hooks.bodies if b["path"].startswith("/hook")]
    assert [b["event"] for b in plain] == ["firing", "resolved"]
    assert plain[0]["alert"]["rule"] == "latency_warning" and plain[0]["alert"]["severity"] == "warning"
    slack = [b for b in hooks.bodies if b["path"].startswith("/services")]
    assert len(slack) == 2 and "FIRING" in slack[0]["text"] and "RESOLVED" in slack[1]["text"]
    subjects = mail.subjects()
    assert len(subjects) == 2 and "FIRING" in subjects[0] and "RESOLVED" in subjects[1], subjects
    assert all(m["X-Envelope-To"] == "ops@example.org,oncall@example.org" for m in mail.messages)
    history = service.get(f"/api/health/alerts/{alert_id}")
    assert [e["event"] for e in history["events"]] == ["firing", "acknowledged", "resolved"]
    assert {d["channel"] for d in history["deliveries"] if d["delivered_at"]} == {"hook", "slack", "mail"}
    # The secret webhook path never reaches an API response.
    assert (
        "secret-token"
        not in httpx.get(service.url + "/api/config", headers={"X-API-Key": service.key}, timeout=30).text
    )
    assert "secret-token" not in json.dumps(service.get("/api/monitor"))


def test_the_monitor_is_taken_over_when_the_worker_holding_it_is_killed(
    team: tuple[Team, Receiver, Mailbox],
) -> None:
    service, _, _ = team
    first = wait_for(lambda: holder_pid(service), "a monitor holder")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (p := holder_pid(service)) and p != first and p, "another worker holds it", 60)
    assert second != first
    before = service.get("/api/monitor")["last_sample_at"]
    wait_for(lambda: service.get("/api/monitor")["last_sample_at"] > before, "new samples")
    assert service.get("/api/monitor/samples?window=1h")["samples"]


# -- in-process monitors ------------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An empty data dir: these monitors need no notes (the component checks are off or do not matter)."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def engine_for(data: Path, embedder: Any, **monitor: Any) -> Engine:
    s = load_settings(data_dir=data, monitor={"enabled": True, "interval_s": 0.5, **monitor})
    return Engine(s, embedder=embedder)


def test_a_rule_with_a_for_duration_fires_only_once_its_condition_has_held_that_long() -> None:
    s = load_settings(monitor={"rules": {"cpu_warning": {"for": "2m"}}})
    rule = s.monitor.rules["cpu_warning"]
    at = [{"at": t, "cpu_percent": 90.0} for t in range(0, 150, 30)]
    assert not evaluate("cpu_warning", rule, at[:4]).holds  # 90 s of it
    assert evaluate("cpu_warning", rule, at).holds  # 120 s
    broken = [*at[:3], {"at": 90, "cpu_percent": 10.0}, *at[4:]]
    assert not evaluate("cpu_warning", rule, broken).holds
    # A sample without the figure neither breaks the run nor ends it, until the figure is too old.
    gap = [*at[:3], {"at": 90}, *at[4:]]
    assert evaluate("cpu_warning", rule, gap).holds
    assert evaluate("cpu_warning", rule, [*at, {"at": 400}], now=400, no_data_s=300).holds
    assert not evaluate("cpu_warning", rule, [*at, {"at": 500}], now=500, no_data_s=300).holds
    # An open alert stays open through a dip shorter than keep_firing_for, and through missing figures.
    s = load_settings(monitor={"rules": {"cpu_warning": {"keep_firing_for": 60}}})
    keep = s.monitor.rules["cpu_warning"]
    dip = [*at, {"at": 150, "cpu_percent": 10.0}]
    assert still_firing(keep, dip, now=150, no_data_s=300)
    assert not still_firing(keep, [*dip, {"at": 240, "cpu_percent": 10.0}], now=240, no_data_s=300)
    assert still_firing(keep, [*at, {"at": 200}], now=200, no_data_s=300)
    assert not still_firing(keep, [*at, {"at": 500}], now=500, no_data_s=300)
    verdict = evaluate("cpu_warning", rule, at)
    assert verdict.summary == "CPU at 90% (over 85%)"


def test_memory_that_rises_steadily_is_a_leak_and_one_step_up_is_not() -> None:
    ramp = [(t * 60.0, 400 + t * 2.0 + (t % 3) * 0.1) for t in range(61)]
    assert steady_growth(ramp, 3600) == pytest.approx(120, rel=0.05)
    step = [(t * 60.0, 400.0 if t < 30 else 700.0) for t in range(61)]
    assert steady_growth(step, 3600) == 0.0
    assert steady_growth(ramp[:20], 3600) == 0.0  # not an hour of it yet


def test_a_bad_rule_in_the_settings_stops_start_up_with_the_field_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"monitor\.rules\.cpu_warning\.metric"):
        load_settings(monitor={"rules": {"cpu_warning": {"metric": "cpu_pct"}}})
    with pytest.raises(ConfigError, match=r"monitor\.rules\.disk_warning\.for"):
        load_settings(monitor={"rules": {"disk_warning": {"for": "soon"}}})
    (tmp_path / "config.yaml").write_text("monitor:\n  channels:\n    - {name: mail, type: email}\n")
    run = subprocess.run(
        [sys.executable, "-m", "obsidian_ai_agent", "serve"],
        env={**os.environ, "OAA_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "monitor.channels" in run.stderr and "needs smtp_host, sender, recipients" in run.stderr


def test_samples_older_than_a_day_are_thinned_to_five_minute_and_then_hourly_means(
    data: Path, embedder: Any
) -> None:
    with engine_for(data, embedder, retention_days=2) as engine:
        store = MonitorStore(engine.store)
        now = time.time()
        # Four days of a sample every 30 s.
        store.add_samples(
            [
                (now - 4 * 86400 + i * 30, {"cpu_percent": float(i % 10), "rss_mb_max": float(i)})
                for i in range(11520)
            ]
        )
        store.thin(now, retention_days=2)
        counts = store.sample_counts()
        assert counts[RAW] <= 2880 + 10 and counts[FIVE_MIN] <= 300 and 0 < counts[HOURLY] <= 49
        hourly = store.samples(0, HOURLY)
        full = [h for h in hourly if h["samples"] == 120]  # the first and last hours are partial
        assert len(full) >= len(hourly) - 2
        assert all(h["cpu_percent"] == pytest.approx(4.5) for h in full)
        # `*_max` figures keep the largest value: here the last sample's of each hour, 120 samples apart.
        assert {b["rss_mb_max"] - a["rss_mb_max"] for a, b in itertools.pairwise(full)} == {120.0}
        # The 30-day graph reads every resolution, oldest first.
        month = alerts.samples(engine, "30d")["samples"]
        assert [s["at"] for s in month] == sorted(s["at"] for s in month) and len(month) > 1000


def test_an_alert_is_muted_in_maintenance_and_sent_once_maintenance_ends(data: Path, embedder: Any) -> None:
    with engine_for(data, embedder, rules={"disk_warning": {"threshold": 1}}) as engine:
        maintenance.turn_on(engine, "upgrading", None, "test")
        monitor = Monitor(engine)
        monitor.tick()
        store = MonitorStore(engine.store)
        alert = store.open_alert("disk_warning", "warning")
        assert alert is not None and alert.last_notified_at is None
        assert [e["event"] for e in store.events(alert.id)] == ["firing", "muted"]
        assert store.deliveries(alert.id) == []
        maintenance.turn_off(engine)
        monitor.tick()
        assert [d["event"] for d in store.deliveries(alert.id)] == ["firing"]
        monitor.stop()


def test_error_lines_in_the_service_log_raise_an_alert_even_when_requests_succeed(
    data: Path, embedder: Any
) -> None:
    import logging

    from obsidian_ai_agent.observability import setup_logging
    from obsidian_ai_agent.observability.logs import log_path

    s = load_settings(
        data_dir=data, logging={"file": "service.log"}, monitor={"enabled": True, "checks": False}
    )
    setup_logging(s)
    path = log_path(s)
    assert path is not None
    with Engine(s, embedder=embedder) as engine:
        monitor = Monitor(engine, None, path)
        monitor.tick()
        for i in range(40):
            logging.getLogger("obsidian_ai_agent.jobs").error("could not read note %d", i)
        time.sleep(1.0)
        monitor.tick()
        alert = MonitorStore(engine.store).open_alert("error_log_burst", "warning")
        assert alert is not None and alert.value and alert.value > 10
        monitor.stop()


def test_a_channel_that_fails_is_retried_with_backoff_and_its_alert_is_never_lost(
    data: Path, embedder: Any
) -> None:
    port = free_port()  # nothing listens there yet
    channel = {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}
    with engine_for(
        data,
        embedder,
        checks=False,
        rules={"disk_warning": {"threshold": 1}},
        channels=[channel],
        retry_backoff_s=0.2,
    ) as engine:
        monitor = Monitor(engine)
        monitor.tick()
        store = MonitorStore(engine.store)
        alert = store.open_alert("disk_warning", "warning")
        assert alert is not None

        def attempts() -> int:
            monitor.deliver(time.time())
            return store.deliveries(alert.id)[0]["attempts"]

        wait_for(lambda: attempts() >= 2, "two failed attempts", 30)
        d = store.deliveries(alert.id)[0]
        assert d["delivered_at"] is None and d["gave_up_at"] is None and "hook" in d["error"]
        assert f"{port}/hook" not in d["error"]  # the URL is a secret: never in the error
        # The receiver comes up on that port: the next retry delivers.
        hooks = Receiver(port)
        try:
            wait_for(lambda: (monitor.deliver(time.time()), hooks.bodies)[1], "the delivery", 30)
            assert hooks.bodies[0]["alert"]["rule"] == "disk_warning"
            wait_for(lambda: store.deliveries(alert.id)[0]["delivered_at"], "marked delivered", 10)
        finally:
            hooks.close()
        monitor.stop()


def test_the_alert_commands_list_show_acknowledge_export_and_test(
    data: Path, embedder: Any, tmp_path: Path
) -> None:
    log_file = tmp_path / "alerts.jsonl"
    (data / "config.yaml").write_text(
        yaml.safe_dump({"monitor": {"channels": [{"name": "file", "type": "log", "path": str(log_file)}]}})
    )
    with engine_for(data, embedder, checks=False, rules={"disk_warning": {"threshold": 1}}) as engine:
        Monitor(engine).tick()
    env = {**os.environ, "OAA_DATA_DIR": str(data)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "obsidian_ai_agent", "alerts", *args],
            env=env,
            capture_output=True,
            text=True,
        )

    listed = cli("list")
    assert listed.returncode == 0 and "disk_warning" in listed.stdout and "FIRING" in listed.stdout
    ack = cli("ack", "1", "--note", "cleaning <old> [[backups]]", "--by", "Zoë")
    assert ack.returncode == 0, ack.stderr
    shown = json.loads(cli("show", "1", "--json").stdout)
    assert (shown["acked_by"], shown["ack_note"]) == ("Zoë", "cleaning <old> [[backups]]")
    exported = cli("list", "--all", "--csv").stdout.splitlines()
    assert exported[0].startswith("id,rule,severity,state") and "disk_warning" in exported[1]
    assert json.loads(cli("list", "--all", "--json").stdout)[0]["acked_by"] == "Zoë"
    tested = cli("test", "--json")
    assert tested.returncode == 0, tested.stderr
    assert [c["ok"] for c in json.loads(tested.stdout)["channels"]] == [True]
    assert json.loads(log_file.read_text().splitlines()[-1])["event"] == "test"
    assert cli("show", "99").returncode == 1


def test_rotated_logs_older_than_the_retention_are_deleted_and_the_current_ones_kept(tmp_path: Path) -> None:
    from obsidian_ai_agent.ops.monitor import prune_logs

    s = load_settings(data_dir=tmp_path, logging={"file": "service.log"}, monitor={"log_retention_days": 30})
    logs = tmp_path / "logs"
    logs.mkdir()
    files = {
        name: folder / name
        for folder, names in ((tmp_path, ("service.log", "service.log.1", "service.log.2")),
                              (logs, ("alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2")))
        for name in names
    }  # fmt: skip
    for path in files.values():
        path.write_text("x\n")
    old = time.time() - 31 * 86400
    for name in ("service.log.2", "alerts.jsonl.2", "service.log"):
        os.utime(files[name], (old, old))
    with Engine(s) as engine:
        assert prune_logs(engine, time.time()) == 2
    assert sorted(p.name for p in files.values() if p.exists()) == [
        "alerts.jsonl", "alerts.jsonl.1", "service.log", "service.log.1"
    ]  # fmt: skip


def test_a_firing_alert_is_repeated_each_repeat_interval_until_someone_acknowledges_it(
    data: Path, embedder: Any
) -> None:
    with engine_for(
        data, embedder, checks=False, rules={"disk_warning": {"threshold": 1}}, repeat_interval_s=1
    ) as engine:
        monitor = Monitor(engine)
        store = MonitorStore(engine.store)
        monitor.tick()
        alert = store.open_alert("disk_warning", "warning")
        assert alert is not None
        monitor.tick()  # within the repeat interval: nothing new
        time.sleep(1.1)
        monitor.tick()
        assert [d["event"] for d in store.deliveries(alert.id)] == ["firing", "repeat"]
        alerts.acknowledge(engine, alert.id, "Ana", "on it")
        time.sleep(1.1)
        monitor.tick()
        assert [d["event"] for d in store.deliveries(alert.id)] == ["firing", "repeat"]
        assert store.open_alert("disk_warning", "warning") is not None  # acknowledged, still firing
        monitor.stop()
