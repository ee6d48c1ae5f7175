"""The HTTP service against hostile single requests (issue 9): providers a request may not pick, JSON too
deep to parse, long CJK names, bidi tricks, a 500 on a kept-alive connection, rotation chains, what a
read key sees, file modes, odd charsets, a dead worker, CORS refusals."""

from __future__ import annotations

import http.client
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from obsidian_ai_agent.notes.web import Fetched, extract
from obsidian_ai_agent.observability.logs import adopt_uvicorn_loggers
from obsidian_ai_agent.security import keys
from obsidian_ai_agent.security.paths import PathRefused, check_relative
from obsidian_ai_agent.store import Store

from .service import bearer, key_for, make_app, serve, service_settings


def _error(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return dict(body["error"])


# -- 3: providers ---------------------------------------------------------------------------------


def test_a_read_key_cannot_make_the_server_load_a_provider_the_operator_did_not_enable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    with TestClient(make_app(s, embedder)) as c:
        read = bearer(key_for(s, ["read"]))
        for provider in ("llamacpp", "openai"):
            r = c.post("/api/ask", json={"question": "when is it due?", "provider": provider}, headers=read)
            assert r.status_code == 403, r.text
            err = _error(r)
            assert err["code"] == "provider_not_allowed"
            assert err["details"] == {"provider": provider, "allowed": ["extractive"]}
            assert "llm.allowed_providers" in err["message"]
        # What the operator configured can still be named.
        r = c.post("/api/ask", json={"question": "when is it due?", "provider": "extractive"}, headers=read)
        assert r.status_code == 200, r.text


def test_the_operator_chooses_which_providers_a_request_may_pick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch, OAA_LLM__PROVIDER="openai")
    assert s.llm.request_providers() == ["openai", "extractive"]
    s = service_settings(tmp_path, monkeypatch, OAA_LLM__ALLOWED_PROVIDERS='["extractive", "llamacpp"]')
    assert s.llm.request_providers() == ["extractive", "llamacpp"]


# -- 6: user input that used to be a 500 ----------------------------------------------------------


def test_json_nested_too_deeply_to_parse_is_a_400_in_the_error_shape_on_notes_and_pdf_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    deep = "[" * 200_000 + "]" * 200_000
    with TestClient(make_app(s)) as c:
        write = {**bearer(key_for(s, ["write"])), "Content-Type": "application/json"}
        for method, path in (("PUT", "/api/notes/Deep.md"), ("POST", "/api/index_pdf")):
            r = c.request(method, path, content=deep, headers=write)
            assert r.status_code == 400, r.text
            assert "nested too deeply" in _error(r)["message"]


def test_a_note_named_with_80_cjk_characters_is_saved_although_its_name_is_240_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    name = "漢" * 80 + ".md"
    assert len(name.encode()) == 243
    with TestClient(make_app(s)) as c:
        r = c.put(
            f"/api/notes/{name}",
            content="# 会議\n\n議事録。\n".encode(),
            headers={**bearer(key_for(s, ["write"])), "Content-Type": "text/markdown"},
        )
        assert r.status_code == 202, r.text
    assert (tmp_path / "vault" / name).read_text(encoding="utf-8").startswith("# 会議")
    assert not [p for p in (tmp_path / "vault").iterdir() if p.name.endswith(".tmp")]


# -- 14: bidi overrides in names ------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2069"])
def test_a_note_name_with_a_bidirectional_override_is_refused(char: str) -> None:
    with pytest.raises(PathRefused, match=f"U\\+{ord(char):04X}"):
        check_relative(f"Invoices/report{char}dm.txt.md")


