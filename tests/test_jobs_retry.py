"""Transient failures against a real OpenAI-compatible embeddings server on loopback: retried with
backoff, then quarantined; quarantined sources listed and retried from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent import jobs
from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine

from .conftest import PDFS
from .openai_server import Behaviour, build_app, running

CLI = [str(Path(sys.executable).parent / "obsidian-ai-agent")]


@pytest.fixture(scope="module")
def server(embedder: Any) -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    with running(build_app(embedder, behaviour)) as url:
        yield url, behaviour


@pytest.fixture
def remote(
    tmp_path: Path, server: tuple[str, Behaviour]
) -> Iterator[tuple[Engine, Path, Behaviour, dict[str, str]]]:
    url, behaviour = server
    behaviour.fail_next = 0
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "Tea.md").write_text("# Tea\n\nGreen tea steeps at eighty degrees for two minutes.\n")
    (vault / "Coffee.md").write_text("# Coffee\n\nA pour-over wants a medium grind and a slow spiral.\n")
    env = {
        "OAA_DATA_DIR": str(tmp_path / "data"),
        "OAA_EMBEDDING__PROVIDER": "openai",
        "OAA_EMBEDDING__BASE_URL": url + "/v1",
        "OAA_EMBEDDING__MODEL": "minilm",
        "OAA_EMBEDDING__DIMENSION": "384",
        "OAA_LANES": json.dumps(
            [
                {"name": n, "max_retries": 2, "backoff": 0.01, "backoff_max": 0.05}
                for n in ("bulk", "interactive")
            ]
        ),
    }
    for k, v in env.items():
        os.environ[k] = v
    try:
        with Engine(load_settings()) as engine:
            yield engine, vault, behaviour, env
    finally:
        for k in env:
            os.environ.pop(k, None)


def test_an_embedding_server_that_fails_then_recovers_is_retried_and_the_job_succeeds(
    remote: tuple[Engine, Path, Behaviour, dict[str, str]],
) -> None:
    engine, vault, behaviour, _ = remote
    behaviour.fail_next = 2
    before = behaviour.requests
    job = jobs.run(engine, jobs.submit_reindex(engine, vault))
    assert job.status == "succeeded" and job.result is not None
    assert job.result["retries"] == 2 and job.result["quarantined"] == [] and job.result["indexed"] == 2
    assert behaviour.requests - before == 3  # two 503s, then the answer
    assert engine.jobs.quarantined() == []


def test_a_source_that_fails_for_good_is_quarantined_the_job_goes_on_and_a_retry_brings_it_back(
    remote: tuple[Engine, Path, Behaviour, dict[str, str]],
) -> None:
    engine, vault, behaviour, env = remote
    (vault / "broken.pdf").write_bytes((PDFS / "malformed" / "synthetic_zero-byte.pdf").read_bytes())
    behaviour.fail_next = 3  # the first try and both retries fail
    job = jobs.run(engine, jobs.submit_reindex(engine, vault))
    assert job.status == "succeeded" and job.result is not None
    assert sorted(job.result["quarantined"]) == ["Coffee.md", "Tea.md", "broken.pdf"]
    held = {q["path"]: q for q in engine.jobs.quarantined()}
    assert held["Tea.md"]["stage"] == "embed" and "503" in held["Tea.md"]["error"]
    assert "gave up after 3 attempts" in held["Tea.md"]["error"]
    assert held["broken.pdf"]["stage"] == "parse" and "empty" in held["broken.pdf"]["error"]

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *a], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
        )

    listed = json.loads(run("quarantine", "list", "--json").stdout)["quarantined"]
    assert [q["path"] for q in listed] == ["Coffee.md", "Tea.md", "broken.pdf"]
    one = run("quarantine", "retry", "Tea.md", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["still_quarantined"] == []
    rest = json.loads(run("quarantine", "retry", "--json").stdout)
    assert [q["path"] for q in rest["still_quarantined"]] == ["broken.pdf"]
    assert (
        engine.store.source_by_path("Tea.md") is not None
        and engine.store.source_by_path("Coffee.md") is not None
    )
