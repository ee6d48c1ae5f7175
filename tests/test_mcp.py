"""The MCP server with the SDK's own client, over both transports, against a real index of the docs vault:
stdio (`python -m obsidian_ai_agent mcp --data-dir D`, spawned as the SDK's stdio client does) and
streamable HTTP (`/mcp` of the service, under uvicorn on a loopback port, with API keys).

The servers and sessions start once per module; each test drives them through a blocking portal."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp_types import CallToolResult

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.security import keys
from obsidian_ai_agent.store import Store

from .conftest import DOCS_VAULT, QUESTIONS, copy_tree
from .openai_server import running

ROOT = Path(__file__).resolve().parents[1]
READ_TOOLS = {"search", "ask", "related", "read_note", "list_notes", "index_status"}
WRITE_TOOLS = {"write_note", "append_to_note"}
TRANSPORTS = ["stdio", "http"]


@pytest.fixture(scope="module")
def vault_and_data(tmp_path_factory: pytest.TempPathFactory, docs_index: Path) -> tuple[Path, Path]:
    """A private copy of the docs vault and of its index (the tests write notes and keys)."""
    base = tmp_path_factory.mktemp("mcp")
    vault = copy_tree(DOCS_VAULT, base / "vault")
    data = base / "data"
    data.mkdir()
    with sqlite3.connect(docs_index / "index.sqlite") as src, sqlite3.connect(data / "index.sqlite") as dst:
        src.backup(dst)
    src.close()
    dst.close()
    store = Store(data / "index.sqlite")
    store.set_meta("vault_root", str(vault.resolve()))
    store.close()
    return vault, data


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:
        yield p


@pytest.fixture(scope="module")
def service(vault_and_data: tuple[Path, Path], embedder: Any) -> Iterator[dict[str, Any]]:
    """The service with writing tools on, and a read key and a read+write key."""
    vault, data = vault_and_data
    settings = load_settings(
        data_dir=data, vault=vault, mcp={"write_tools": True}, server={"run_jobs": False}
    )
    app = create_app(settings, embedder=embedder)
    with running(app) as url:
        store = app.state.engine.store
        reader = keys.create_key(store, "mcp reader", ["read"])
        yield {
            "url": url,
            "read": reader.secret,
            "read_id": reader.key.id,
            "write": keys.create_key(store, "mcp writer", ["read", "write"]).secret,
            "admin": (data / "admin.key").read_text().strip(),
        }


@asynccontextmanager
async def http_session(url: str, key: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
    ):
        yield client


class Session:
    """A client session driven from synchronous tests."""

    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self.portal = portal
        self.client = client

    def call(self, tool: str, **arguments: Any) -> CallToolResult:
        return self.portal.call(self.client.call_tool, tool, arguments)

    def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = self.call(tool, **arguments)
        assert not result.is_error, result.content
        assert isinstance(result.structured_content, dict)
        return result.structured_content

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            return await fn(*args, **kwargs)

        return self.portal.call(go)


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture(scope="module")
def stdio(portal: BlockingPortal, vault_and_data: tuple[Path, Path]) -> Iterator[Session]:
    _, data = vault_and_data
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "obsidian_ai_agent", "mcp", "--data-dir", str(data)],
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OAA_LOG_LEVEL": "WARNING"},
        cwd=ROOT,
    )
    with (
        open(os.devnull, "w") as errlog,
        portal.wrap_async_context_manager(Client(stdio_client(params, errlog=errlog))) as client,
    ):
        yield Session(portal, client)


@pytest.fixture(scope="module")
def http_read(portal: BlockingPortal, service: dict[str, Any]) -> Iterator[Session]:
    with portal.wrap_async_context_manager(http_session(service["url"], service["read"])) as client:
        yield Session(portal, client)


@pytest.fixture(scope="module")
def http_write(portal: BlockingPortal, service: dict[str, Any]) -> Iterator[Session]:
    with portal.wrap_async_context_manager(http_session(service["url"], service["write"])) as client:
        yield Session(portal, client)


@pytest.fixture(params=TRANSPORTS)
def session(request: pytest.FixtureRequest) -> Session:
    """The same checks over stdio and over HTTP (with a read key)."""
    name = "stdio" if request.param == "stdio" else "http_read"
    value: Session = request.getfixturevalue(name)
    return value


# -- listing ------------------------------------------------------------------------------------------


def test_a_client_lists_the_read_tools_with_described_arguments(session: Session) -> None:
    tools = {t.name: t for t in session.run(session.client.list_tools).tools}
    assert set(tools) == READ_TOOLS  # stdio has no writing tools (off by default); a read key sees none
    search = tools["search"]
    assert "query" in search.input_schema["required"]
    k = search.input_schema["properties"]["k"]
    assert "How many results" in k["description"]
    assert search.annotations is not None and search.annotations.read_only_hint
    for tool in tools.values():
        assert tool.description and len(tool.description) > 80, tool.name


def test_a_client_lists_every_note_as_a_resource_page_by_page(session: Session) -> None:
    uris: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = session.run(session.client.list_resources, cursor=cursor)
        uris += [r.uri for r in page.resources]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    notes = session.ok("index_status")["sources"]
    assert pages >= 2 and len(uris) == len(set(uris)) >= notes - 5  # a note or two may be PDFs or web
    assert "obsidian-note://Getting%20Started/Dates.md" in uris
    templates = session.run(session.client.list_resource_templates).resource_templates
    assert [t.uri_template for t in templates] == ["obsidian-note://{+path}"]
    text = session.run(session.client.read_resource, "obsidian-note://Getting%20Started/Dates.md")
    assert "# Dates" in text.contents[0].text


# -- the read tools ------------------------------------------------------------------------------------


def dev_questions() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [q for q in rows if q.get("relevant")]


def test_search_finds_the_expected_note_in_the_top_five_for_most_dev_questions(session: Session) -> None:
    questions = dev_questions()
    hits = 0
    for q in questions:
        found = session.ok("search", query=q["question"], k=5)
        paths = [r["path"] for r in found["results"]]
        hits += bool(set(paths) & set(q["relevant"]))
        first = found["results"][0]
        assert first["link"].startswith("obsidian://open?vault=") and first["snippet"] and first["score"] > 0
    assert hits / len(questions) >= 0.8, f"{hits} of {len(questions)}"


def test_ask_returns_citations_that_resolve_to_notes_of_the_vault(
    session: Session, vault_and_data: tuple[Path, Path]
) -> None:
    vault, _ = vault_and_data
    answer = session.ok("ask", question="Which emoji marks the due date of a task?")
    assert not answer["declined"] and answer["citations"]
    for c in answer["citations"]:
        assert (vault / c["path"]).is_file(), c["path"]
        assert c["link"].startswith("obsidian://open?")
        assert session.ok("read_note", note=c["path"], max_chars=50)["path"] == c["path"]
    declined = session.ok("ask", question="What is the boiling point of tungsten in kelvin?")
    assert declined["declined"] and not declined["citations"]


def test_read_note_returns_the_text_and_frontmatter_by_path_or_by_name(session: Session) -> None:
    by_path = session.ok("read_note", note="Getting Started/Dates.md")
    by_name = session.ok("read_note", note="dates")
    assert by_path["path"] == by_name["path"] == "Getting Started/Dates.md"
    assert by_path["text"].lstrip().startswith(("# Dates", "---"))
    assert isinstance(by_path["frontmatter"], dict) and by_path["indexed"]
    part = session.ok("read_note", note="Getting Started/Dates.md", offset=10, max_chars=20)
    assert part["text"] == by_path["text"][10:30] and part["next_offset"] == 30


@pytest.mark.parametrize(
    "path", ["../README.md", "Getting Started/../../secret.md", "/etc/passwd", "..\\secret.md", "C:/x.md"]
)
def test_read_note_refuses_paths_outside_the_vault_and_the_session_goes_on(
    session: Session, path: str
) -> None:
    text = error_text(session.call("read_note", note=path))
    assert any(w in text for w in ("'..'", "absolute", "backslash", "drive letter")), text
    assert session.ok("index_status")["sources"] > 0


def test_read_note_refuses_a_symlink_that_leads_out_of_the_vault(
    session: Session, vault_and_data: tuple[Path, Path], tmp_path: Path
) -> None:
    vault, _ = vault_and_data
    outside = tmp_path / "outside.md"
    outside.write_text("# private\n")
    link = vault / "Inbox" / "Link out.md"
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    text = error_text(session.call("read_note", note=str(link.relative_to(vault))))
    assert "outside the vault" in text
    assert "private" not in text


def test_a_missing_note_gives_an_error_that_says_how_to_find_notes(session: Session) -> None:
    assert "search or list_notes" in error_text(session.call("read_note", note="No Such Note"))
    assert "search or list_notes" in error_text(session.call("read_note", note="Inbox/No Such Note.md"))


def test_related_takes_a_note_name_and_returns_linked_notes(session: Session) -> None:
    found = session.ok("related", note="Dates", k=5)
    assert found["path"] == "Getting Started/Dates.md"
    assert 0 < len(found["related"]) <= 5
    assert all(n["path"] != found["path"] for n in found["related"])


def test_list_notes_pages_with_a_cursor_and_filters_by_folder_and_date(session: Session) -> None:
    first = session.ok("list_notes", folder="Getting Started", limit=5)
    assert first["count"] == 5 and first["next_cursor"]
    second = session.ok("list_notes", folder="Getting Started", limit=5, cursor=first["next_cursor"])
    paths = [n["path"] for n in first["notes"] + second["notes"]]
    assert paths == sorted(set(paths)) and all(p.startswith("Getting Started/") for p in paths)
    assert session.ok("list_notes", changed_since="2999-01-01")["count"] == 0
    assert "ISO 8601" in error_text(session.call("list_notes", changed_since="last tuesday"))
    assert "cursor" in error_text(session.call("list_notes", cursor="not-a-cursor"))


def test_an_unknown_tool_and_a_bad_argument_give_error_results_and_the_session_goes_on(
    session: Session,
) -> None:
    unknown = error_text(session.call("delete_everything"))
    assert "unknown tool 'delete_everything'" in unknown and "search" in unknown
    too_many = error_text(session.call("search", query="dates", k=500))
    assert "k" in too_many and "100" in too_many
    missing = error_text(session.call("search"))
    assert "query" in missing
    assert "mode" in error_text(session.call("search", query="dates", mode="fuzzy"))
    assert session.ok("search", query="dates", k=1)["count"] == 1


def test_index_status_shows_server_paths_only_to_the_operator(
    stdio: Session, http_read: Session, portal: BlockingPortal, service: dict[str, Any]
) -> None:
    local = stdio.ok("index_status")
    assert local["sources"] > 100 and local["database"].endswith("index.sqlite")
    remote = http_read.ok("index_status")
    assert remote["sources"] == local["sources"] and "database" not in remote and "vault" not in remote
    with portal.wrap_async_context_manager(http_session(service["url"], service["admin"])) as client:
        assert Session(portal, client).ok("index_status")["database"].endswith("index.sqlite")


# -- keys and scopes over HTTP ---------------------------------------------------------------------------


def test_a_missing_or_wrong_key_gets_401_on_mcp_in_the_service_error_shape(service: dict[str, Any]) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    for extra in ({}, {"Authorization": "Bearer oaa_000000000000_" + "A" * 43}):
        r = httpx.post(service["url"] + "/mcp", json=body, headers={**headers, **extra})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_read_key_is_rate_limited_and_logged_like_any_read_route(
    service: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}
    headers = {"Authorization": f"Bearer {service['read']}", "Accept": "application/json, text/event-stream"}
    with caplog.at_level(logging.INFO, logger="obsidian_ai_agent.access"):
        r = httpx.post(service["url"] + "/mcp", json=body, headers=headers)
        # The access line is written once the server has sent the last byte, which a loaded machine
        # can schedule after the client has read it: wait for it (up to 10 s).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rid = r.headers.get("X-Request-ID")
            logged = [rec for rec in caplog.records if getattr(rec, "request_id", None) == rid]
            if logged:
                break
            time.sleep(0.05)
    assert r.status_code == 200, r.text
    assert int(r.headers["X-RateLimit-Limit"]) == 300 and r.headers["X-Request-ID"]
    assert [(rec.route, rec.status, rec.key_id) for rec in logged] == [("/mcp", 200, service["read_id"])]  # type: ignore[attr-defined]
    assert service["read"] not in caplog.text


def test_a_read_key_cannot_list_or_call_a_write_tool(
    http_read: Session, vault_and_data: tuple[Path, Path]
) -> None:
    vault, _ = vault_and_data
    names = {t.name for t in http_read.run(http_read.client.list_tools).tools}
    assert not names & WRITE_TOOLS
    for tool, args in (("write_note", {"content": "# no"}), ("append_to_note", {"text": "no"})):
        result = http_read.call(tool, path="Inbox/Refused.md", **args)
        assert result.is_error
        assert "needs an API key with the write scope" in error_text(result)
    assert not (vault / "Inbox" / "Refused.md").exists()


def test_a_write_key_with_write_tools_on_writes_and_appends_a_note_that_search_then_finds(
    http_write: Session, vault_and_data: tuple[Path, Path]
) -> None:
    vault, _ = vault_and_data
    names = {t.name for t in http_write.run(http_write.client.list_tools).tools}
    assert names == READ_TOOLS | WRITE_TOOLS
    written = http_write.ok(
        "write_note", path="Inbox/From MCP.md", content="# From MCP\n\nThe zanzibar marmalade protocol.\n"
    )
    assert written["created"] and written["indexed"], written
    appended = http_write.ok("append_to_note", path="Inbox/From MCP.md", text="A quokka appendix.")
    assert not appended["created"] and appended["indexed"]
    assert (vault / "Inbox" / "From MCP.md").read_text() == (
        "# From MCP\n\nThe zanzibar marmalade protocol.\nA quokka appendix.\n"
    )
    found = http_write.ok("search", query="quokka appendix", mode="keyword", k=3)
    assert found["results"][0]["path"] == "Inbox/From MCP.md"
    refused = error_text(http_write.call("write_note", path="../escape.md", content="x"))
    assert "'..'" in refused and not (vault.parent / "escape.md").exists()
    missing = error_text(http_write.call("append_to_note", path="Inbox/Nothing here.md", text="x"))
    assert "write_note" in missing
