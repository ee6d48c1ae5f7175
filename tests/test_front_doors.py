"""The two front doors, CLI and HTTP API, as a first user meets them (issue 8): user text printed
verbatim, the vault never guessed, settings honoured, one set of input rules, a usable /docs offline, a
warm first search, and the lower rooms importable on their own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.security import keys

from .conftest import DEMO_VAULT

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "obsidian_ai_agent"
CLI = [str(Path(sys.executable).parent / "obsidian-ai-agent")]
NOTE_WITH_MARKUP = """# Bracket Soup

- [/] #task Water the bracket plants in progress
- [x] #task Done already
See [[Bracket Garden]] and [bold]not bold[/bold] and :smile: as typed.
"""


def run(
    *args: str, data: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    if data is not None:
        full_env["OAA_DATA_DIR"] = str(data)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=300, cwd=cwd)


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


# -- 1. user text is printed verbatim ---------------------------------------------------------------


def test_cli_search_prints_task_checkboxes_wikilinks_and_brackets_verbatim(
    example: tuple[Engine, Path],
) -> None:
    engine, vault = example
    # The Tasks-Demo notes that broke the CLI (`- [/]` is Tasks' in-progress checkbox), and one more.
    for rel in ("Test Data/list_statuses.md", "Styling/Sample Tasks for Styling Documentation.md"):
        (vault / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO_VAULT / rel, vault / rel)
    (vault / "Bracket Soup.md").write_text(NOTE_WITH_MARKUP, encoding="utf-8")
    engine.index(vault)
    data = engine.settings.data_dir
    engine.close()

    for folder in ("Test Data", "Styling"):
        proc = run("search", "in progress task status", "--k", "1", "--folder", folder, data=data)
        assert proc.returncode == 0, proc.stderr
        assert "MarkupError" not in proc.stderr
        assert "- [/] #task" in proc.stdout and "- [x] #task" in proc.stdout, proc.stdout

    proc = run("search", "bracket plants", "--k", "1", "--mode", "keyword", data=data)
    assert proc.returncode == 0, proc.stderr
    for text in ("- [/] #task Water", "[[Bracket Garden]]", "[bold]not bold[/bold]", ":smile:"):
        assert text in proc.stdout, (text, proc.stdout)


def test_no_cli_module_prints_an_f_string_that_rich_could_read_as_markup() -> None:
    # Styles come only from `styled(...)` (Text objects); every console is built with markup=False.
    for path in (SRC / "cli").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\[/?(bold|dim|red|yellow|green)\]", source.split('"""', 2)[-1]), path
        assert "Console(" not in source or source.count("markup=False") >= source.count("Console("), path


# -- 2. index with no argument never indexes the current directory ---------------------------------


def test_index_without_a_vault_refuses_and_says_how_to_name_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "diary.md").write_text("# private\n", encoding="utf-8")
    data = tmp_path / "data"
    proc = run("index", "--json", data=data, cwd=home)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "index PATH" in proc.stderr and "OAA_VAULT" in proc.stderr and "vault:" in proc.stderr
    with Engine(load_settings(data_dir=data)) as e:
        assert e.store.counts()["sources"] == 0


