"""Hardening over real HTTP: request ids, security headers, CORS, body limits, the request timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine


def make_client(engine: Engine, vault: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> TestClient:
    monkeypatch.setenv("OAA_SERVER__RATE_LIMITS__ENABLED", "false")
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    return TestClient(create_app(settings, embedder=engine.embedder))


@pytest.fixture
def client(example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    engine, vault = example
    with make_client(engine, vault, monkeypatch, OAA_SERVER__MAX_BODY_BYTES="4096") as c:
        c.headers["Authorization"] = "Bearer " + (engine.settings.data_dir / "admin.key").read_text().strip()
        yield c


def test_every_response_carries_a_request_id_and_echoes_a_sane_one(client: Any) -> None:
    r = client.get("/health")
    assert len(r.headers["x-request-id"]) >= 16
    assert client.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    # A request id that could smuggle anything into a log line is replaced, not echoed.
    bad = client.get("/health", headers={"X-Request-ID": "x\r injected log line"})
    assert "injected" not in bad.headers["x-request-id"]
    err = client.post("/api/search", json={"k": 1})
    assert err.status_code == 422 and err.headers["x-request-id"]


def test_security_headers_are_set_and_hsts_only_over_tls(client: Any) -> None:
    r = client.get("/health")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "strict-transport-security" not in r.headers
    tls = TestClient(client.app, base_url="https://testserver")
    assert "max-age=" in tls.get("/health").headers["strict-transport-security"]


def test_a_cors_preflight_from_obsidian_is_answered_without_a_key_and_a_stranger_is_not(client: Any) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    for origin in ("app://obsidian.md", "capacitor://localhost", "http://localhost"):
        r = client.options("/api/search", headers={"Origin": origin, **ask, "Authorization": ""})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    r = client.options("/api/search", headers={"Origin": "https://evil.example", **ask})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    # A real request from Obsidian gets the header it needs to read the answer.
    r = client.post("/api/search", json={"query": "due", "k": 1}, headers={"Origin": "app://obsidian.md"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "app://obsidian.md"


def test_a_body_over_the_limit_is_refused_with_413_in_the_error_shape(client: Any) -> None:
    r = client.post(
        "/api/search",
        content=b'{"query": "' + b"x" * 10_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "payload_too_large" and "max_body_bytes" in err["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/api/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert client.post("/api/search", json={"query": "due", "k": 1}).status_code == 200


class SilentServer:
    """Accepts connections and never answers: an LLM server that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for c in self.held:
            c.close()
        self.sock.close()


def test_a_request_past_the_timeout_gets_504_in_the_error_shape(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, vault = example
    hang = SilentServer()
    try:
        with make_client(
            engine,
            vault,
            monkeypatch,
            OAA_SERVER__REQUEST_TIMEOUT="1.5",
            OAA_LLM__PROVIDER="openai",
            OAA_LLM__MODEL="hang",
            OAA_LLM__BASE_URL=f"http://127.0.0.1:{hang.port}/v1",
            OAA_LLM__TIMEOUT="60",
            OAA_LLM__ON_ERROR="fail",
        ) as c:
            key = (engine.settings.data_dir / "admin.key").read_text().strip()
            started = time.monotonic()
            r = c.post(
                "/api/ask",
                json={"question": "How do I set a due date on a task?"},
                headers={"Authorization": f"Bearer {key}"},
            )
            took = time.monotonic() - started
    finally:
        hang.close()
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert err["code"] == "timeout" and "request_timeout" in err["message"]
    assert r.headers["x-request-id"]
    assert took < 30  # answered at the timeout, not after the model's own 60 s
