"""Upgrade and rollback of a real install of vaultofknowledge, timed: the runbook's rollback
(docs/rollback.md, "Steps") from the decision to a healthy service, against the checklist's 15 minutes.

The run of tests/test_rollback.py on a larger vault, with the same two releases and the same code
(tests/releases.py): the previous release (commit 8216332, schema 9, materialised with `git archive`, run
with this virtualenv) indexes and serves a copy of the vault; the upgrade is its `backup`, a stop and the
working tree's `serve` on the same data dir (migrating it to schema 10); the break is the upgraded index's
keyword pages overwritten while it is stopped, so the restarted service fails `smoke`: the decision. The
rollback is the runbook's steps, each timed: maintenance on, keep the current state (alerts CSV, a backup
outside backups/), stop, reinstall the previous release, `doctor` decides, `restore --latest`, start,
`doctor`, maintenance off if on, `smoke --url ... --key ...`.

Figures: backup seconds and bytes, upgrade seconds (the backup to the upgraded service healthy), rollback
seconds (the failed smoke to the first passing one) with each step's share, and whether the searches after
the rollback are those of before the upgrade. The install (the previous release indexing the vault: about
35 minutes on 2 busy cores) is built once into bench/.cache/rollback-vok-<notes>/ and copied back for every
run; `--fresh` rebuilds it.

Usage: python bench/rollback.py [--limit N] [--quick] [--fresh] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CACHE_DIR,
    REPO_DIR,
    VAULT_OF_KNOWLEDGE,
    add_common_args,
    emit,
    goal,
    log,
    read_marker,
    write_marker,
)

sys.path.insert(0, str(REPO_DIR))

from tests.releases import (
    CURRENT_SCHEMA,
    PREVIOUS_RELEASE,
    PREVIOUS_SCHEMA,
    Install,
    check_reasons,
    failed_checks,
    materialise,
    meta_value,
    schema_version,
    search_results,
    working_tree,
)

GOAL_SECONDS = 15 * 60
QUERIES = ["spaced repetition", "how to take smart notes", "stoicism and the dichotomy of control"]


def copy_vault(src: Path, dst: Path, limit: int | None) -> int:
    """The vault (or its first `limit` notes, sorted by path) copied with mtimes, writable; notes copied."""
    from obsidian_ai_agent.notes import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, scan_vault

    files = sorted(scan_vault(src, list(DEFAULT_INCLUDE), list(DEFAULT_EXCLUDE)), key=lambda f: f.rel_path)
    if limit:
        files = files[:limit]
    for f in files:
        target = dst / f.rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f.abs_path, target)
        os.chmod(target, 0o644)
    for root, dirs, _ in os.walk(dst):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    return len(files)


def copy_install(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)  # copy2: the vault's mtimes stay, so it is unchanged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N notes of the vault")
    args = p.parse_args()
    if args.quick:
        args.limit = args.limit or 150

    base = CACHE_DIR / f"rollback-vok-{args.limit or 'all'}"
    root, pristine = base / "install", base / "pristine"
    base.mkdir(parents=True, exist_ok=True)
    (base / "serve.log").write_text("")
    releases = base / "releases"
    if releases.exists():
        shutil.rmtree(releases)
    previous = materialise(PREVIOUS_RELEASE, releases / "previous")
    current = working_tree()

    marker = read_marker(pristine)
    cached = bool(marker and marker.get("release") == PREVIOUS_RELEASE and not args.fresh)
    install = Install(
        root / "data", root / "vault", base / "serve.log", os.environ, {"OAA_LOG_LEVEL": "WARNING"}
    )
    db, data = install.db, install.data
    result: dict[str, Any] = {"vault": str(VAULT_OF_KNOWLEDGE), "previous_release": PREVIOUS_RELEASE}
    try:
        t0 = time.monotonic()
        if cached and marker is not None:
            log(f"install: the cached one in {pristine}")
            copy_install(pristine, root)
            notes = int(marker["notes"])
            service = install.start(previous)
        else:
            log(f"install: the previous release indexes {VAULT_OF_KNOWLEDGE} (once; cached in {pristine})")
            for d in (root, pristine):
                if d.exists():
                    shutil.rmtree(d)
            notes = copy_vault(VAULT_OF_KNOWLEDGE, install.vault, args.limit)
            install = Install.create(data, install.vault, install.log, os.environ, settings=install.settings)
            service = install.start(previous, timeout=4 * 3600)
        install_s = time.monotonic() - t0
        assert schema_version(db) == PREVIOUS_SCHEMA
        code, report = install.smoke(previous, service)
        if code != 0:
            raise SystemExit(f"the previous release's own smoke fails: {failed_checks(report) or report}")
        if not cached:
            service.stop()  # a clean stop checkpoints the WAL: the copy is the whole index
            copy_install(root, pristine)
            info = {
                "release": PREVIOUS_RELEASE,
                "notes": notes,
                "index_and_start_seconds": round(install_s, 1),
            }
            write_marker(pristine, info)
            service = install.start(previous)
        before = search_results(service.url, install.key, QUERIES)
        result["install"] = {
            "notes": notes,
            "cached": cached,
            "index_and_start_seconds": (marker or {}).get("index_and_start_seconds")
            if cached
            else round(install_s, 1),
            "start_seconds": round(install_s, 2) if cached else None,
            "index_bytes": db.stat().st_size,
        }

        log("upgrade: backup by the previous release, stop, the working tree on the same data dir")
        up = install.upgrade(previous, current, service)
        service, backup = up.service, up.backup
        assert schema_version(db) == CURRENT_SCHEMA
        result["backup"] = {
            "seconds": round(up.backup_seconds, 2),
            "seconds_in_backup": backup["seconds"],
            "bytes": backup["size"],
            "schema_version": backup["manifest"]["schema_version"],
        }
        result["upgrade"] = {
            "seconds": round(up.seconds, 2),
            "pre_migration_copy": (data / f"index.sqlite.pre-migration-v{PREVIOUS_SCHEMA}").is_file(),
        }

        log("break: the upgraded index's keyword pages overwritten while it is stopped")
        broken = install.break_upgrade(current, service)
        service, decision = broken.service, broken.decision
        if broken.smoke_exit != 1:
            raise SystemExit(f"smoke passed a damaged index: {broken.smoke}")
        result["break"] = {
            "pages_overwritten": broken.pages,
            "failed_checks": sorted(failed_checks(broken.smoke)),
        }

        log("rollback: the runbook's steps")
        rb = install.roll_back(current, service, PREVIOUS_RELEASE, releases / "reinstalled", decision)
        if rb.smoke_exit != 0:
            raise SystemExit(f"smoke fails after the rollback: {failed_checks(rb.smoke) or rb.smoke}")
        result["rollback"] = {
            "seconds": round(rb.seconds, 2),
            "steps_seconds": rb.laps,
            "goal_seconds": goal(round(rb.seconds, 2), "<=", GOAL_SECONDS),
            "kept_state": rb.kept_state,
            "doctor_before_restore": {
                k: v for k, v in check_reasons(rb.doctor_before).items() if k in ("database", "migrations")
            },
            "doctor_after_start_failed": failed_checks(rb.doctor_after),
        }
        result["after"] = {
            "schema_version": schema_version(db),
            "maintenance": meta_value(db, "maintenance"),
            "searches_as_before_upgrade": search_results(rb.service.url, install.key, QUERIES) == before,
            "kept_aside": sorted(p.name for p in data.glob("*.before-restore-*")),
        }
    finally:
        install.stop_all()
    emit("rollback", result, args.out)


if __name__ == "__main__":
    main()
