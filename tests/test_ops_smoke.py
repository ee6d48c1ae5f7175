"""`smoke` against a real `serve --workers 4` over HTTP: green with an admin key (write scope included) and
with a read key, leaving the vault as it was; red, naming the check, against a server whose index is
damaged."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine

from .conftest import EXAMPLE_VAULT
from .openai_server import free_port

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "obsidian_ai_agent.cli"]
NOTES = ["Introduction.md", "Quick Reference.md", "Getting Started/Priority.md"]
PAGE = (
    "<html><head><title>Smoke page</title></head><body><article><h1>Lighthouse keeping</h1>"
    + "<p>A lighthouse keeper trims the wick, winds the clockwork and logs the weather each night. </p>" * 8
    + "</article></body></html>"
).encode()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAA_")}
    return {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def _small_index(base: Path, embedder: Any) -> tuple[Path, Path]:
    """Three notes of the example vault, indexed: (vault, data dir)."""
    vault = base / "vault"
    for rel in NOTES:
        (vault / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(EXAMPLE_VAULT / rel, vault / rel)
    data = base / "data"
    with Engine(load_settings(data_dir=data), embedder=embedder) as engine:
        engine.index(vault)
    return vault, data


class Server:
    def __init__(self, vault: Path, data: Path, workers: int, **env: str) -> None:
        self.data, self.port, self.workers = data, free_port(), workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                *CLI,
                "--data-dir",
                str(data),
                "serve",
                "--no-index",
                *("--port", str(self.port)),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=_env(OAA_VAULT=str(vault), **env),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        deadline = time.monotonic() + 150 + 30 * workers
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            # A worker is warm before it accepts, but the first one up accepts while the others still load
            # the model: wait for all of them, so that smoke's timings meet a server at full strength.
            if self.log.read_text().count('"Application startup complete."') >= workers:
                try:
                    # /status through the key proves the index is read.
                    r = httpx.get(self.url + "/status", headers={"X-API-Key": self.admin_key()}, timeout=10)
                    if r.status_code == 200:
                        break
                except (httpx.HTTPError, OSError):
                    pass
            time.sleep(0.5)

    def admin_key(self) -> str:
        return (self.data / "admin.key").read_text().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def smoke(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "smoke", "--url", url, "--concurrency", "20", *args],
        cwd=ROOT,
        env=_env(OBSIDIAN_AI_AGENT_KEY=key),
        capture_output=True,
        text=True,
        timeout=300,
    )


def statuses(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads(run.stdout)["checks"]}


def files(vault: Path) -> dict[str, bytes]:
    return {str(p.relative_to(vault)): p.read_bytes() for p in sorted(vault.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def page() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/lighthouse.html"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[Server, Path]]:
    vault, data = _small_index(tmp_path_factory.mktemp("smoke"), embedder)
    # The test's web page is on loopback, which the SSRF guard refuses unless told otherwise.
    srv = Server(vault, data, workers=4, OAA_SERVER__ALLOW_PRIVATE_URLS="true")
    yield srv, vault
    srv.stop()


def test_smoke_with_a_read_key_finds_a_known_note_again_and_skips_the_admin_routes(
    server: tuple[Server, Path],
) -> None:
    srv, _ = server
    made = subprocess.run(
        [
            *CLI,
            "--data-dir",
            str(srv.data),
            "keys",
            "create",
            "--name",
            "reader",
            "--scope",
            "read",
            "--json",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    key = json.loads(made.stdout)["key"]
    run = smoke(srv.url, key, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    got = statuses(run)
    assert {got[n] for n in ("detailed_health", "metrics", "jobs")} == {"skip"}
    integrity = next(c for c in json.loads(run.stdout)["checks"] if c["name"] == "integrity")
    assert integrity["status"] == "pass" and "no write scope" in integrity["reason"]
    assert key not in run.stdout + run.stderr


def test_smoke_is_green_against_a_real_four_worker_server_and_leaves_the_vault_as_it_was(
    server: tuple[Server, Path], page: str
) -> None:
    srv, vault = server
    assert f"with {srv.workers} worker(s)" in srv.log.read_text()
    before = files(vault)
    sources = httpx.get(srv.url + "/status", headers={"X-API-Key": srv.admin_key()}).json()["index"][
        "sources"
    ]
    run = smoke(srv.url, srv.admin_key(), "--web-url", page)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"smoke tests against {srv.url}"
    marks = {line.split(":", 1)[0] for line in lines[1:-1]}
    expected = {"pass " + n for n in ("health", "status", "detailed_health", "metrics", "jobs", "job_runner")}
    expected |= {"pass " + n for n in ("search", "related", "integrity", "answer_cache", "web", "load")}
    expected |= {"pass sla_" + n for n in ("health", "status", "cached_answer", "search")}
    assert marks == expected | {"skip sla_generation"}  # no LLM is configured: nothing generated to time
    assert lines[-1] == "16 pass, 0 warn, 0 fail, 1 skip"
    assert "wrote oaasmoke" in run.stdout and "20 requests at once" in run.stdout
    assert srv.admin_key() not in run.stdout + run.stderr
    # The marked note came and went; the one page the operator named is the only new source.
    assert files(vault) == before
    after = httpx.get(srv.url + "/status", headers={"X-API-Key": srv.admin_key()}).json()["index"]["sources"]
    assert after == sources + 1


def test_smoke_is_red_and_names_the_check_against_a_server_whose_index_is_damaged(
    tmp_path: Path, embedder: Any
) -> None:
    vault, data = _small_index(tmp_path, embedder)
    srv = Server(vault, data, workers=1)
    try:
        # Damage the full-text index under the running server: its leaf pages are gone.
        with sqlite3.connect(data / "index.sqlite") as db:
            db.execute("DELETE FROM chunks_fts_data WHERE id > 10")
        run = smoke(srv.url, srv.admin_key(), "--json")
    finally:
        srv.stop()
    assert run.returncode == 1, run.stdout + run.stderr
    report = json.loads(run.stdout)
    failed = {c["name"]: c["reason"] for c in report["checks"] if c["status"] == "fail"}
    assert report["ok"] is False and "search" in failed, failed
    assert "POST /api/search" in failed["search"]
