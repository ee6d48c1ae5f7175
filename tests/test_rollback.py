"""Rollback of a failed upgrade, on a real install with two real releases: the previous release (commit
8216332, schema 9, materialised with `git archive`) serving a copy of the example vault, upgraded to the
working tree (schema 10), broken, and taken back to the previous release and its data by the runbook's
steps (docs/rollback.md), timed from the decision to a healthy service.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .conftest import EXAMPLE_VAULT, copy_tree
from .releases import (
    CURRENT_SCHEMA,
    PREVIOUS_RELEASE,
    PREVIOUS_SCHEMA,
    Install,
    check_reasons,
    failed_checks,
    materialise,
    meta_value,
    migration_count,
    schema_version,
    search_results,
    working_tree,
)

GOAL_SECONDS = 15 * 60
QUERIES = ["how do I make a task repeat", "filter tasks by due date", "custom statuses"]


def test_a_failed_upgrade_is_rolled_back_to_the_previous_release_and_its_data_within_fifteen_minutes(
    tmp_path: Path,
) -> None:
    """The install (the previous release indexes and serves the vault; its smoke passes; three searches
    are recorded), the upgrade (the previous release's `backup` into <data dir>/backups/, stop, the working
    tree's `serve` migrating the same data dir to schema 10), the break (the upgraded index's keyword pages
    overwritten while it is stopped; restarted, its `smoke` fails: the decision to roll back), then the
    rollback, step by step, with the commands an operator types (docs/rollback.md, "Steps"):

    1. `obsidian-ai-agent maintenance on --message ... --until 30m` (if the release has it: the failed one
       does; its monitor is off, so there is no alert to acknowledge),
    2. keep the current state: `alerts list --all --csv` and `backup --output <outside backups/>` (which
       may fail on the damaged index; the runbook goes on),
    3. stop the service,
    4. reinstall the previous release,
    5. `obsidian-ai-agent doctor` with it: its `migrations` check says the index is newer, so restore,
    6. `obsidian-ai-agent restore --latest` with the previous release (the backup made before the upgrade
       is the newest in backups/),
    7. start it, `doctor`, maintenance off if it is on (the restore put back the index of before the
       upgrade, whose maintenance was never on, and the previous release has no such command), and
       `obsidian-ai-agent smoke --url ... --key ...` passes.

    Then: schema 9 again, the three searches answer exactly as before the upgrade, what the restore
    replaced is kept aside, and the time from the failed smoke to the passing one is under the checklist's
    15 minutes.
    """
    from obsidian_ai_agent.store.migrations import MIGRATIONS

    assert migration_count(PREVIOUS_RELEASE) == PREVIOUS_SCHEMA
    assert len(MIGRATIONS) == CURRENT_SCHEMA
    previous = materialise(PREVIOUS_RELEASE, tmp_path / "releases" / "previous")
    current = working_tree()
    assert not previous.has_command("maintenance") and not previous.has_monitor
    assert current.has_command("maintenance") and current.has_monitor

    # The example vault (26 notes of the Tasks docs): the old release indexes it, so it is kept small.
    vault = copy_tree(EXAMPLE_VAULT, tmp_path / "vault")
    install = Install.create(tmp_path / "data", vault, tmp_path / "serve.log", os.environ)
    assert current.imported_from(install.env(current)) == current.package / "__init__.py"
    db, data = install.db, install.data

    try:
        # -- the install: the previous release indexes the vault (serve indexes first) and serves it.
        t0 = time.monotonic()
        service = install.start(previous)
        install_s = time.monotonic() - t0
        assert schema_version(db) == PREVIOUS_SCHEMA
        code, report = install.smoke(previous, service)
        assert code == 0, f"the previous release's own smoke fails: {failed_checks(report) or report}"
        before = search_results(service.url, install.key, QUERIES)
        assert all(before.values()), before

        # -- the upgrade: a backup by the previous release, stop, the working tree on the same data dir.
        up = install.upgrade(previous, current, service)
        service, backup = up.service, up.backup
        assert Path(backup["path"]).parent == data / "backups"
        assert backup["manifest"]["schema_version"] == PREVIOUS_SCHEMA
        assert schema_version(db) == CURRENT_SCHEMA
        assert schema_version(data / f"index.sqlite.pre-migration-v{PREVIOUS_SCHEMA}") == PREVIOUS_SCHEMA
        assert all(search_results(service.url, install.key, QUERIES).values())  # the upgrade itself worked

        # -- the break: the upgraded index damaged while the service is down; it starts, smoke fails.
        broken = install.break_upgrade(current, service)
        service, decision = broken.service, broken.decision
        failed = failed_checks(broken.smoke)
        assert broken.pages > 0
        assert broken.smoke_exit == 1 and "search" in failed, f"smoke passed a damaged index: {broken.smoke}"
        print(f"\nthe upgraded release fails smoke: {failed}")

        # -- the rollback, timed from the decision to the first passing smoke of the previous release.
        rb = install.roll_back(
            current, service, PREVIOUS_RELEASE, tmp_path / "releases" / "reinstalled", decision
        )
        print(f"rollback, decision to a passing smoke: {rb.seconds:.1f} s; steps {rb.laps}")
        print(
            f"install {install_s:.1f} s, backup {up.backup_seconds:.1f} s ({backup['size']} bytes), "
            f"upgrade {up.seconds:.1f} s"
        )
        print(f"kept state: {rb.kept_state}")
        assert rb.smoke_exit == 0, f"smoke fails after the rollback: {failed_checks(rb.smoke) or rb.smoke}"
        assert rb.maintenance_was_on
        assert "newer than this program's" in check_reasons(rb.doctor_before)["migrations"], rb.doctor_before
        assert check_reasons(rb.doctor_after)["migrations"].startswith("pass"), rb.doctor_after
        assert check_reasons(rb.doctor_after)["database"].startswith("pass"), rb.doctor_after

        # The previous release and its data are back: schema 9, maintenance not on, the same answers as
        # before the upgrade, and what the restore replaced (the damaged upgraded index with its
        # maintenance on, the key, the settings) is kept aside.
        assert schema_version(db) == PREVIOUS_SCHEMA
        assert meta_value(db, "maintenance") is None
        assert search_results(rb.service.url, install.key, QUERIES) == before
        kept = sorted(p.name for p in data.glob("*.before-restore-*"))
        aside = [n for n in kept if n.startswith("index.sqlite.before-restore-")]
        assert aside, (kept, rb.restore_output)
        assert schema_version(data / aside[0]) == CURRENT_SCHEMA
        assert json.loads(meta_value(data / aside[0], "maintenance") or "{}").get("on") is True
        assert rb.seconds < GOAL_SECONDS, (
            f"the rollback took {rb.seconds:.0f} s from the decision to a healthy service, over the "
            f"checklist's {GOAL_SECONDS} s; steps {rb.laps}"
        )
    finally:
        install.stop_all()
