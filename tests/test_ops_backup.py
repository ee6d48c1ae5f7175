"""Backups and restores on real index files, with real processes holding them and a real reindex writing."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.engine import Engine
from obsidian_ai_agent.jobs import run, submit
from obsidian_ai_agent.ops.backup import (
    BackupError,
    BackupScheduler,
    create_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from obsidian_ai_agent.store import Store
from obsidian_ai_agent.store.migrations import MIGRATIONS

QUERIES = ["priority of a task", "recurring tasks every week", "custom statuses"]
NOTE = "Getting Started/Priority.md"
ADDED = "\n\n## Backup marker\n\nThe priority of a task decides its order: urgent tasks come first.\n"


def results(engine: Engine) -> list[list[dict[str, Any]]]:
    found = []
    for q in QUERIES:
        found.append(
            [{k: v for k, v in r.to_dict().items() if k != "chunk_id"} for r in engine.search(q, k=5)]
        )
    return found


def cli(*args: str, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if data is not None:
        env["OAA_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, "-m", "obsidian_ai_agent.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def repack(
    archive: Path,
    target: Path,
    change_db: Callable[[Path], None] | None = None,
    recompute: bool = False,
) -> Path:
    """A copy of an archive with its index changed; with `recompute`, a manifest that agrees with it."""
    work = target.parent / (target.name + ".work")
    work.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    if change_db is not None:
        change_db(work / "index.sqlite")
    manifest = json.loads((work / "manifest.json").read_text())
    if recompute:
        for name in manifest["members"]:
            data = (work / name).read_bytes()
            manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        (work / "manifest.json").write_text(json.dumps(manifest))
    with tarfile.open(target, "w:gz") as tar:
        for name in ["manifest.json", *manifest["members"]]:
            tar.add(work / name, arcname=name)
    return target


def flip_a_byte(db: Path) -> None:
    """Damage the chunks table: flip the page-type byte of its root page (a byte in free space or an
    unused page would pass every integrity check, so the byte is chosen where a check must look)."""
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='chunks'").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page_size] ^= 0xFF
    db.write_bytes(bytes(data))


def newer_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(len(MIGRATIONS) + 1),))
    conn.commit()
    conn.close()


def test_a_backup_taken_while_a_reindex_writes_restores_to_identical_search_results(
    example: tuple[Engine, Path], embedder: Any, tmp_path: Path
) -> None:
    engine, vault = example
    note = vault / NOTE
    original = note.read_text(encoding="utf-8")
    state_a = results(engine)
    note.write_text(original + ADDED, encoding="utf-8")
    engine.index(vault)
    state_b = results(engine)
    assert state_a != state_b

    stop = threading.Event()
    toggles = []

    def writer() -> None:  # the note flips between its two versions, each a reindex, until told to stop
        while not stop.is_set():
            note.write_text(original if len(toggles) % 2 == 0 else original + ADDED, encoding="utf-8")
            engine.index(vault)
            toggles.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not toggles:
            stop.wait(0.01)
        archives = [create_backup(engine.settings, tmp_path / f"during-{i}.tar.gz").path for i in range(3)]
    finally:
        stop.set()
        thread.join()
    assert len(toggles) >= 2
    for i, archive in enumerate(archives):
        restored = tmp_path / f"restored-{i}"
        restore_backup(load_settings(data_dir=restored), archive)
        with Engine(load_settings(data_dir=restored), embedder=embedder) as again:
            assert results(again) in (state_a, state_b)


def test_a_tampered_archive_is_refused_and_nothing_is_replaced(
    example: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, _ = example
    good = create_backup(engine.settings).path
    engine.close()
    data = engine.settings.data_dir
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    tampered = repack(good, tmp_path / "tampered.tar.gz", flip_a_byte)
    with pytest.raises(BackupError, match="does not match its SHA-256"):
        restore_backup(engine.settings, tampered)
    proc = cli("backup", "verify", str(tampered))
    assert proc.returncode == 1 and "SHA-256" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    damaged = repack(good, tmp_path / "damaged.tar.gz", flip_a_byte, recompute=True)
    with pytest.raises(BackupError, match=r"integrity|not a usable"):
        restore_backup(engine.settings, damaged)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BackupError, match="not a readable backup archive"):
        restore_backup(engine.settings, truncated)
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before
    assert not [p for p in data.iterdir() if p.name.startswith(".restore-")]


def test_an_archive_from_a_newer_schema_is_refused_with_the_reason(
    example: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, _ = example
    good = create_backup(engine.settings).path
    newer = repack(good, tmp_path / "newer.tar.gz", newer_schema, recompute=True)
    with pytest.raises(BackupError, match=f"schema version {len(MIGRATIONS) + 1}, newer than this program"):
        verify_backup(newer)
    with pytest.raises(BackupError, match="newer than this program"):
        restore_backup(load_settings(data_dir=tmp_path / "new"), newer)
    assert not (tmp_path / "new" / "index.sqlite").exists()


def test_backup_and_restore_latest_round_trip_through_the_command_line(
    example: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, _ = example
    data = engine.settings.data_dir
    (data / "admin.key").write_text("oaa_0123456789ab_" + "x" * 43 + "\n")
    (data / "admin.key").chmod(0o600)
    made = json.loads(cli("backup", "--json", data=data).stdout)
    archive = Path(made["path"])
    assert archive.parent == data / "backups" and archive.stat().st_mode & 0o777 == 0o600
    assert set(made["manifest"]["members"]) == {"index.sqlite", "admin.key"}
    with tarfile.open(archive) as tar:
        assert all(m.mode == 0o600 for m in tar.getmembers())
    counts = engine.store.counts()
    assert made["manifest"]["counts"]["sources"] == counts["sources"]
    assert made["manifest"]["counts"]["chunks"] == counts["chunks"]
    assert made["manifest"]["embedding_model"] == "all-MiniLM-L6-v2"

    engine.indexer.remove([NOTE])  # a change after the backup, which the restore must undo
    (data / "admin.key").write_text("changed\n")
    refused = cli("restore", "--latest", data=data)  # this test process still holds the index open
    assert refused.returncode == 1 and f"pid {os.getpid()}" in refused.stderr and "--force" in refused.stderr
    engine.close()
    proc = cli("restore", "--latest", "--json", data=data)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    kept = {Path(p).name.split(".before-restore-")[0] for p in done["kept_aside"]}
    assert {"index.sqlite", "admin.key"} <= kept
    assert (data / "admin.key").read_text().startswith("oaa_0123456789ab_")
    with Store(data / "index.sqlite") as store:
        assert store.counts() == counts and store.source_by_path(NOTE) is not None
    other = tmp_path / "elsewhere"
    proc = cli("restore", str(archive), "--data-dir", str(other))
    assert proc.returncode == 0, proc.stderr
    assert (other / "index.sqlite").is_file() and (other / "admin.key").stat().st_mode & 0o777 == 0o600


def test_an_index_is_copied_aside_before_a_schema_migration(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for migration in MIGRATIONS[:5]:
        migration(conn)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '5')")
    conn.execute("COMMIT")
    conn.close()
    with Store(db) as store:
        assert store.schema_version == len(MIGRATIONS)
    copy = tmp_path / "index.sqlite.pre-migration-v5"
    with sqlite3.connect(copy) as old:
        assert old.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("5",)
    Store(db).close()  # current already: no second copy
    assert sorted(p.name for p in tmp_path.glob("*.pre-migration-*")) == [copy.name]


def test_scheduled_backups_run_as_jobs_and_keep_the_newest(
    example: tuple[Engine, Path], embedder: Any
) -> None:
    engine, _ = example
    s = load_settings(data_dir=engine.settings.data_dir, backup={"schedule": 3600, "keep": 2})
    with Engine(s, embedder=embedder) as e:
        scheduler = BackupScheduler(e)
        first = scheduler.tick()
        assert first is not None and scheduler.tick() == first  # one job while one is unfinished
        job = run(e, first)
        assert job.status == "succeeded", job.error
        assert scheduler.tick() is None  # the newest backup is younger than the schedule
        for _ in range(2):
            assert run(e, submit(e, "backup", {})).status == "succeeded"
        kept = list_backups(s)
        assert len(kept) == 2 and Path(job.result["path"]) not in kept  # type: ignore[index]
        for archive in kept:
            verify_backup(archive)
