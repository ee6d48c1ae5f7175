"""Every route of the running service against its own OpenAPI schema, with schemathesis over real HTTP:
no 5xx, no status, content type, header or body outside what the schema says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import copy_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("OAA_SCHEMA_EXAMPLES", "12"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, _example_index: tuple[Path, Path]) -> Iterator[Any]:
    """`uvicorn obsidian_ai_agent.backend:app` on a loopback port over a copy of the indexed example vault."""
    vault_src, data_src = _example_index
    base = tmp_path_factory.mktemp("schema")
    vault = copy_tree(vault_src, base / "vault")
    data = base / "data"
    data.mkdir()
    (data / "index.sqlite").write_bytes((data_src / "index.sqlite").read_bytes())
    port = free_port()
    log = base / "server.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OAA_")},
        "OAA_DATA_DIR": str(data),
        "OAA_VAULT": str(vault),
        "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
        "OAA_ANSWER__PREPARE_UNIT_VECTORS": "false",
        "OAA_SERVER__REQUEST_TIMEOUT": "30",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "obsidian_ai_agent.backend:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),  # a file, not a pipe: nobody reads a pipe, and a full one blocks the server
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    # One client for the polling: building one per poll cost ~0.1-0.2 s of CPU each time, taken from the
    # starting service.
    with httpx.Client(timeout=2) as client:
        while True:
            try:
                if client.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the service did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
    key = (data / "admin.key").read_text().strip()
    yield url, key
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def api_schema(running: tuple[str, str]) -> Any:
    url, _ = running
    return schemathesis.openapi.from_url(url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_route_answers_within_its_schema_and_never_with_a_server_error(
    case: Any, running: tuple[str, str]
) -> None:
    url, key = running
    case.call_and_validate(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=60,
    )
