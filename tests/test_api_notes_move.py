"""PUT /api/notes/{path}?moved_from=... over real HTTP: a renamed note is moved within the vault and keeps
its vectors (its new file name is a new title, part of every embedded text), and its old path is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.engine import Engine

from .test_api_index import Api, files_under, running

# Two sections, each long enough to be a chunk of its own.
NOTE = """# Quokka census

The quokka census on Rottnest Island counted twelve thousand marsupials this spring, most of them in
the settlement and around the salt lakes, where the rangers walked the same paths as in every year.

## Diet

Quokkas eat the leaves, grasses and stems of shrubs at night; in the dry months they climb into low
trees for the fresher leaves and go without water for weeks, living on what the plants hold.
"""


@pytest.fixture
def api(example: tuple[Engine, Path]) -> Iterator[Api]:
    with running(example[0]) as a:
        yield a


def move(api: Api, path: str, moved_from: str, content: str | bytes, **params: str) -> Any:
    return api.put(path, content, params={"moved_from": moved_from, "wait": "true", **params})


def test_a_renamed_note_keeps_every_vector_and_its_old_path_is_gone(
    api: Api, example: tuple[Engine, Path]
) -> None:
    engine, vault = example
    first = api.put("Inbox/Quokka census.md", NOTE, params={"wait": "true"}).json()["result"]
    assert first["chunks_embedded"] >= 2
    before = engine.status()

    r = move(api, "Archive/Quokkas.md", "Inbox/Quokka census.md", NOTE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["path"] == "Archive/Quokkas.md" and body["moved_from"] == "Inbox/Quokka census.md"
    result = body["result"]
    # A new file name is a new title, which every chunk's embedded text starts with: without the move
    # every chunk would be embedded again.
    assert result["moved"] == 1 and result["indexed"] == 1
    assert result["chunks_embedded"] == 0 and result["chunks_reused"] == first["chunks_embedded"]

    assert not (vault / "Inbox" / "Quokka census.md").exists()
    assert (vault / "Archive" / "Quokkas.md").read_text() == NOTE
    manifest = api.client.get("/api/notes/manifest", headers=api.writer).json()
    assert "Archive/Quokkas.md" in manifest and "Inbox/Quokka census.md" not in manifest
    after = engine.status()
    assert (after["sources"], after["chunks"], after["vectors"]) == (
        before["sources"],
        before["chunks"],
        before["vectors"],
    )
    hits = api.search("quokkas eat leaves grasses shrubs at night")
    assert hits[0]["path"] == "Archive/Quokkas.md" and hits[0]["title"] == "Quokkas"
    assert all(h["path"] != "Inbox/Quokka census.md" for h in hits)


def test_a_vault_note_moved_to_another_folder_and_name_keeps_its_vectors(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    old = vault / "Getting Started" / "Priority.md"
    content = old.read_bytes()
    r = move(api, "Archive/Task priorities.md", "Getting Started/Priority.md", content)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["moved"] == 1 and r.json()["result"]["chunks_embedded"] == 0
    assert not old.exists() and (vault / "Archive" / "Task priorities.md").read_bytes() == content
    found = [h["path"] for h in api.search("task priority", k=20)]
    assert "Archive/Task priorities.md" in found and "Getting Started/Priority.md" not in found


def test_a_note_only_the_index_still_holds_is_moved_there(api: Api, example: tuple[Engine, Path]) -> None:
    _, vault = example
    api.put("Inbox/Quokka census.md", NOTE, params={"wait": "true"})
    (vault / "Inbox" / "Quokka census.md").unlink()  # gone from the server's vault, not yet from its index
    r = move(api, "Quokkas.md", "Inbox/Quokka census.md", NOTE)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["moved"] == 1 and r.json()["result"]["chunks_embedded"] == 0
    manifest = api.client.get("/api/notes/manifest", headers=api.writer).json()
    assert "Quokkas.md" in manifest and "Inbox/Quokka census.md" not in manifest


def test_a_note_edited_as_well_as_moved_is_written_at_its_new_path_and_the_old_one_removed(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    api.put("Inbox/Quokka census.md", NOTE, params={"wait": "true"})
    edited = NOTE.replace("twelve thousand", "eleven thousand")
    r = move(api, "Archive/Quokkas.md", "Inbox/Quokka census.md", edited)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["indexed"] == 1
    assert (vault / "Archive" / "Quokkas.md").read_text() == edited
    assert not (vault / "Inbox" / "Quokka census.md").exists()
    manifest = api.client.get("/api/notes/manifest", headers=api.writer).json()
    assert "Inbox/Quokka census.md" not in manifest
    assert api.search("quokka census eleven thousand marsupials")[0]["path"] == "Archive/Quokkas.md"


def test_a_retried_move_answers_404_and_the_plain_put_it_falls_back_to_changes_nothing(
    api: Api, example: tuple[Engine, Path]
) -> None:
    api.put("Inbox/Quokka census.md", NOTE, params={"wait": "true"})
    assert move(api, "Quokkas.md", "Inbox/Quokka census.md", NOTE).status_code == 200
    again = move(api, "Quokkas.md", "Inbox/Quokka census.md", NOTE)
    assert again.status_code == 404
    error = again.json()["error"]
    assert error["code"] == "not_found" and "plain PUT" in error["message"]
    plain = api.put("Quokkas.md", NOTE, params={"wait": "true"})
    assert plain.status_code == 200 and plain.json()["result"]["unchanged"] == 1
    assert plain.json().get("moved_from") is None


@pytest.mark.parametrize(
    ("moved_from", "status", "code"),
    [
        ("../outside.md", 400, "bad_path"),
        ("Notes/..%2F..%2Fx.md", 400, "bad_path"),
        (".obsidian/x.md", 400, "bad_path"),
        ("/etc/passwd", 400, "bad_path"),
        ("Getting Started/Priority.txt", 400, "bad_path"),
        ("", 400, "bad_path"),
        ("Nowhere/Missing.md", 404, "not_found"),
        ("Getting Started/Dates.md", 422, "validation_error"),
    ],
)
def test_a_bad_moved_from_is_refused_with_the_reason_and_nothing_is_written(
    api: Api, example: tuple[Engine, Path], moved_from: str, status: int, code: str
) -> None:
    engine, vault = example
    before = files_under(vault.parent, skip=engine.settings.data_dir)
    r = api.client.put(
        f"/api/notes/Getting Started/Dates.md?moved_from={moved_from}",
        content=b"# Dates\n\nmoved over\n",
        headers={**api.writer, "Content-Type": "text/markdown"},
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    if status != 404:
        assert error["details"][0]["field"] == "moved_from"
    assert files_under(vault.parent, skip=engine.settings.data_dir) == before


def test_a_move_onto_a_path_under_a_file_is_a_409_and_the_note_stays_where_it_was(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    r = move(api, "Getting Started/Dates.md/Moved.md", "Getting Started/Priority.md", "# Moved\n")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict" and "in the way" in r.json()["error"]["message"]
    assert (vault / "Getting Started" / "Priority.md").is_file()


def test_a_symlinked_note_is_not_carried_along_its_text_is_written_at_the_new_path(
    api: Api, example: tuple[Engine, Path]
) -> None:
    _, vault = example
    (vault / "Linked.md").symlink_to(vault / "Getting Started" / "Priority.md")
    r = move(api, "Archive/Linked.md", "Linked.md", "# Linked\n\nA note of its own now.\n")
    assert r.status_code == 200, r.text
    moved = vault / "Archive" / "Linked.md"
    assert not moved.is_symlink() and moved.read_text() == "# Linked\n\nA note of its own now.\n"
    assert not (vault / "Linked.md").is_symlink() and (vault / "Getting Started" / "Priority.md").is_file()


def test_moved_from_is_described_in_openapi(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    put = schema["paths"]["/api/notes/{path}"]["put"]
    [param] = [p for p in put["parameters"] if p["name"] == "moved_from"]
    assert param["in"] == "query" and "keeps its vectors" in param["description"]
    assert {"404", "422"} <= set(put["responses"])
