"""Logs, metrics and performance routes over real HTTP: JSON lines with request ids, no secret in the log
file, rotation, Prometheus exposition summed across two uvicorn workers, slow requests, cache clear."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import Settings, load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.observability import setup_logging
from obsidian_ai_agent.observability.logs import Redactor, secret_values
from obsidian_ai_agent.security.keys import create_key
from obsidian_ai_agent.store import Store

QUESTION = "how do I add a due date to a task"
NO_LIMITS = {"rate_limits": {"enabled": False}}


@pytest.fixture(autouse=True)
def _detach_log_file(tmp_path: Path) -> Iterator[None]:
    """Tests point the root logger at their own files; leave it writing to stderr only afterwards."""
    yield
    setup_logging(load_settings(data_dir=tmp_path / "after"))


def build(engine: Engine, **overrides: Any) -> tuple[TestClient, Settings, str]:
    """An app on the example index with these settings, and a new admin key for it."""
    overrides["server"] = {**NO_LIMITS, **overrides.get("server", {})}
    settings = load_settings(data_dir=engine.settings.data_dir, **overrides)
    secret = create_key(engine.store, "ops", ["admin"]).secret
    return TestClient(create_app(settings, embedder=engine.embedder)), settings, secret


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def request_lines(path: Path) -> list[dict[str, Any]]:
    return [line for line in log_lines(path) if line["logger"] == "obsidian_ai_agent.access"]


def metric_samples(text: str, name: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def request_count(text: str, route: str) -> float:
    return sum(s.value for s in metric_samples(text, "oaa_http_requests_total") if s.labels["route"] == route)


# -- logs ----------------------------------------------------------------------------------------------------


def test_a_request_is_one_json_log_line_carrying_the_id_the_response_echoes(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    client, settings, secret = build(engine, logging={"file": "logs/service.log"})
    with client:
        r = client.get("/health")
        missing = client.get("/api/jobs/987654", headers={"X-API-Key": secret})
    log_file = settings.data_dir / "logs" / "service.log"
    lines = {line["request_id"]: line for line in request_lines(log_file)}
    line = lines[r.headers["X-Request-ID"]]
    assert {k: line[k] for k in ("level", "method", "route", "path", "status", "key_id")} == {
        "level": "INFO",
        "method": "GET",
        "route": "/health",
        "path": "/health",
        "status": 200,
        "key_id": None,
    }
    assert line["latency_ms"] > 0 and line["ts"].endswith("Z") and line["client"]
    # The route template, not the path; the key's id, never the key.
    job = lines[missing.headers["X-Request-ID"]]
    key_id = secret.split("_")[1]
    assert (job["route"], job["path"], job["status"], job["key_id"]) == (
        "/api/jobs/{job_id}",
        "/api/jobs/987654",
        404,
        key_id,
    )


def test_building_the_app_again_leaves_one_set_of_log_handlers(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    settings = load_settings(data_dir=engine.settings.data_dir, logging={"file": "a.log"})
    for _ in range(3):
        create_app(settings, embedder=engine.embedder)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_obsidian_ai_agent", False)]
    assert len(ours) == 2  # stderr and the file


def test_the_log_file_holds_no_key_and_no_configured_secret(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = example
    llm_secret = "sk-live-4f9a8b7c6d5e4f3a2b1c"
    redis_password = "hunter2-redis-pass"
    monkeypatch.setenv("OAA_LLM__API_KEY", llm_secret)
    monkeypatch.setenv("OAA_EMBEDDING__API_KEY", "embed-secret-0x7e57")
    client, settings, secret = build(engine, logging={"file": "service.log"})
    wrong = "oaa_000000000000_" + "Z" * 43
    with client:
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert client.get("/api/performance/metrics", headers={"X-API-Key": secret}).status_code == 200
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        log = logging.getLogger("obsidian_ai_agent.test")
        # Secrets in the message, in its arguments, in extra fields and in a traceback.
        log.warning("calling the model with key %s", llm_secret)
        log.warning(f"headers were Authorization: Bearer {secret} and X-API-Key: {secret}")
        log.warning("a request", extra={"headers": {"authorization": f"Bearer {secret}", "x-api-key": wrong}})
        log.warning("connecting to redis://:%s@127.0.0.1:6379/0 with password=%s", redis_password, "pw1234")
        try:
            raise RuntimeError(f"the server refused api_key={llm_secret}")
        except RuntimeError:
            log.exception("model call failed")
    text = (settings.data_dir / "service.log").read_text(encoding="utf-8")
    for leaked in (secret, secret.split("_", 2)[2], wrong, llm_secret, "embed-secret-0x7e57", redis_password):
        assert leaked not in text
    assert "pw1234" not in text
    # The lines are there, redacted rather than dropped.
    assert text.count("[REDACTED]") >= 8 and "model call failed" in text and "RuntimeError" in text
    assert len(request_lines(settings.data_dir / "service.log")) == 3


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("{'authorization': 'Basic dXNlcjpwYXNzd29yZA=='}", "dXNlcjpwYXNzd29yZA"),
        ("[(b'x-api-key', b'plain-key-value'), (b'host', b'x')]", "plain-key-value"),
        ("GET /cb?code=1&access_token=tok123456&x=1", "tok123456"),
        ('{"api_key": "sk-abcdef123456"}', "sk-abcdef123456"),
        ("password=hunter2 user=bob", "hunter2"),
        ("llm.api_key: sk-zzz999", "sk-zzz999"),
        ("redis://:pw@localhost:6379/0", ":pw@"),
        ("https://bob:pa55word@example.com/path", "pa55word"),
        ("key oaa_0123456789ab_" + "q" * 43 + " used", "oaa_0123456789ab_"),
        ("the value s3cr3t-from-config leaked", "s3cr3t-from-config"),
    ],
)
def test_redaction_removes_credentials_in_their_usual_shapes(text: str, gone: str) -> None:
    redacted = Redactor(["s3cr3t-from-config"])(text)
    assert gone not in redacted and "[REDACTED]" in redacted


@pytest.mark.parametrize(
    "text", ["POST /api/ask 200 12.5 ms", "max_tokens=512 temperature=0.1", "GET /api/jobs/{job_id} 404"]
)
def test_redaction_leaves_ordinary_lines_alone(text: str) -> None:
    assert Redactor(["s3cr3t-from-config"])(text) == text


def test_every_secret_in_the_settings_is_known_to_the_redactor(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"api_key": "llm-key-1"},
        embedding={"api_key": "emb-key-2"},
        redis_url="redis://user:pass%2Fword@cache:6379/0",
    )
    assert set(secret_values(settings)) == {
        "llm-key-1",
        "emb-key-2",
        "redis://user:pass%2Fword@cache:6379/0",
        "pass/word",
        "user",
    }


def test_the_log_file_rotates_past_max_bytes_keeping_backups_files(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, logging={"file": "app.log", "max_bytes": 2048, "backups": 2})
    setup_logging(settings)
    log = logging.getLogger("obsidian_ai_agent.test")
    for i in range(200):
        log.info("line %03d %s", i, "x" * 80)
    files = sorted(p.name for p in tmp_path.glob("app.log*") if not p.name.endswith(".lock"))
    assert files == ["app.log", "app.log.1", "app.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2048 for f in files)
    assert log_lines(tmp_path / "app.log")[-1]["message"].startswith("line 199 ")
    # Retention: the oldest lines are gone, the newest are kept in order.
    kept = [line["message"][:8] for f in reversed(files) for line in log_lines(tmp_path / f)]
    assert kept == [f"line {i:03d}" for i in range(200 - len(kept), 200)] and len(kept) < 100


WRITER = """
import logging, pathlib, sys, time
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.observability import setup_logging
data = pathlib.Path(sys.argv[1])
setup_logging(load_settings(data_dir=data, logging={"file": "shared.log", "max_bytes": 4096, "backups": 500}))
log = logging.getLogger("writer")
(data / f"ready-{sys.argv[2]}").touch()
while not (data / "go").exists():  # both write at once
    time.sleep(0.01)
