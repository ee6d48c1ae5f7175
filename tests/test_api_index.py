"""The index and notes routes over real HTTP: pushed notes, uploaded PDFs, web pages and reindexes become
jobs that the app's own runner runs, and what they index is then found by /api/search."""

from __future__ import annotations

import html
import http.client
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import uvicorn
from fastapi.testclient import TestClient

from obsidian_ai_agent import jobs
from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import Settings, load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.security import keys
from obsidian_ai_agent.store.jobs import FINISHED

from .conftest import KNOWLEDGE_VAULT, PDFS

WEB_NOTE = KNOWLEDGE_VAULT / "Knot Analogy of Samsaara.md"


def with_server(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"server": settings.server.model_copy(update=changes)})


class Api:
    """A client of the running app holding a read+write key and an admin key."""

    def __init__(self, client: TestClient, engine: Engine, writer: str, admin: str) -> None:
        self.client = client
        self.engine = engine
        self.writer = {"Authorization": f"Bearer {writer}"}
        self.admin = {"X-API-Key": admin}

    def put(self, path: str, content: str | bytes, **kw: Any) -> Any:
        headers = {**self.writer, "Content-Type": "text/markdown", **kw.pop("headers", {})}
        return self.client.put(f"/api/notes/{path}", content=content, headers=headers, **kw)

    def search(self, query: str, **filters: Any) -> list[dict[str, Any]]:
        r = self.client.post("/api/search", json={"query": query, **filters}, headers=self.writer)
        assert r.status_code == 200, r.text
        results: list[dict[str, Any]] = r.json()["results"]
        return results

    def wait(self, job_id: int, timeout: float = 120) -> dict[str, Any]:
        """Follow a job the app's runner runs, through the store both share."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.engine.jobs.get(job_id)
            assert job is not None
            if job.status in FINISHED:
                return job.to_dict()
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@contextmanager
def running(engine: Engine, settings: Settings | None = None) -> Iterator[Api]:
    writer = keys.create_key(engine.store, "plugin", ["read", "write"]).secret
    admin = keys.create_key(engine.store, "operator", ["admin"]).secret
    app = create_app(settings or engine.settings, embedder=engine.embedder)
    with TestClient(app) as client:
        yield Api(client, engine, writer, admin)


@pytest.fixture
def api(example: tuple[Engine, Path]) -> Iterator[Api]:
    with running(example[0]) as a:
        yield a


def files_under(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and (skip is None or not p.is_relative_to(skip)):
            found[str(p.relative_to(root))] = p.read_bytes()
    return found


# -- notes ---------------------------------------------------------------------------------------------

NOTE = """---
tags: [zoology]
---
# Quokka census

