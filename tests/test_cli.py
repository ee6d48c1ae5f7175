"""The command line as a user runs it: a real process, JSON on stdout, errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from obsidian_ai_agent.engine import Engine

from .conftest import PDFS

CLI = [str(Path(sys.executable).parent / "obsidian-ai-agent")]


def run(
    *args: str, data: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    if data is not None:
        full_env["OAA_DATA_DIR"] = str(data)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=300)


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_index_prints_the_documented_json_and_a_progress_bar_on_stderr(example: tuple[Engine, Path]) -> None:
    engine, vault = example
    data = engine.settings.data_dir
    engine.close()
    (vault / "broken.pdf").write_bytes((PDFS / "malformed" / "synthetic_not-a-pdf.pdf").read_bytes())
    (vault / "Getting Started" / "Tags.md").unlink()
    report = as_json(proc := run("index", str(vault), "--json", data=data))
    assert {"indexed", "unchanged", "removed", "chunks_embedded", "failed"} <= set(report)
    assert report["removed"] == 1 and report["indexed"] == 0 and report["chunks_embedded"] == 0
    assert report["failed"] == [{"path": "broken.pdf", "error": "not a PDF file"}]
    assert "indexing" in proc.stderr


def test_search_json_has_every_result_field(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    out = as_json(
        run(
            "search",
            "custom statuses",
            "--k",
            "3",
            "--mode",
            "keyword",
            "--json",
            data=engine.settings.data_dir,
        )
    )
    assert len(out["results"]) == 3
    fields = {
        "path",
        "title",
        "heading_path",
        "start_line",
        "end_line",
        "page",
        "snippet",
        "score",
        "keyword_rank",
        "semantic_rank",
        "link",
        "kind",
    }
    assert fields <= set(out["results"][0])
    assert out["results"][0]["link"].startswith("obsidian://open?vault=vault&file=")


def test_status_reports_counts_model_generation_and_database(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    out = as_json(run("status", "--json", data=engine.settings.data_dir))
    counts = engine.store.counts()
    assert out["sources"] == counts["sources"] and out["chunks"] == out["vectors"] == counts["chunks"]
    assert out["embedding_model"] == "all-MiniLM-L6-v2" and out["index_generation"] > 0
    assert out["database"] == str(engine.settings.database_path)


def test_related_lists_linked_and_similar_notes(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    out = as_json(
        run("related", "Getting Started/Dates.md", "--k", "5", "--json", data=engine.settings.data_dir)
    )
    assert len(out["results"]) == 5 and all(r["path"] != "Getting Started/Dates.md" for r in out["results"])


def test_config_show_prints_effective_settings_with_secrets_redacted(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("search:\n  k: 4\n", encoding="utf-8")
    proc = run("config", "show", "--json", data=tmp_path, env={"OAA_EMBEDDING__API_KEY": "sk-do-not-print"})
    out = as_json(proc)
    assert out["search"]["k"] == 4 and out["embedding"]["api_key"] == "**********"
    assert "sk-do-not-print" not in proc.stdout + proc.stderr


def test_a_bad_setting_stops_the_command_with_the_field_named(tmp_path: Path) -> None:
    proc = run("status", data=tmp_path, env={"OAA_SEARCH__DEFAULT_MODE": "fuzzy"})
    assert proc.returncode == 2
    assert "search.default_mode" in proc.stderr and "OAA_SEARCH__DEFAULT_MODE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_vault_is_a_one_line_error(tmp_path: Path) -> None:
    proc = run("index", str(tmp_path / "nowhere"), data=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_a_note_not_in_the_index_is_a_one_line_error(example: tuple[Engine, Path]) -> None:
    engine, _ = example
    proc = run("related", "missing.md", data=engine.settings.data_dir)
    assert proc.returncode == 1 and "not in the index" in proc.stderr and "Traceback" not in proc.stderr
