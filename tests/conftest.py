"""Shared fixtures: real corpora, the real embedding model, real SQLite files in temp dirs."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = SHARED / "corpora"
DOCS_VAULT = CORPORA / "obsidian-tasks" / "docs_vault"
DEMO_VAULT = CORPORA / "obsidian-tasks" / "Tasks-Demo_vault"
KNOWLEDGE_VAULT = CORPORA / "vaultofknowledge"
PDFS = CORPORA / "pdfs"
SCIFACT = CORPORA / "scifact"
QUESTIONS = SHARED / "eval" / "vault_questions_dev.jsonl"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this run keeps the model's ONNX graph: exported once per run, by the first process that needs
    it, and loaded by the rest (test servers included), so no test depends on an earlier run's files."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    """No test sees the developer's settings or data dir."""
    for key in list(os.environ):
        if key.startswith("OAA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OAA_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setenv("OAA_MODEL_CACHE", str(model_cache))
    # The monitor samples and runs every component check in the background; only the tests of the
    # monitor (and of what it feeds) turn it on, so no other test shares the cores with it.
    monkeypatch.setenv("OAA_MONITOR__ENABLED", "false")
    # Indexing queues a job that embeds every new chunk's answer sentences; only its own tests run it.
    monkeypatch.setenv("OAA_ANSWER__PREPARE_UNIT_VECTORS", "false")


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from obsidian_ai_agent.embeddings import LocalEmbedder

    return LocalEmbedder()


def wait_for(cond: Callable[[], Any], what: str, limit: float = 60.0) -> Any:
    """Poll `cond()` until it returns something true, and return that; fail saying `what` did not
    happen within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {limit:g} s")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    return dst


@pytest.fixture(scope="session")
def docs_index(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """docs_vault indexed once for the session: (the data dir). Tests that change it copy it first."""
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.engine import Engine

    data = tmp_path_factory.mktemp("docs-index")
    settings = load_settings(data_dir=data)
    with Engine(settings, embedder=embedder) as engine:
        engine.index(DOCS_VAULT)
    yield data


EXAMPLE_VAULT = Path(__file__).resolve().parents[1] / "examples" / "vault"


@pytest.fixture(scope="session")
def _example_index(tmp_path_factory: pytest.TempPathFactory, embedder) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """The example vault (a part of the Tasks docs) copied and indexed once: (vault, data dir)."""
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.engine import Engine

    base = tmp_path_factory.mktemp("example")
    vault = copy_tree(EXAMPLE_VAULT, base / "vault")
    data = base / "data"
    with Engine(load_settings(data_dir=data), embedder=embedder) as engine:
        engine.index(vault)
    return vault, data


@pytest.fixture
def example(tmp_path: Path, _example_index: tuple[Path, Path], embedder):  # type: ignore[no-untyped-def]
    """A private, already indexed copy of the example vault: mutate it freely. Yields (engine, vault)."""
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.engine import Engine

    vault_src, data_src = _example_index
    vault = copy_tree(vault_src, tmp_path / "vault")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy2(data_src / "index.sqlite", data / "index.sqlite")
    # A copy moves the files: keep mtimes so the copy counts as unchanged, as the original did.
    for src in vault_src.rglob("*"):
        if src.is_file():
            dst = vault / src.relative_to(vault_src)
            st = src.stat()
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    engine = Engine(load_settings(data_dir=data), embedder=embedder)
    engine.store.set_meta("vault_root", str(vault.resolve()))
    yield engine, vault
    engine.close()


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """Tasks-Demo_vault indexed once for the session: (the data dir). Tests that change it copy it first."""
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.engine import Engine

    data = tmp_path_factory.mktemp("demo-index")
    with Engine(load_settings(data_dir=data), embedder=embedder) as engine:
        engine.index(DEMO_VAULT)
    yield data