The quokka census on Rottnest Island counted twelve thousand marsupials this spring.
"""


def test_a_pushed_note_is_written_atomically_into_the_vault_and_found_by_search(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    r = api.put("Inbox/Quokka census.md", NOTE)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["kind"] == "upsert_note" and body["lane"] == "interactive"
    assert body["links"]["job"] == f"/api/jobs/{body['job_id']}" and body["path"] == "Inbox/Quokka census.md"
    assert (vault / "Inbox" / "Quokka census.md").read_text() == NOTE
    assert not [p for p in (vault / "Inbox").iterdir() if p.name.endswith(".tmp")]
    assert api.wait(body["job_id"])["status"] == "succeeded"
    hits = api.search("quokka census Rottnest marsupials")
    assert hits[0]["path"] == "Inbox/Quokka census.md"


def test_waiting_for_a_pushed_note_answers_200_once_it_is_indexed(api: Api) -> None:
    r = api.put("Zoo/Wombats.md", b'{"text": 1}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "content" in r.json()["error"]["message"]
    r = api.client.put(
        "/api/notes/Zoo/Wombats.md?wait=true",
        json={"content": "# Wombats\n\nWombats leave cube-shaped droppings to mark their burrows.\n"},
        headers=api.writer,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["result"]["indexed"] == 1
    assert api.search("cube-shaped wombat droppings")[0]["path"] == "Zoo/Wombats.md"


def test_a_changed_note_replaces_the_old_text_in_search(api: Api) -> None:
    api.put("Zoo/Axolotl.md", "# Axolotl\n\nAxolotls regrow whole limbs.\n", params={"wait": "1"})
    r = api.put(
        "Zoo/Axolotl.md", "# Axolotl\n\nAxolotls stay larval for life (neoteny).\n", params={"wait": "1"}
    )
    assert r.status_code == 200
    [hit] = [h for h in api.search("axolotl neoteny larval regrow limbs") if h["path"] == "Zoo/Axolotl.md"]
    assert "neoteny" in hit["snippet"] and "regrow" not in hit["snippet"]


def test_deleting_a_note_removes_the_file_and_its_source_from_search(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    api.put(
        "Zoo/Pangolin.md",
        "# Pangolin\n\nPangolins roll into a ball of keratin scales.\n",
        params={"wait": "1"},
    )
    assert any(h["path"] == "Zoo/Pangolin.md" for h in api.search("pangolin keratin scales"))
    r = api.client.delete("/api/notes/Zoo/Pangolin.md", headers=api.writer)
    assert r.status_code == 202 and r.json()["kind"] == "delete_note"
    assert not (vault / "Zoo" / "Pangolin.md").exists()
    assert api.wait(r.json()["job_id"])["result"]["removed"] == 1
    assert all(h["path"] != "Zoo/Pangolin.md" for h in api.search("pangolin keratin scales"))
    again = api.client.delete("/api/notes/Zoo/Pangolin.md", headers=api.writer)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


def test_deleting_a_vault_note_with_wait_removes_it_from_search(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    assert any(h["path"] == "Getting Started/Priority.md" for h in api.search("task priority", k=20))
    r = api.client.delete("/api/notes/Getting%20Started/Priority.md?wait=true", headers=api.writer)
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert not (vault / "Getting Started" / "Priority.md").exists()
    assert all(h["path"] != "Getting Started/Priority.md" for h in api.search("task priority", k=20))


UNSAFE_PATHS = [
    "..%2F..%2Fx.md",
    "%2e%2e%2f%2e%2e%2fx.md",
    "Notes/..%2F..%2F..%2Fx.md",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "/tmp/x.md",
    "C:%5Cx.md",
    "C:/x.md",
    "Notes%5C..%5C..%5Cx.md",
    ".obsidian/x.md",
    ".obsidian/workspace.json",
    ".trash/x.md",
    ".git/hooks/x.md",
    "Notes/x.txt",
    "Notes/x.sh",
    "a%00b.md",
    "a%0Ab.md",
    "",
]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_unsafe_note_paths_are_refused_and_nothing_is_written(
    api: Api, example: tuple[Engine, Path], path: str
) -> None:
    engine, vault = example
    base = vault.parent
    before = files_under(base, skip=engine.settings.data_dir)
    for method in ("PUT", "DELETE"):
        r = api.client.request(
            method,
            f"/api/notes/{path}",
            content=b"# pwned\n",
            headers={**api.writer, "Content-Type": "text/markdown"},
        )
        assert r.status_code == 400, (method, path, r.text)
        error = r.json()["error"]
        assert error["code"] == "bad_path" and error["message"]
    assert files_under(base, skip=engine.settings.data_dir) == before
    assert not Path("/etc/passwd.md").exists() and not Path("/tmp/x.md").exists()


def test_a_note_path_through_a_symlink_out_of_the_vault_is_refused(
    api: Api, example: tuple[Engine, Path], tmp_path: Path
) -> None:
    _, vault = example
    outside = tmp_path / "outside"
    outside.mkdir()
    (vault / "Linked").symlink_to(outside, target_is_directory=True)
    r = api.put("Linked/x.md", "# escaped\n")
    assert r.status_code == 400 and "outside the vault" in r.json()["error"]["message"]
    assert list(outside.iterdir()) == []


@contextmanager
def live(app: Any) -> Iterator[int]:
    """The app under uvicorn on a loopback port (for requests no HTTP client library would send)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.mark.parametrize(
    "raw", ["/api/notes/../../x.md", "/api/notes/Notes/../../../x.md", "/api/notes//x.md"]
)
def test_a_raw_dot_dot_path_over_a_real_socket_is_refused(example: tuple[Engine, Path], raw: str) -> None:
    engine, vault = example
    writer = keys.create_key(engine.store, "plugin", ["write"]).secret
    before = files_under(vault.parent, skip=engine.settings.data_dir)
    app = create_app(with_server(engine.settings, run_jobs=False), embedder=engine.embedder)
    with live(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "PUT", raw, body=b"# pwned\n", headers={"X-API-Key": writer, "Content-Type": "text/plain"}
        )
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
    assert resp.status == 400, body
    assert '"bad_path"' in body and resp.getheader("X-Request-ID")
    assert files_under(vault.parent, skip=engine.settings.data_dir) == before


