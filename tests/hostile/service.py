"""The service as an adversary meets it: an app on a fresh data dir, over TestClient or a real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import Settings, load_settings
from obsidian_ai_agent.security.keys import create_key
from obsidian_ai_agent.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Settings for a service on `tmp_path/data` with the vault `tmp_path/vault` (made empty)."""
    vault = tmp_path / "vault"
    vault.mkdir(exist_ok=True)
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    monkeypatch.setenv("OAA_SERVER__RATE_LIMITS__ENABLED", "false")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(data_dir=tmp_path / "data", vault=vault)


def make_app(settings: Settings, embedder: Any = None) -> FastAPI:
    return create_app(settings, embedder=embedder)


def key_for(settings: Settings, scopes: list[str], name: str = "test") -> str:
    with Store(settings.database_path) as store:
        return create_key(store, name, scopes).secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[int]:
    """The app on a loopback port of a uvicorn in this process (a real socket); yields the port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, proxy_headers=False, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