def test_index_without_an_argument_uses_the_vault_the_index_remembers(
    example: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, _ = example
    data = engine.settings.data_dir
    sources = engine.store.counts()["sources"]
    engine.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stray.md").write_text("# stray\n", encoding="utf-8")
    proc = run("index", "--json", "--quiet", data=data, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert '"indexed": 0' in proc.stdout and f'"unchanged": {sources}' in proc.stdout


def test_the_configured_vault_is_chosen_before_the_remembered_one(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    configured = Engine(load_settings(data_dir=engine.settings.data_dir, vault=vault))
    try:
        assert configured.vault_root() == vault.resolve()
    finally:
        configured.close()


# -- 3. search.default_mode and search.k are honoured by both doors --------------------------------


def test_cli_search_uses_the_configured_k_and_mode(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    env = {"OAA_SEARCH__K": "2", "OAA_SEARCH__DEFAULT_MODE": "keyword"}
    proc = run("search", "custom statuses", "--json", data=engine.settings.data_dir, env=env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 2 and all(r["semantic_rank"] is None for r in results)


def test_api_search_uses_the_configured_k_and_mode(
    service: TestClient, monkeypatch: pytest.MonkeyPatch, example: tuple[Engine, Path]
) -> None:
    engine, vault = example
    monkeypatch.setenv("OAA_SEARCH__K", "2")
    monkeypatch.setenv("OAA_SEARCH__DEFAULT_MODE", "keyword")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        client.headers["Authorization"] = service.headers["Authorization"]
        r = client.post("/api/search", json={"query": "custom statuses"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2 and all(x["semantic_rank"] is None for x in results)
    # A caller's own choice still wins.
    assert len(service.post("/api/search", json={"query": "custom statuses", "k": 4}).json()["results"]) == 4


# -- 4. an admin key exists even when `keys create` ran before the first start ----------------------


def test_first_start_writes_an_admin_key_when_only_a_read_key_was_made_before(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, vault = example
    keys.create_key(engine.store, "plugin", ["read"])
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    with TestClient(create_app(settings, embedder=engine.embedder)) as client:
        admin = (settings.data_dir / "admin.key").read_text().strip()
        r = client.get("/api/keys", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200 and len(r.json()["keys"]) == 2
        message = client.get("/api/keys").json()["error"]["message"]
    assert "keys create" in message and "--scope admin" in message and "admin.key" in message


def test_an_existing_admin_key_file_is_never_overwritten(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, vault = example
    keys.create_key(engine.store, "plugin", ["read"])
    path = engine.settings.data_dir / "admin.key"
    path.write_text("the operator's own notes\n", encoding="utf-8")
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    with TestClient(create_app(settings, embedder=engine.embedder)):
        pass
    assert path.read_text(encoding="utf-8") == "the operator's own notes\n"
    written = list(settings.data_dir.glob("admin-*.key"))
    assert len(written) == 1 and keys.verify(engine.store, written[0].read_text().strip()) is not None


def test_keys_create_before_any_admin_key_says_how_to_get_one(tmp_path: Path) -> None:
    proc = run("keys", "create", "--name", "plugin", "--scope", "read", data=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--scope admin" in proc.stderr and "admin.key" in proc.stderr


# -- 8. the lower rooms import on their own ---------------------------------------------------------


def lower_modules() -> list[str]:
    found = []
    for room in ("security", "store", "notes"):
        for path in sorted((SRC / room).rglob("*.py")):
            parts = path.relative_to(SRC.parent).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


@pytest.mark.parametrize("module", lower_modules())
def test_every_module_of_security_store_and_notes_imports_on_its_own(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_security_store_and_notes_never_import_the_api_layer() -> None:
    for room in ("security", "store", "notes"):
        for path in (SRC / room).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"from \.\.(api|cli|backend)\b|obsidian_ai_agent\.(api|cli)", text), path


# -- 10. /docs works offline and the schema is valid, with both ways to send a key ------------------


def test_docs_page_loads_every_asset_from_the_service_itself(service: TestClient) -> None:
    r = service.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "the docs page must not load anything from elsewhere"
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        got = service.get(asset)
        assert got.status_code == 200 and got.content, asset
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert service.get("/redoc").status_code == 404  # FastAPI's ReDoc page comes from a CDN: not served


def test_openapi_document_validates_and_declares_bearer_and_x_api_key(service: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = service.app.openapi()  # type: ignore[attr-defined]
    validate(doc)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    search = doc["paths"]["/api/search"]["post"]
    assert {"bearer": []} in search["security"] and {"apiKey": []} in search["security"]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_a_key_sent_as_x_api_key_works_like_a_bearer_key(service: TestClient) -> None:
    key = service.headers["Authorization"].removeprefix("Bearer ")
    r = service.post("/api/search", json={"query": "dates"}, headers={"Authorization": "", "X-API-Key": key})
    assert r.status_code == 200, r.text


# -- 11. one set of input rules for both doors; unknown fields are refused --------------------------


@pytest.mark.parametrize(
    ("cli_args", "body", "field", "message"),
    [
        (["   "], {"query": "   "}, "query", "the query is empty"),
        (["dates", "--kind", "pdfx"], {"query": "dates", "kind": "pdfx"}, "kind", "unknown kind of source"),
        (["dates", "--k", "0"], {"query": "dates", "k": 0}, "k", "between 1 and 100"),
        (["dates", "--k", "101"], {"query": "dates", "k": 101}, "k", "between 1 and 100"),
        (["dates", "--mode", "fuzzy"], {"query": "dates", "mode": "fuzzy"}, "mode", "unknown search mode"),
    ],
)
def test_cli_and_api_refuse_the_same_search_with_the_same_words(
    service: TestClient, cli_args: list[str], body: dict[str, Any], field: str, message: str
) -> None:
    proc = run("search", *cli_args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    r = service.post("/api/search", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert [d["field"] for d in err["details"]] == [field] and message in err["details"][0]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/api/keys/{key}/rotate", {"grace": 0}, "grace"),
        ("post", "/api/keys", {"name": "x", "scopes": ["read"], "scope": "admin"}, "scope"),
        ("post", "/api/search", {"query": "dates", "top_k": 3}, "top_k"),
        ("post", "/api/related", {"path": "Getting Started/Dates.md", "limit": 3}, "limit"),
        ("post", "/api/ask", {"question": "what are dates?", "stram": True}, "stram"),
        ("post", "/api/reindex", {"ful": True}, "ful"),
        ("post", "/api/index_web", {"url": "https://example.org/", "wait": True}, "wait"),
    ],
)
def test_an_unknown_field_in_a_request_body_is_a_422_naming_it(
    service: TestClient, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    if "{key}" in path:
        made = service.post("/api/keys", json={"name": "rotated", "scopes": ["read"]}).json()
        path = path.replace("{key}", made["id"])
    r = service.request(method.upper(), path, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and field in err["message"]
    assert field in [d["field"] for d in err["details"]]


def test_rotate_with_grace_seconds_still_works(service: TestClient) -> None:
    made = service.post("/api/keys", json={"name": "rotated", "scopes": ["read"]}).json()
    r = service.post(f"/api/keys/{made['id']}/rotate", json={"grace_seconds": 0})
    assert r.status_code == 201, r.text


# -- 12. --version, a warm first search, a progress bar that says what it does ----------------------


def test_version_alone_prints_the_version_and_exits_0() -> None:
    from obsidian_ai_agent import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == __version__, proc.stderr


def test_the_model_and_vectors_are_warm_before_the_first_request_and_status_says_so(
    example: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, vault = example
    monkeypatch.setenv("OAA_SERVER__RUN_JOBS", "false")
    settings = load_settings(data_dir=engine.settings.data_dir, vault=vault)
    app = create_app(settings, embedder=engine.embedder)
    with TestClient(app) as client:
        served = app.state.engine
        # Loaded in the lifespan, before any request: the matrix is at the index's generation.
        assert served.searcher.vectors.generation == served.store.generation
        assert len(served.searcher.vectors) == served.store.counts()["chunks"]
        key = (settings.data_dir / "admin.key").read_text().strip()
        warm = client.get("/status", headers={"Authorization": f"Bearer {key}"}).json()["warm"]
    assert warm["ready"] is True and warm["seconds"] is not None and warm["error"] is None


def test_the_index_bar_names_each_phase_and_gives_no_eta_before_work_is_measured(
    example: tuple[Engine, Path],
) -> None:
    from obsidian_ai_agent.cli.progress import progress_bar

    engine, vault = example
    topics = (
        "herons lighthouses sourdough kayaks orchids comets violins glaciers beekeeping tides mosses owls"
    )
    for i, topic in enumerate(topics.split()):  # more than a handful of chunks: one real embedding call
        text = f"# Notes on {topic}\n\nField note {i}: what I learned about {topic} this week.\n"
        (vault / f"New {topic}.md").write_text(text, encoding="utf-8")
    console = Console(file=open(os.devnull, "w"), force_terminal=True, width=160)  # noqa: SIM115
    seen: list[tuple[str, str]] = []
    with progress_bar("indexing", console) as display:

        def record(p: Any) -> None:
            display(p)
            fields = display.bar.tasks[0].fields
            seen.append((fields["phase"], fields["eta"]))

        display.phase("loading model")
        seen.append((display.bar.tasks[0].fields["phase"], display.bar.tasks[0].fields["eta"]))
        engine.index(vault, progress=record)
    console.file.close()
    phases = [p for p, _ in seen]
    assert phases[0] == "loading model" and "parsing" in phases and "embedding" in phases
    assert "writing" in phases and phases[-1] == "done"
    # Before any source is written nothing predicts the rest: no number is made up.
    first_work = next(i for i, (p, _) in enumerate(seen) if p == "parsing")
    assert seen[first_work][1] == "eta -"


def test_eta_comes_from_throughput_measured_after_the_first_batch() -> None:
    from obsidian_ai_agent.cli.progress import Throughput, format_eta

    t = Throughput()
    assert t.eta(0, 1000, now=0.0) is None  # work starts
    assert t.eta(0, 1000, now=15.0) is None  # model and first batch still running: no guess
    assert t.eta(100, 1000, now=20.0) == pytest.approx(180.0)  # 100 bytes in 20 s: 900 left
    assert t.eta(1000, 1000, now=200.0) == 0.0
    assert format_eta(None) == "eta -" and format_eta(75) == "eta 0:01:15"