for i in range(1000):
    log.info("writer %s line %d %s", sys.argv[2], i, "y" * 100)
"""


def test_two_processes_sharing_the_log_file_rotate_it_once_per_max_bytes_and_lose_no_line(
    tmp_path: Path,
) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name],
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        for name in ("a", "b")
    ]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{n}").exists() for n in "ab") and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    files = [p for p in tmp_path.glob("shared.log*") if not p.name.endswith(".lock")]
    lines = [line for f in files for line in log_lines(f)]
    assert len(lines) == 2000
    line_size = max(len(json.dumps(line, ensure_ascii=False)) + 1 for line in lines)
    rotated = [f for f in files if f.name != "shared.log"]
    # Rotated only when full: a process that had not seen another's rotation would cut tiny files.
    assert rotated and all(4096 - 2 * line_size < f.stat().st_size <= 4096 for f in rotated)


# -- metrics -------------------------------------------------------------------------------------------------


def test_metrics_parse_as_prometheus_text_and_count_the_requests_made(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    client, _, secret = build(engine)
    with client:
        for _ in range(7):
            assert client.get("/health").status_code == 200
        assert client.get("/no/such/route").status_code == 404
        r = client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert request_count(text, "/health") == 7
    assert request_count(text, "(unmatched)") == 1
    histogram = metric_samples(text, "oaa_http_request_duration_seconds_count")
    assert sum(s.value for s in histogram if s.labels["route"] == "/health") == 7
    assert [s.value for s in metric_samples(text, "oaa_http_requests_in_progress")] == [1.0]  # this one
    counts = engine.store.counts()
    assert counts["sources"] > 0
    for name in ("sources", "chunks", "vectors"):
        assert [s.value for s in metric_samples(text, f"oaa_index_{name}")] == [counts[name]]
    jobs = {s.labels["status"]: s.value for s in metric_samples(text, "oaa_jobs")}
    assert set(jobs) >= {"queued", "running", "succeeded", "failed"}


def test_metrics_and_performance_routes_need_an_admin_key(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    client, _, _ = build(engine)
    reader = create_key(engine.store, "reader", ["read"]).secret
    with client:
        for method, path in [
            ("GET", "/metrics"),
            ("GET", "/api/performance/metrics"),
            ("POST", "/api/performance/cache/clear"),
            ("GET", "/api/performance/tracing/slow-requests"),
        ]:
            assert client.request(method, path).status_code == 401
            assert client.request(method, path, headers={"X-API-Key": reader}).status_code == 403


def test_performance_metrics_give_counts_errors_and_percentiles_per_route(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    client, _, secret = build(engine)
    with client:
        for _ in range(20):
            client.get("/health")
        client.post("/api/search", json={"query": "x", "k": 0}, headers={"X-API-Key": secret})
        r = client.get("/api/performance/metrics", headers={"X-API-Key": secret})
    assert r.status_code == 200
    body = r.json()
    routes = {(x["method"], x["route"]): x for x in body["routes"]}
    health = routes[("GET", "/health")]
    assert health["count"] == 20 and health["errors"] == 0
    assert 0 < health["p50_ms"] <= health["p95_ms"] <= health["p99_ms"]
    assert routes[("POST", "/api/search")]["client_errors"] == 1
    assert body["scope"] == "this process" and body["workers"] == 1
    assert body["index"]["sources"] == engine.store.counts()["sources"]
    assert set(body["jobs"]) >= {"queued", "running"}


# -- slow requests -------------------------------------------------------------------------------------------


def test_requests_slower_than_the_threshold_are_kept_newest_first_with_timings(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    client, _, secret = build(engine, server={"slow_request_ms": 0}, logging={"slow_requests": 5})
    with client:
        ids = [client.get("/health").headers["X-Request-ID"] for _ in range(8)]
        r = client.get("/api/performance/tracing/slow-requests", headers={"X-API-Key": secret})
    body = r.json()
    assert r.status_code == 200 and body["threshold_ms"] == 0 and body["keep"] == 5
    kept = body["requests"]
    assert [x["request_id"] for x in kept] == ids[::-1][:5]
    first = kept[0]
    assert (first["route"], first["status"], first["pid"]) == ("/health", 200, os.getpid())
    assert first["latency_ms"] >= first["spans"]["first_byte_ms"] > 0


def test_fast_requests_are_not_kept_as_slow(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    client, _, secret = build(engine, server={"slow_request_ms": 60_000})
    with client:
        client.get("/health")
        r = client.get("/api/performance/tracing/slow-requests", headers={"X-API-Key": secret})
    assert r.status_code == 200 and r.json()["requests"] == []


# -- the cache -----------------------------------------------------------------------------------------------


def test_cache_clear_empties_the_answer_cache_and_hit_rates_count_over_http(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    client, _, secret = build(engine)
    key = {"X-API-Key": secret}
    with client:
        first = client.post("/api/ask", json={"question": QUESTION}, headers=key)
        again = client.post("/api/ask", json={"question": QUESTION}, headers=key)
        assert (first.status_code, first.json()["cached"], again.json()["cached"]) == (200, False, True)
        before = client.get("/api/performance/metrics", headers=key).json()["cache"]
        cleared = client.post("/api/performance/cache/clear", headers=key)
        after = client.get("/api/performance/metrics", headers=key).json()["cache"]
        third = client.post("/api/ask", json={"question": QUESTION}, headers=key)
    assert before["entries"] >= 1 and before["per_kind"]["answer"] == {
        "hits": 1,
        "misses": 1,
        "hit_rate": 0.5,
    }
    assert cleared.status_code == 200
    assert cleared.json() == {
        "cleared": before["entries"],
        "backend": "sqlite",
        "scope": "every worker (the cache is a table in the index)",
    }
    assert after["entries"] == 0 and third.json()["cached"] is False


# -- several workers -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


UVICORN = [sys.executable, "-m", "uvicorn", "obsidian_ai_agent.backend:app"]


class Workers:
    """`python -m uvicorn obsidian_ai_agent.backend:app --workers 2` on a loopback port."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        env = {
            **os.environ,
            "OAA_DATA_DIR": str(data),
            "OAA_LOGGING__FILE": "service.log",
            "OAA_LOGGING__SLOW_REQUESTS": "1000",
            "OAA_SERVER__SLOW_REQUEST_MS": "0",
            "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
            "OAA_SERVER__RUN_JOBS": "false",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [*UVICORN, "--port", str(self.port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, log_file: Path, starts: int) -> None:
        """Until both workers have logged their start (the log has `starts` such lines in all)."""
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, "uvicorn exited"
            if log_file.exists():
                done = [x for x in log_lines(log_file) if x["message"] == "Application startup complete."]
                if len(done) >= starts:
                    return
            time.sleep(0.2)
        raise AssertionError("the workers did not start within 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def hammer(url: str, n: int) -> None:
    """`n` GET /health, eight at a time, each on its own connection so both workers take some.

    One client for all of them: `Connection: close` still makes each request open a connection of its
    own, and the test process does not build a client (and its TLS context, ~0.1-0.2 s of CPU on these
    cores) per request while the two workers wait for the cores."""
    with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:

        def one(_: int) -> int:
            return client.get(url + "/health").status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(one, range(n))) == {200}


def test_metrics_are_summed_across_two_uvicorn_workers_and_start_from_zero_after_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with Store(data / "index.sqlite") as store:
        secret = create_key(store, "ops", ["admin"]).secret
    key = {"X-API-Key": secret}
    log_file = data / "service.log"
    server = Workers(data)
    try:
        server.wait_ready(log_file, 2)
        hammer(server.url, 240)
        # Whichever worker answers, it answers for both.
        scrapes = [httpx.get(server.url + "/metrics", headers=key).text for _ in range(6)]
        figures = httpx.get(server.url + "/api/performance/metrics", headers=key).json()
        slow = httpx.get(server.url + "/api/performance/tracing/slow-requests?limit=1000", headers=key).json()
    finally:
        server.stop()
    assert {request_count(text, "/health") for text in scrapes} == {240.0}
    health = next(x for x in figures["routes"] if x["route"] == "/health")
    assert (figures["scope"], figures["workers"], health["count"]) == ("all workers", 2, 240)
    served = [x for x in slow["requests"] if x["route"] == "/health"]
    assert len(served) == 240 and len({x["pid"] for x in served}) == 2
    # uvicorn's own lines went through the same JSON formatter.
    assert any(x["logger"] == "uvicorn.error" for x in log_lines(log_file))

    server = Workers(data)
    try:
        server.wait_ready(log_file, 4)
        hammer(server.url, 10)
        text = httpx.get(server.url + "/metrics", headers=key).text
    finally:
        server.stop()
    assert request_count(text, "/health") == 10
