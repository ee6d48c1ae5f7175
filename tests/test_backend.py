"""The HTTP service through its ASGI app: the same engine the CLI uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from obsidian_ai_agent.backend import create_app
from obsidian_ai_agent.engine import Engine


@pytest.fixture
def client(example: tuple[Engine, Path]) -> Iterator[TestClient]:
    engine, _ = example
    with TestClient(create_app(engine.settings)) as c:
        yield c


def test_health_answers_without_touching_the_index(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_search_returns_results_with_every_field(client: TestClient) -> None:
    r = client.post("/api/search", json={"query": "how do I add a due date", "k": 3})
    assert r.status_code == 200
    results = r.json()["results"]
    assert (
        len(results) == 3
        and results[0]["path"].endswith(".md")
        and results[0]["link"].startswith("obsidian://")
    )


def test_search_filters_apply_over_http(client: TestClient) -> None:
    r = client.post("/api/search", json={"query": "status", "k": 10, "folder": "Getting Started/Statuses"})
    assert r.status_code == 200
    assert all(x["path"].startswith("Getting Started/Statuses/") for x in r.json()["results"])


@pytest.mark.parametrize(
    ("body", "field"),
    [({"query": "x", "k": 0}, "k"), ({"query": "x", "mode": "fuzzy"}, "mode"), ({"k": 3}, "query")],
)
def test_invalid_requests_get_the_error_shape_naming_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    r = client.post("/api/search", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["message"]
    assert [d["field"] for d in err["details"]] == [field]