def test_notes_need_a_vault_and_say_how_to_configure_one(tmp_path: Path, embedder: Any) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    with Engine(settings, embedder=embedder) as engine, running(engine) as a:
        r = a.put("x.md", "# x\n")
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "no_vault" and "vault" in r.json()["error"]["message"]
        r = a.client.post("/api/reindex", json={}, headers=a.admin)
        assert r.status_code == 409


def test_a_note_body_that_is_not_text_is_refused(api: Api) -> None:
    r = api.put("Zoo/bin.md", b"\xff\xfe\x00bad", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"]
    r = api.put("Zoo/img.md", b"GIF89a", headers={"Content-Type": "image/gif"})
    assert r.status_code == 415 and "text/markdown" in r.json()["error"]["message"]


# -- PDFs ----------------------------------------------------------------------------------------------

CRAZY = PDFS / "text_known" / "pypdf_crazyones.pdf"


def test_an_uploaded_pdf_is_stored_in_the_vault_and_its_text_found_by_search(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    with CRAZY.open("rb") as f:
        r = api.client.post(
            "/api/index_pdf", files={"file": ("crazy ones.pdf", f, "application/pdf")}, headers=api.writer
        )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["path"] == "_uploads/crazy ones.pdf" and body["kind"] == "index_pdf"
    assert (vault / "_uploads" / "crazy ones.pdf").read_bytes() == CRAZY.read_bytes()
    job = api.wait(body["job_id"])
    assert job["status"] == "succeeded" and job["result"]["indexed"] == 1, job
    hits = api.search("the crazy ones, the misfits, the rebels, the troublemakers", kind="pdf")
    assert hits[0]["path"] == "_uploads/crazy ones.pdf" and hits[0]["page"] == 1


def test_an_uploaded_pdf_that_cannot_be_indexed_fails_its_job_with_the_reason_and_is_removed(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    broken = PDFS / "encrypted" / "pdfminer_aes-256-r6.pdf"
    with broken.open("rb") as f:
        r = api.client.post(
            "/api/index_pdf", files={"file": ("locked.pdf", f, "application/pdf")}, headers=api.writer
        )
    assert r.status_code == 202, r.text
    job = api.wait(r.json()["job_id"])
    assert job["status"] == "failed", job
    assert "_uploads/locked.pdf" in job["error"] and "password" in job["error"].lower()
    assert not (vault / "_uploads" / "locked.pdf").exists()


def test_an_upload_goes_to_the_folder_it_names_and_a_bad_folder_is_refused(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    data = (PDFS / "text_known" / "pdfminer_simple1.pdf").read_bytes()
    r = api.client.post(
        "/api/index_pdf",
        files={"file": ("C:\\Users\\me\\simple", data, "application/pdf")},
        data={"folder": "Papers/2024"},
        headers=api.writer,
    )
    assert r.status_code == 202 and r.json()["path"] == "Papers/2024/simple.pdf"
    assert (vault / "Papers" / "2024" / "simple.pdf").read_bytes() == data
    for folder in ("../outside", "/tmp", ".obsidian"):
        r = api.client.post(
            "/api/index_pdf", files={"file": ("x.pdf", data)}, data={"folder": folder}, headers=api.writer
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_path", folder
    assert not (vault.parent / "outside").exists() and not Path("/tmp/x.pdf").exists()


def test_a_pdf_already_in_the_vault_is_indexed_by_its_path(api: Api, example: tuple[Engine, Path]) -> None:
    _, vault = example
    (vault / "Docs").mkdir()
    shutil.copy(CRAZY, vault / "Docs" / "Crazy.pdf")
    r = api.client.post("/api/index_pdf", json={"path": "Docs/Crazy.pdf"}, headers=api.writer)
    assert r.status_code == 202, r.text
    assert api.wait(r.json()["job_id"])["status"] == "succeeded"
    assert api.search("misfits rebels troublemakers", kind="pdf")[0]["path"] == "Docs/Crazy.pdf"
    r = api.client.post("/api/index_pdf", json={"path": "Docs/Missing.pdf"}, headers=api.writer)
    assert r.status_code == 404
    r = api.client.post("/api/index_pdf", json={"path": "../x.pdf"}, headers=api.writer)
    assert r.status_code == 400
    r = api.client.post("/api/index_pdf", json={"nope": 1}, headers=api.writer)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "path"


@pytest.mark.parametrize(
    ("name", "status", "says"),
    [
        ("synthetic_not-a-pdf.pdf", 415, "not a PDF"),
        ("synthetic_zero-byte.pdf", 400, "empty"),
    ],
)
def test_a_file_that_is_not_a_pdf_is_refused_and_not_stored(
    api: Api, example: tuple[Engine, Path], name: str, status: int, says: str
) -> None:
    _, vault = example
    with (PDFS / "malformed" / name).open("rb") as f:
        r = api.client.post("/api/index_pdf", files={"file": (name, f)}, headers=api.writer)
    assert r.status_code == status and says in r.json()["error"]["message"]
    assert not (vault / "_uploads").exists()


def test_an_upload_without_a_file_or_of_another_type_is_refused(api: Api) -> None:
    r = api.client.post(
        "/api/index_pdf", data={"folder": "x"}, files={"other": ("a.pdf", b"%PDF")}, headers=api.writer
    )
    assert r.status_code == 400 and "`file`" in r.json()["error"]["message"]
    r = api.client.post(
        "/api/index_pdf", content=b"%PDF-1.4", headers={**api.writer, "Content-Type": "application/pdf"}
    )
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]["message"]


def test_an_upload_past_the_limit_is_413(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    big = PDFS / "text_known" / "sf006_pdflatex-outline.pdf"  # 48,722 bytes
    with running(engine, with_server(engine.settings, max_upload_bytes=20_000)) as a, big.open("rb") as f:
        r = a.client.post("/api/index_pdf", files={"file": ("big.pdf", f)}, headers=a.writer)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        small = (PDFS / "text_known" / "pdfminer_simple1.pdf").read_bytes()
        assert (
            a.client.post("/api/index_pdf", files={"file": ("s.pdf", small)}, headers=a.writer).status_code
            == 202
        )
    assert not (vault / "_uploads" / "big.pdf").exists()


# -- web pages -----------------------------------------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8000/api/config",
    "http://10.0.0.1/",
    "http://10.255.1.2:8080/admin",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://localhost/",
    "file:///etc/passwd",
    "http://user:pass@example.org/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_index_web_refuses_private_and_unusual_urls_at_submission(api: Api, url: str) -> None:
    before = api.engine.jobs.counts()
    r = api.client.post("/api/index_web", json={"url": url}, headers=api.writer)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "url_refused" and error["message"]
    assert api.engine.jobs.counts() == before


def render(note: Path) -> bytes:
    """A Markdown note as the kind of HTML page a site would serve: navigation, article, footer."""
    paras = [p.strip() for p in note.read_text().split("\n\n") if p.strip()]
    body = "".join(
        f"<blockquote><p>{html.escape(p.lstrip('> '))}</p></blockquote>"
        if p.startswith(">")
        else f"<p>{html.escape(p)}</p>"
        for p in paras
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(note.stem)}</title></head>"
        "<body><nav><a href='/'>Home</a> | <a href='/tags'>Tags</a></nav>"
        f"<main><article><h1>{html.escape(note.stem)}</h1>{body}</article></main>"
        "<footer>Built with a static site generator. Subscribe for updates.</footer></body></html>"
    ).encode()


class _Site(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/knots.html")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        page = self.pages.get(self.path)
        self.send_response(200 if page else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page or b"")))
        self.end_headers()
        self.wfile.write(page or b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    _Site.pages = {"/knots.html": render(WEB_NOTE)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_index_web_refuses_even_a_real_local_page_by_default(api: Api, site: str) -> None:
    r = api.client.post("/api/index_web", json={"url": f"{site}/knots.html"}, headers=api.writer)
    assert r.status_code == 400 and "loopback" in r.json()["error"]["message"]


def test_a_local_page_is_fetched_and_searchable_when_private_urls_are_allowed(
    example: tuple[Engine, Path], site: str
) -> None:
    engine, _ = example
    with running(engine, with_server(engine.settings, allow_private_urls=True)) as a:
        r = a.client.post("/api/index_web", json={"url": f"{site}/moved#top"}, headers=a.writer)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["lane"] == "web" and body["url"] == f"{site}/moved"
        job = a.wait(body["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["final_url"] == f"{site}/knots.html" and job["result"]["indexed"] == 1
        hits = a.search("granthis psychic knots of the rope", kind="web")
        assert hits and hits[0]["path"] == f"{site}/moved" and hits[0]["kind"] == "web"
        assert hits[0]["title"] == "Knot Analogy of Samsaara"
        again = a.client.post("/api/index_web", json={"url": f"{site}/missing.html"}, headers=a.writer)
        failed = a.wait(again.json()["job_id"])
        assert failed["status"] == "failed" and "HTTP 404" in failed["error"]


def test_a_web_job_that_carries_its_text_is_still_indexed_without_a_fetch(
    example: tuple[Engine, Path],
) -> None:
    engine, _ = example
    url = "https://example.org/okapi"
    text = "Okapis are forest giraffes.\n\nTheir striped legs hide them in the Ituri rainforest."
    job = jobs.run(engine, jobs.submit(engine, "index_web", {"url": url, "title": "Okapi", "text": text}))
    assert job.status == "succeeded" and job.result and job.result["indexed"] == 1
    [hit] = engine.search("okapi striped legs Ituri", kind="web")[:1]
    assert hit.path == url and hit.title == "Okapi"


# -- reindex -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body"), [("/api/reindex", {}), ("/reindex", {"full": True}), ("/api/reindex", None)]
)
def test_reindex_answers_202_and_the_job_finishes(
    api: Api, example: tuple[Engine, Path], route: str, body: dict[str, Any] | None
) -> None:
    _, vault = example
    (vault / "New.md").write_text("# New\n\nA note written behind the server's back about narwhal tusks.\n")
    r = api.client.post(route, json=body, headers=api.admin)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["kind"] == "reindex" and accepted["lane"] == "bulk"
    job = api.wait(accepted["job_id"])
    assert job["status"] == "succeeded" and job["payload"]["full"] == bool(body and body.get("full"))
    assert job["result"]["indexed"] == 1
    assert api.search("narwhal tusks")[0]["path"] == "New.md"
    assert api.client.post(route, json=body, headers=api.writer).status_code == 403


def test_the_routes_are_described_in_openapi(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    put = spec["paths"]["/api/notes/{path}"]["put"]
    assert set(put["requestBody"]["content"]) == {"text/markdown", "text/plain", "application/json"}
    assert {"400", "409", "415"} <= set(put["responses"])
    pdf = spec["paths"]["/api/index_pdf"]["post"]
    assert set(pdf["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert "400" in spec["paths"]["/api/index_web"]["post"]["responses"]
    assert spec["paths"]["/reindex"]["post"]["responses"]["202"]