def test_the_notes_route_refuses_a_right_to_left_override_with_400(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    with TestClient(make_app(s)) as c:
        r = c.put(
            "/api/notes/evil\u202egpj.md",
            content=b"x",
            headers={**bearer(key_for(s, ["write"])), "Content-Type": "text/markdown"},
        )
    assert r.status_code == 400 and _error(r)["code"] == "bad_path"
    assert list((tmp_path / "vault").iterdir()) == []


# -- 10: a 500 must not cost the client its connection --------------------------------------------


def test_an_unhandled_error_is_a_500_in_the_error_shape_and_the_kept_alive_connection_still_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    app = make_app(s)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug in a route")

    with serve(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/boom")
            first = conn.getresponse()
            body = json.loads(first.read())
            assert first.status == 500
            assert body["error"]["code"] == "internal_error" and "request id" in body["error"]["message"]
            assert (first.getheader("connection") or "").lower() != "close"
            sock = conn.sock
            # Before the fix the server closed the connection after the 500: this request was reset.
            conn.request("GET", "/health")
            second = conn.getresponse()
            assert second.status == 200 and json.loads(second.read())["status"] == "ok"
            assert conn.sock is sock, "the second request needed a new connection"
        finally:
            conn.close()


# -- 11: rotation chains --------------------------------------------------------------------------


def test_rotating_again_inside_the_grace_period_keeps_one_chain_and_the_old_keys_expiry(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "index.sqlite") as store:
        a = keys.create_key(store, "plugin", ["read"])
        b = keys.rotate_key(store, a.key.id, grace=3600)
        a_expiry = keys.KeyStore(store).get(a.key.id).expires_at  # type: ignore[union-attr]
        time.sleep(0.01)
        c = keys.rotate_key(store, a.key.id, grace=3600)  # the old id again, inside its grace period
        rows = {r.id: r for r in keys.list_keys(store)}
        assert set(rows) == {a.key.id, b.key.id, c.key.id}
        assert rows[a.key.id].expires_at == a_expiry, "rotating again reset the old key's expiry"
        assert rows[a.key.id].replaced_by == b.key.id
        assert rows[b.key.id].replaced_by == c.key.id, "the first replacement was lost from the chain"
        assert rows[c.key.id].replaced_by is None and rows[c.key.id].expires_at is None
        assert {r.lineage for r in rows.values()} == {a.key.id}
        assert all(keys.verify(store, k.secret) is not None for k in (a, b, c))
        # Revoking any secret of the chain ends every one of them.
        keys.revoke_key(store, b.key.id)
        assert all(keys.verify(store, k.secret) is None for k in (a, b, c))
        with pytest.raises(keys.UnknownKey):
            keys.rotate_key(store, c.key.id, grace=3600)


def test_the_key_list_shows_every_live_secret_of_a_rotated_key_under_one_lineage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    with TestClient(make_app(s)) as c:
        admin = bearer((s.data_dir / "admin.key").read_text().strip())
        made = c.post("/api/keys", json={"name": "phone", "scopes": ["read"]}, headers=admin).json()
        c.post(f"/api/keys/{made['id']}/rotate", headers=admin)
        c.post(f"/api/keys/{made['id']}/rotate", headers=admin)
        listed = [k for k in c.get("/api/keys", headers=admin).json()["keys"] if k["name"] == "phone"]
        assert len(listed) == 3 and all(k["active"] for k in listed)
        assert {k["lineage"] for k in listed} == {made["id"]}
        c.delete(f"/api/keys/{made['id']}", headers=admin)
        listed = [k for k in c.get("/api/keys", headers=admin).json()["keys"] if k["name"] == "phone"]
        assert not any(k["active"] for k in listed)


def test_a_conversation_survives_its_key_being_rotated_and_its_id_means_nothing_to_another_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    with TestClient(make_app(s, embedder)) as c:
        admin = bearer((s.data_dir / "admin.key").read_text().strip())
        first = c.post("/api/keys", json={"name": "laptop", "scopes": ["read"]}, headers=admin).json()
        other = bearer(key_for(s, ["read"], "someone else"))
        ask = {"question": "what is on my list?", "conversation_id": "trip-planning"}
        assert c.post("/api/ask", json=ask, headers=bearer(first["key"])).status_code == 200
        rotated = c.post(f"/api/keys/{first['id']}/rotate", headers=admin).json()
        follow = {"question": "and what about the stove?", "conversation_id": "trip-planning"}
        r = c.post("/api/ask", json=follow, headers=bearer(rotated["key"]))
        assert r.status_code == 200 and "(list)" in r.json()["query"], r.text
        r = c.post("/api/ask", json=follow, headers=other)
        assert r.status_code == 200 and r.json()["query"] == follow["question"]


# -- 13: what a read key and the file system show -------------------------------------------------


def test_status_shows_the_vault_and_database_paths_to_admin_keys_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    with TestClient(make_app(s)) as c:
        c.put(
            "/api/notes/A.md",
            content=b"# A",
            headers={**bearer((s.data_dir / "admin.key").read_text().strip()), "Content-Type": "text/plain"},
        )
        as_reader = c.get("/status", headers=bearer(key_for(s, ["read"]))).json()
        as_admin = c.get("/status", headers=bearer((s.data_dir / "admin.key").read_text().strip())).json()
    assert as_reader["database"] is None and as_reader["index"]["vault"] is None
    assert str(tmp_path) not in json.dumps(as_reader)
    assert as_admin["database"] == str(s.database_path)


def test_the_database_log_and_key_files_are_made_readable_by_their_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0o022)  # the usual umask, under which files were world-readable
    try:
        s = service_settings(tmp_path, monkeypatch, OAA_LOGGING__FILE="service.log")
        with TestClient(make_app(s)) as c:
            assert c.get("/health").status_code == 200
            logging.getLogger("obsidian_ai_agent.test").warning("a line for the log file")
    finally:
        os.umask(old)
    assert stat.S_IMODE(s.data_dir.stat().st_mode) == 0o700
    for name in ("index.sqlite", "index.sqlite-wal", "service.log", "admin.key"):
        path = s.data_dir / name
        if name.endswith("-wal") and not path.exists():
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{name} is {oct(path.stat().st_mode)}"


# -- 14: smaller ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["text/html", "text/plain"])
def test_a_web_page_in_a_charset_nobody_knows_is_read_not_failed(ctype: str) -> None:
    text = "Les cafés de la place servent un chocolat épais le dimanche matin. " * 10
    body = f"<html><head><title>Cafés</title></head><body><article><p>{text}</p></article></body></html>"
    page = Fetched("https://example.org/", "https://example.org/", 200, ctype, "x-made-up-8", body.encode())
    _, extracted = extract(page)
    assert "cafés" in extracted and "épais" in extracted


def test_a_dead_server_worker_is_logged_as_an_error_naming_its_pid() -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    adopt_uvicorn_loggers()
    handler = Keep()
    logging.getLogger().addHandler(handler)
    try:
        # What uvicorn's supervisor says when it finds a worker gone.
        logging.getLogger("uvicorn.error").info("Child process [%d] died", 4242)
    finally:
        logging.getLogger().removeHandler(handler)
    [record] = [r for r in seen if "4242" in r.getMessage()]
    assert record.levelno == logging.ERROR and "died" in record.getMessage()


def test_a_refused_cors_preflight_answers_in_the_json_error_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(tmp_path, monkeypatch)
    with TestClient(make_app(s)) as c:
        r = c.options(
            "/api/search",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert _error(r)["code"] == "cors_refused"
