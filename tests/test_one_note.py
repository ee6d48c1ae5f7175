"""Search and questions limited to one note (`path`), as the plugin's "Ask about the current note" sends
them (issue 12): over HTTP and from the CLI alike, the real index of the example vault and the real
model; a note the index does not hold is a 404 that says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine

from .test_api_routes import sse_events

CLI = [str(Path(sys.executable).parent / "obsidian-ai-agent")]
NOTE = "Getting Started/Recurring Tasks.md"
QUESTION = "What are the main points of Recurring Tasks?"


@pytest.fixture
def service(example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    engine, vault = example
    monkeypatch.setenv("OAA_SERVER__RATE_LIMITS__ENABLED", "false")
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    app = create_app(settings, embedder=engine.embedder)
    with TestClient(app) as client:
        client.headers["Authorization"] = "Bearer " + (settings.data_dir / "admin.key").read_text().strip()
        yield client


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OAA_DATA_DIR": str(data)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def test_search_limited_to_one_note_finds_only_that_note_over_http_and_from_the_cli(
    service: TestClient, example: tuple[Engine, Path]
) -> None:
    engine, _ = example
    query = "how do I make a task repeat"
    everywhere = service.post("/api/search", json={"query": query, "k": 20}).json()["results"]
    assert {r["path"] for r in everywhere} - {NOTE}, "unlimited, other notes match too"
    r = service.post("/api/search", json={"query": query, "k": 20, "path": NOTE})
    assert r.status_code == 200, r.text
    limited = r.json()["results"]
    assert limited and {x["path"] for x in limited} == {NOTE}
    proc = cli(engine.settings.data_dir, "search", query, "--k", "20", "--path", NOTE, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [x["path"] for x in json.loads(proc.stdout)["results"]] == [x["path"] for x in limited]


def test_a_question_about_one_note_cites_only_that_note_and_is_not_served_the_vault_wide_answer(
    service: TestClient, example: tuple[Engine, Path]
) -> None:
    engine, _ = example
    wide = service.post("/api/ask", json={"question": QUESTION}).json()
    r = service.post("/api/ask", json={"question": QUESTION, "path": NOTE})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert not answer["declined"] and answer["citations"], answer["text"]
    assert {c["path"] for c in answer["citations"]} == {NOTE}
    assert {s["path"] for s in answer["sources"]} == {NOTE}
    # The answer cache tells the two apart (the filter is part of its key), in both orders.
    assert {s["path"] for s in wide["sources"]} != {NOTE}
    again = service.post("/api/ask", json={"question": QUESTION}).json()
    assert [s["path"] for s in again["sources"]] == [s["path"] for s in wide["sources"]]

    streamed = service.post("/api/ask", json={"question": QUESTION, "path": NOTE, "stream": True})
    events = sse_events(streamed.text)
    assert events[-1][0] == "answer"
    assert {c["path"] for c in events[-1][1]["answer"]["citations"]} == {NOTE}

    proc = cli(engine.settings.data_dir, "ask", QUESTION, "--path", NOTE, "--json")
    assert proc.returncode == 0, proc.stderr
    assert {c["path"] for c in json.loads(proc.stdout)["citations"]} == {NOTE}


def test_a_note_the_index_does_not_hold_is_a_404_that_says_what_to_do_at_both_doors(
    service: TestClient, example: tuple[Engine, Path]
) -> None:
    engine, _ = example
    missing = "Getting Started/Not Synced Yet.md"
    for route, body in (
        ("/api/search", {"query": "dates", "path": missing}),
        ("/api/ask", {"question": "what are dates?", "path": missing}),
        ("/api/ask", {"question": "what are dates?", "path": missing, "stream": True}),
    ):
        r = service.post(route, json=body)
        assert r.status_code == 404, (route, r.text)
        err = r.json()["error"]
        assert err["code"] == "note_not_indexed", err
        assert f"no note at '{missing}'" in err["message"], err
        assert "index or sync the note first" in err["message"]
    for args in (("search", "dates", "--path", missing), ("ask", "what are dates?", "--path", missing)):
        proc = cli(engine.settings.data_dir, *args)
        assert proc.returncode == 1 and f"no note at '{missing}'" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    # An empty path is a validation error naming the field, not "every note".
    r = service.post("/api/search", json={"query": "dates", "path": ""})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "path"
