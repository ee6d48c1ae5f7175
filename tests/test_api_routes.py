"""The routes of health, search, ask and jobs over real HTTP through the app, with real keys, the real
model and a real index."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from obsidian_ai_agent import __version__, jobs
from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.security import keys
from obsidian_ai_agent.store.jobs import LaneLimit

from .openai_server import free_port, running

QUESTION = "How do I make a task repeat every week?"
COMPONENTS = {"database", "data_dir", "vector_search", "embedder", "llm", "disk"}


@dataclass
class Service:
    client: TestClient
    engine: Engine
    """The app's own engine (not the fixture's)."""
    vault: Path
    admin: dict[str, str]
    reader: dict[str, str]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def start(example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Service]]:
    """Starts the app over the example index, with `OAA_*` settings given as keyword arguments; jobs stay
    queued (no runner) unless a test runs them."""
    engine, vault = example
    stack = ExitStack()

    def start(**env: str) -> Service:
        monkeypatch.setenv("OAA_SERVER__RATE_LIMITS__ENABLED", "false")
        monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
        app = create_app(settings, embedder=engine.embedder)
        client = stack.enter_context(TestClient(app))
        store = app.state.engine.store
        admin = (settings.data_dir / "admin.key").read_text().strip()
        reader = keys.create_key(store, "reader", ["read"]).secret
        return Service(client, app.state.engine, vault, bearer(admin), bearer(reader))

    yield start
    stack.close()


@pytest.fixture
def service(start: Callable[..., Service]) -> Service:
    return start()


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, JSON data) of each event in a text/event-stream body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        events.append((name, json.loads("\n".join(data))))
    return events


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    names = [n for n, _ in events]
    assert names[0] == "retrieval" and names[-1] == "answer", names
    assert "token" in names and set(names) <= {"retrieval", "token", "error", "answer"}
    assert events[0][1]["sources"], "retrieval names the numbered sources"
    answer: dict[str, Any] = events[-1][1]["answer"]
    assert answer["citations"] and answer["citations"][0]["link"].startswith("obsidian://")
    return answer


# -- health ---------------------------------------------------------------------------------------


def test_health_answers_without_a_key_even_when_the_index_cannot_be_read(service: Service) -> None:
    db = sqlite3.connect(service.engine.settings.database_path)
    db.execute("ALTER TABLE sources RENAME TO sources_gone")
    db.close()
    r = service.client.get("/health")
    assert r.status_code == 200 and r.headers["x-request-id"]
    body = r.json()
    assert body["status"] == "ok" and body["version"] == __version__ and body["uptime_s"] >= 0
    # The same fault is what readiness is for: 503 in the error shape, naming the database.
    r = service.client.get("/status", headers=service.reader)
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "unavailable" and "index.sqlite" in err["message"] and "sources" in err["message"]
    detailed = service.client.get("/api/health/detailed", headers=service.admin).json()
    assert detailed["status"] == "down" and detailed["components"]["database"]["state"] == "down"


def test_status_reports_the_counts_of_the_index_its_model_and_the_queue(service: Service) -> None:
    counts = service.engine.store.counts()
    job_id = jobs.submit_reindex(service.engine, service.vault)
    r = service.client.get("/status", headers=service.reader)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body["index"][k] for k in counts} == counts and counts["chunks"] > 50
    # Absolute paths are for admin keys only (issue 9).
    assert body["index"]["vault"] is None and body["database"] is None
    assert body["embedding"]["model"] == service.engine.embedder.model_id
    assert body["embedding"]["dimension"] == 384
    as_admin = service.client.get("/status", headers=service.admin).json()
    assert as_admin["index"]["vault"] == str(service.vault.resolve())
    assert as_admin["database"] == str(service.engine.settings.database_path)
    assert body["queue"]["queued"] == 1 and body["job_runner"] is False
    assert service.engine.jobs.get(job_id) is not None


def test_status_names_the_presented_key_and_its_scopes_and_fingerprints_the_vault_for_every_key(
    service: Service,
) -> None:
    reader = service.client.get("/status", headers=service.reader).json()
    admin = service.client.get("/status", headers=service.admin).json()
    assert reader["key"]["auth"] is True and reader["key"]["scopes"] == ["read"]
    assert admin["key"]["scopes"] == ["admin"] and admin["key"]["name"] != reader["key"]["name"]
    # Neither the reader's secret nor any other leaves the server.
    secret = service.reader["Authorization"].split()[1]
    assert secret not in json.dumps(reader)
    # A client on the same machine hashes its vault folder and compares: no path is shown to a reader.
    expected = hashlib.sha256(str(service.vault.resolve()).encode()).hexdigest()
    assert reader["index"]["vault_id"] == admin["index"]["vault_id"] == expected


def test_detailed_health_checks_every_component_with_its_latency_and_system_figures(service: Service) -> None:
    r = service.client.get("/api/health/detailed", headers=service.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body
    parts = body["components"]
    assert set(parts) == COMPONENTS
    for name, part in parts.items():
        assert part["state"] == "ok", (name, part)
        assert part["latency_ms"] > 0 and part["message"]
    assert parts["vector_search"]["details"]["vectors"] == service.engine.store.counts()["vectors"]
    assert parts["embedder"]["details"]["dimension"] == 384
    assert parts["database"]["details"]["chunks"] == service.engine.store.counts()["chunks"]
    assert "extract" in parts["llm"]["message"]
    system = body["system"]
    assert system["cpu_count"] >= 1 and system["memory_total_bytes"] > system["memory_available_bytes"] > 0
    assert system["process_rss_bytes"] > 0 and 0 < system["disk_free_bytes"] <= system["disk_total_bytes"]
    assert service.client.get("/api/health/detailed", headers=service.reader).status_code == 403


@pytest.mark.parametrize(("on_error", "overall"), [("extractive", "degraded"), ("fail", "down")])
def test_an_unreachable_llm_shows_down_and_the_service_degraded_without_failing_the_request(
    start: Callable[..., Service], on_error: str, overall: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    s = start(OAA_LLM__PROVIDER="openai", OAA_LLM__BASE_URL=url, OAA_LLM__ON_ERROR=on_error)
    r = s.client.get("/api/health/detailed", headers=s.admin)
    assert r.status_code == 200
    body = r.json()
    llm = body["components"]["llm"]
    assert llm["state"] == "down" and url in llm["message"] and llm["latency_ms"] > 0
    # Answers fall back to extracts, so a dead model only degrades the service, unless settings say fail.
    assert body["status"] == overall
    assert all(c["state"] == "ok" for n, c in body["components"].items() if n != "llm")


def test_a_reachable_llm_server_is_ok_and_a_missing_model_is_degraded(start: Callable[..., Service]) -> None:
    seen: list[str | None] = []
    server = FastAPI()

    @server.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        seen.append(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": "smollm2", "object": "model"}]}

    with running(server) as url:
        s = start(
            OAA_LLM__PROVIDER="openai",
            OAA_LLM__BASE_URL=url + "/v1",
            OAA_LLM__MODEL="smollm2",
            OAA_LLM__API_KEY="sk-health-secret",
        )
        r = s.client.get("/api/health/detailed", headers=s.admin)
        llm = r.json()["components"]["llm"]
        assert llm["state"] == "ok" and llm["details"]["models"] == ["smollm2"]
        assert seen == ["Bearer sk-health-secret"] and "sk-health-secret" not in r.text
        s.engine.settings.llm.model = "llama3"
        llm = s.client.get("/api/health/detailed", headers=s.admin).json()["components"]["llm"]
        assert llm["state"] == "degraded" and "llama3" in llm["message"]


def test_little_free_disk_is_degraded_and_almost_none_is_down(start: Callable[..., Service]) -> None:
    s = start()
    free_mb = shutil.disk_usage(s.engine.settings.data_dir).free // 2**20
    s.engine.settings.server.min_free_disk_mb = free_mb * 2
    body = s.client.get("/api/health/detailed", headers=s.admin).json()
    assert body["components"]["disk"]["state"] == "degraded" and body["status"] == "degraded"
    assert "min_free_disk_mb" in body["components"]["disk"]["message"]
    s.engine.settings.server.min_free_disk_mb = free_mb * 20
    body = s.client.get("/api/health/detailed", headers=s.admin).json()
    assert body["components"]["disk"]["state"] == "down" and body["status"] == "down"


def test_config_shows_the_effective_settings_with_every_secret_redacted(
    start: Callable[..., Service],
) -> None:
    s = start(OAA_LLM__API_KEY="sk-config-secret", OAA_LLM__PROVIDER="extractive")
    r = s.client.get("/api/config", headers=s.admin)
    assert r.status_code == 200
    body = r.json()
    assert body["llm"]["api_key"] == "**********" and "sk-config-secret" not in r.text
    assert body["data_dir"] == str(s.engine.settings.data_dir) and body["server"]["run_jobs"] is False
    assert s.client.get("/api/config", headers=s.reader).status_code == 403


# -- search ---------------------------------------------------------------------------------------


def test_search_returns_results_with_every_field(service: Service) -> None:
    r = service.client.post(
        "/api/search", json={"query": "how do I add a due date", "k": 3}, headers=service.reader
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 3 and results[0]["path"].endswith(".md")
    assert results[0]["link"].startswith("obsidian://")


def test_search_filters_apply_over_http(service: Service) -> None:
    body = {"query": "status", "k": 10, "folder": "Getting Started/Statuses"}
    r = service.client.post("/api/search", json=body, headers=service.reader)
    assert r.status_code == 200 and r.json()["results"]
    assert all(x["path"].startswith("Getting Started/Statuses/") for x in r.json()["results"])


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/api/search", {"query": "x", "k": 0}, "k"),
        ("/api/search", {"query": "x", "mode": "fuzzy"}, "mode"),
        ("/api/search", {"k": 3}, "query"),
        ("/api/ask", {"k": 3}, "question"),
        ("/api/ask", {"question": "x", "provider": "gpt"}, "provider"),
        ("/ask", {"question": "x", "conversation_id": "a b"}, "conversation_id"),
    ],
)
def test_invalid_requests_get_the_error_shape_naming_the_field(
    service: Service, route: str, body: dict[str, Any], field: str
) -> None:
    r = service.client.post(route, json=body, headers=service.reader)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error" and field in err["message"]
    assert [d["field"] for d in err["details"]] == [field]


# -- ask ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/ask", "/api/ask"])
def test_ask_answers_as_json_with_citations_and_ignores_legacy_fields(service: Service, route: str) -> None:
    r = service.client.post(
        route, json={"question": QUESTION, "prefer_fast": True, "top_k": 9}, headers=service.reader
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    answer = r.json()
    assert answer["mode"] == "extractive" and answer["question"] == QUESTION and answer["text"]
    cited = answer["citations"]
    assert cited and any("Recurring" in c["path"] for c in cited)
    assert set(cited[0]) >= {"n", "path", "title", "heading_path", "start_line", "link", "snippet"}


def test_ask_options_reach_the_answerer(service: Service) -> None:
    body = {"question": QUESTION, "k": 2, "folder": "Getting Started/Statuses", "mode": "keyword"}
    answer = service.client.post("/api/ask", json=body, headers=service.reader).json()
    assert 0 < len(answer["sources"]) <= 2
    assert all(c["path"].startswith("Getting Started/Statuses/") for c in answer["sources"])


def test_ask_streams_server_sent_events_when_the_body_says_stream(service: Service) -> None:
    with service.client.stream(
        "POST", "/api/ask", json={"question": QUESTION, "stream": True}, headers=service.reader
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-request-id"]
        text = "".join(r.iter_text())
    answer = check_stream(sse_events(text))
    assert answer["mode"] == "extractive" and answer["question"] == QUESTION


def test_ask_streams_over_real_http_when_the_accept_header_asks_for_events(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, vault = example
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    with running(create_app(settings, embedder=engine.embedder)) as url:
        key = (settings.data_dir / "admin.key").read_text().strip()
        headers = {**bearer(key), "Accept": "text/event-stream"}
        with (
            httpx.Client(base_url=url, timeout=60) as http,
            http.stream("POST", "/ask", json={"question": QUESTION}, headers=headers) as r,
        ):
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            text = "".join(r.iter_text())
    check_stream(sse_events(text))


def test_a_dead_model_streams_a_recovered_error_then_an_extract_with_a_notice(
    start: Callable[..., Service],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    # A request may name `openai` only when the operator allows it (issue 9).
    s = start(
        OAA_LLM__BASE_URL=url, OAA_LLM__MODEL="m", OAA_LLM__ALLOWED_PROVIDERS='["extractive", "openai"]'
    )
    body = {"question": QUESTION, "stream": True, "provider": "openai"}
    with s.client.stream("POST", "/api/ask", json=body, headers=s.reader) as r:
        events = sse_events("".join(r.iter_text()))
    errors = [d for n, d in events if n == "error"]
    assert len(errors) == 1 and errors[0]["recovered"] is True and url in errors[0]["message"]
    answer = check_stream(events)
    assert answer["notice"] and "extract instead" in answer["notice"]
    # The same settings with `llm.on_error: fail`: the JSON answer is a 502 naming the server.
    s2 = start(OAA_LLM__ON_ERROR="fail")
    r2 = s2.client.post("/api/ask", json={"question": QUESTION, "provider": "openai"}, headers=s2.reader)
    assert r2.status_code == 502 and r2.json()["error"]["code"] == "llm_error" and url in r2.text


def test_conversation_ids_are_per_key_so_no_key_can_read_or_claim_another_keys(service: Service) -> None:
    other = bearer(keys.create_key(service.engine.store, "someone else", ["read"]).secret)
    # The other key uses the id first: that must not block the reader from using it too.
    squat = service.client.post(
        "/api/ask", json={"question": "What is a smoke test?", "conversation_id": "trip-1"}, headers=other
    )
    assert squat.status_code == 200
    body = {"question": QUESTION, "conversation_id": "trip-1"}
    first = service.client.post("/api/ask", json=body, headers=service.reader)
    assert first.status_code == 200 and first.json()["conversation_id"] == "trip-1"
    assert first.json()["query"] == QUESTION  # none of the other key's history
    follow = {"question": "and what about the due date?", "conversation_id": "trip-1"}
    r = service.client.post("/api/ask", json=follow, headers=service.reader)
    assert r.status_code == 200 and "repeat" in r.json()["query"]
    for extra in ({}, {"stream": True}):
        r = service.client.post("/api/ask", json={**follow, **extra}, headers=other)
        assert r.status_code == 200 and "repeat" not in r.text


# -- notes ----------------------------------------------------------------------------------------


def test_the_notes_manifest_gives_each_indexed_path_the_sha256_of_its_bytes(service: Service) -> None:
    client, vault = service.client, service.vault
    assert client.get("/api/notes/manifest", headers=service.reader).status_code == 403
    r = client.get("/api/notes/manifest", headers=service.admin)
    assert r.status_code == 200, r.text
    manifest = r.json()
    on_disk = {p.relative_to(vault).as_posix(): p for p in vault.rglob("*.md")}
    assert manifest and set(manifest) <= set(on_disk)
    for rel, digest in manifest.items():
        assert digest == hashlib.sha256(on_disk[rel].read_bytes()).hexdigest(), rel
    # A pushed note is in the next manifest with the hash of what was sent.
    body = "# Pushed\n\nA note the plugin sent.\n"
    put = client.put(
        "/api/notes/Inbox/Pushed.md?wait=true",
        content=body.encode(),
        headers={**service.admin, "Content-Type": "text/markdown"},
    )
    assert put.status_code == 200, put.text
    after = client.get("/api/notes/manifest", headers=service.admin).json()
    assert after["Inbox/Pushed.md"] == hashlib.sha256(body.encode()).hexdigest()
    assert {k: v for k, v in after.items() if k != "Inbox/Pushed.md"} == manifest


# -- jobs -----------------------------------------------------------------------------------------


def test_jobs_are_listed_filtered_and_shown_with_the_profile_of_their_stages(service: Service) -> None:
    client, engine, admin = service.client, service.engine, service.admin
    note = service.vault / "Getting Started" / "Dates.md"
    note.write_text(note.read_text() + "\n\nA new paragraph about reminders and deadlines.\n")
    job_id = jobs.submit_reindex(engine, service.vault)
    listed = client.get("/api/jobs", headers=admin).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id] and listed[0]["status"] == "queued"
    for query, expected in [
        ({"status": "queued"}, [job_id]),
        ({"status": "running"}, []),
        ({"kind": "reindex", "lane": "bulk"}, [job_id]),
        ({"lane": "interactive"}, []),
    ]:
        r = client.get("/api/jobs", params=query, headers=admin)
        assert [j["id"] for j in r.json()["jobs"]] == expected, query
    assert client.get("/api/jobs", params={"status": "lost"}, headers=admin).status_code == 422

    assert jobs.run(engine, job_id).status == "succeeded"
    detail = client.get(f"/api/jobs/{job_id}", headers=admin).json()
    assert detail["status"] == "succeeded" and detail["duration_seconds"] is not None
    assert detail["progress"]["done"] == detail["progress"]["total"]
    stages = {s["stage"]: s for s in detail["stages"]}
    assert {"parse", "embed", "write"} <= set(stages) and stages["embed"]["items"] >= 1
    assert abs(sum(s["share"] for s in detail["stages"]) - 1) < 0.01
    assert detail["slowest_items"][0]["path"] == "Getting Started/Dates.md"
    missing = client.get("/api/jobs/999999", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_job_stats_report_success_rates_and_stage_percentiles_per_lane(service: Service) -> None:
    engine = service.engine
    note = service.vault / "Getting Started" / "Dates.md"
    note.write_text(note.read_text("utf-8") + "\nA line added, so the job has something to write.\n", "utf-8")
    jobs.run(engine, jobs.submit_notes(engine, ["Getting Started/Dates.md"]))
    stats = service.client.get("/api/jobs/stats", headers=service.admin).json()
    lane = stats["lanes"]["interactive"]
    assert lane["jobs"] == 1 and lane["succeeded"] == 1 and lane["success_rate"] == 1.0
    assert stats["queue"]["succeeded"] == 1 and "write" in lane["stages"]
    assert stats["slowest_sources"][0]["path"] == "Getting Started/Dates.md"
    r = service.client.get("/api/jobs/stats", params={"hours": 0.0001}, headers=service.admin)
    assert r.status_code == 200


def test_jobs_are_cancelled_over_http_queued_at_once_running_at_their_next_check(service: Service) -> None:
    client, engine, admin = service.client, service.engine, service.admin
    queued = jobs.submit_notes(engine, ["Introduction.md"])
    r = client.delete(f"/api/jobs/{queued}", headers=admin)
    assert r.status_code == 200 and r.json() == {
        "id": queued,
        "status": "cancelled",
        "cancel_requested": True,
    }
    again = client.delete(f"/api/jobs/{queued}", headers=admin)
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["error"]["message"]
    assert client.delete("/api/jobs/999999", headers=admin).status_code == 404

    running = jobs.submit_reindex(engine, service.vault)
    claimed = engine.jobs.claim("test-runner", [LaneLimit("bulk", 10, 1)], lease=60)
    assert claimed is not None and claimed.id == running
    r = client.delete(f"/api/jobs/{running}", headers=admin)
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"]
    assert client.get(f"/api/jobs/{running}", headers=admin).json()["cancel_requested"] is True
    assert client.get("/api/jobs", headers=service.reader).status_code == 403


def test_quarantined_sources_are_listed_and_queued_again(service: Service) -> None:
    client, engine, admin = service.client, service.engine, service.admin
    assert client.get("/api/quarantine", headers=admin).json() == {"quarantined": []}
    r = client.post("/api/quarantine/retry", headers=admin)
    assert r.status_code == 202 and r.json() == {"job_id": None, "retried": []}
    engine.jobs.quarantine("Introduction.md", "embed", "the embedding server answered 503", None, None)
    held = client.get("/api/quarantine", headers=admin).json()["quarantined"]
    assert [(q["path"], q["stage"]) for q in held] == [("Introduction.md", "embed")]
    r = client.post("/api/quarantine/retry", json={"paths": ["Nope.md"]}, headers=admin)
    assert r.status_code == 404
    r = client.post("/api/quarantine/retry", json={"paths": ["Introduction.md"]}, headers=admin)
    assert r.status_code == 202 and r.json()["retried"] == ["Introduction.md"]
    job = jobs.run(engine, r.json()["job_id"])
    assert job.status == "succeeded" and job.lane == "interactive"
    assert client.get("/api/quarantine", headers=admin).json() == {"quarantined": []}
