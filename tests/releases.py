"""Two real releases of this repository side by side, for the tests (and bench scripts) that install one,
upgrade to the other and roll back.

The working tree is the current release (the virtualenv's editable install). An older commit is
materialised with `git archive` into a folder of its own, read-only for the checkout, and run with the same
interpreter and packages: its `src` goes first on `PYTHONPATH`, which Python puts on `sys.path` before the
site-packages' `.pth` of the editable install (`materialise` checks that it really does).

`Service` runs `serve` of one release on a data dir; `stop` ends that one process (and nothing else).
`Install` is one data dir (with its vault in `config.yaml`) served by one release after another, and
`Install.roll_back` is the rollback of docs/rollback.md ("Steps", an upgrade in place), timed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parents[1]

PREVIOUS_RELEASE = "8216332"
"""The release before the monitor: schema 9 (no monitoring tables), no `maintenance` command."""

PREVIOUS_SCHEMA = 9
CURRENT_SCHEMA = 10


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Release:
    """One release: `src` is the folder holding its `obsidian_ai_agent` package, or None for the working
    tree (whatever the virtualenv imports)."""

    name: str
    src: Path | None = None
    python: str = sys.executable

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "obsidian_ai_agent", *args]

    def env(self, base: Mapping[str, str], **extra: str) -> dict[str, str]:
        env = {**base, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
        env.pop("PYTHONPATH", None)
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        return env

    @property
    def has_monitor(self) -> bool:
        """Whether the release knows the `monitor.*` settings (older ones refuse them as unknown)."""
        return (self.package / "monitoring_config.py").is_file()

    def has_command(self, name: str) -> bool:
        """Whether the release's CLI has a command module `cli/<name>.py` (e.g. `maintenance`)."""
        return (self.package / "cli" / f"{name}.py").is_file()

    @property
    def package(self) -> Path:
        return (self.src if self.src is not None else REPO / "src") / "obsidian_ai_agent"

    def run(
        self, *args: str, env: Mapping[str, str], timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one CLI command of this release to its end; with `check`, a non-zero exit raises with its
        output."""
        run = subprocess.run(
            self.argv(*args), cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=timeout
        )
        if check and run.returncode != 0:
            raise AssertionError(
                f"{self.name}: `obsidian-ai-agent {' '.join(args)}` exited {run.returncode}\n"
                f"stdout: {run.stdout[-3000:]}\nstderr: {run.stderr[-3000:]}"
            )
        return run

    def imported_from(self, env: Mapping[str, str]) -> Path:
        """The `obsidian_ai_agent/__init__.py` this release's interpreter imports."""
        code = "import obsidian_ai_agent; print(obsidian_ai_agent.__file__)"
        run = subprocess.run(
            [self.python, "-c", code], cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=60
        )
        if run.returncode != 0:
            raise RuntimeError(f"{self.name} does not import: {run.stderr[-2000:]}")
        return Path(run.stdout.strip())


def working_tree() -> Release:
    return Release("working tree")


def materialise(commit: str, into: Path) -> Release:
    """`git archive <commit> src` unpacked into `into` (nothing of the checkout changes); the release runs
    from `into/src`. Raises when that folder would not be the one imported."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True, timeout=120
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=120)
    release = Release(f"release {commit}", into / "src")
    got = release.imported_from(release.env(os.environ))
    want = release.package / "__init__.py"
    if got.resolve() != want.resolve():
        raise RuntimeError(f"PYTHONPATH={release.src} imports {got}, not {want}: the editable install wins")
    return release


def schema_version(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    finally:
        con.close()
    return int(row[0])


def meta_value(db: Path, key: str) -> str | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    finally:
        con.close()
    return None if row is None else str(row[0])


def migration_count(commit: str) -> int:
    """How many entries the MIGRATIONS list of `commit` has (its schema version)."""
    text = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:src/obsidian_ai_agent/store/migrations.py"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    body = text.split("MIGRATIONS: list[Migration] = [", 1)[1].split("]", 1)[0]
    return sum(1 for line in body.splitlines() if line.strip().rstrip(",").startswith("m0"))


class Service:
    """`serve` of one release on one data dir, its stderr in `log`."""

    def __init__(
        self, release: Release, env: Mapping[str, str], log: Path, *args: str, port: int | None = None
    ) -> None:
        self.release, self.log = release, log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log: IO[Any] = log.open("a")
        self._log.write(f"\n--- {release.name}: serve --port {self.port} {' '.join(args)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            release.argv("serve", "--port", str(self.port), *args),
            cwd=REPO,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")[-n:]

    def wait_healthy(self, key_file: Path, timeout: float = 600) -> float:
        """Until `/health` answers and `/status` with the admin key does (the worker is warm and has read
        the index); seconds waited. Raises if the process ends first."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.release.name} ended with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{self.release.name} not healthy in {timeout:g} s:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200 and key_file.is_file():
                    key = key_file.read_text().strip()
                    r = httpx.get(self.url + "/status", headers={"X-API-Key": key}, timeout=30)
                    if r.status_code == 200:
                        return time.monotonic() - started
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


def search_results(url: str, key: str, queries: Sequence[str], k: int = 10) -> dict[str, list[Any]]:
    """What `POST /api/search` answers to each query: (path, chunk id, start line) per result, in order."""
    out: dict[str, list[Any]] = {}
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for q in queries:
            r = client.post("/api/search", json={"query": q, "k": k})
            r.raise_for_status()
            out[q] = [[h["path"], h["chunk_id"], h.get("start_line")] for h in r.json()["results"]]
    return out


def damage_keyword_index(db: Path) -> int:
    """Overwrite every page of the FTS5 keyword index's data table (`chunks_fts_data`) with garbage, as a
    failed disk or an interrupted copy during an upgrade would: the file still opens, its tables of sources,
    chunks, keys and settings read, but every keyword search and `quick_check` fail. The database must be
    closed by every process. Returns the pages overwritten."""
    con = sqlite3.connect(str(db))
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = int(con.execute("PRAGMA page_size").fetchone()[0])
        pages = [int(r[0]) for r in con.execute("SELECT pageno FROM dbstat WHERE name='chunks_fts_data'")]
    finally:
        con.close()
    if not pages:
        raise AssertionError(f"{db} has no chunks_fts_data pages")
    garbage = (b"\xde\xad\xbe\xef" * (page_size // 4 + 1))[:page_size]
    with open(db, "r+b") as f:
        for pageno in pages:
            f.seek((pageno - 1) * page_size)
            f.write(garbage)
        f.flush()
        os.fsync(f.fileno())
    return len(pages)


def report_of(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON a `--json` command printed, or its output when it printed none."""
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        return {"stdout": run.stdout[-3000:], "stderr": run.stderr[-3000:]}
    return doc if isinstance(doc, dict) else {"json": doc}


def failed_checks(report: dict[str, Any]) -> dict[str, str]:
    """The failed checks of a `smoke` or `doctor` report, each reason cut to its first line."""
    return {
        c["name"]: c["reason"].splitlines()[0][:200]
        for c in report.get("checks", [])
        if c["status"] == "fail"
    }


def check_reasons(report: dict[str, Any]) -> dict[str, str]:
    return {
        c["name"]: f"{c['status']}: {c['reason'].splitlines()[0][:200]}" for c in report.get("checks", [])
    }


@dataclass
class Rollback:
    """What `Install.roll_back` did: the seconds from the decision to the first passing smoke, each step's
    share, and what the commands answered."""

    release: Release
    service: Service
    seconds: float
    laps: dict[str, float]
    maintenance_was_on: bool
    kept_state: dict[str, str]
    doctor_before: dict[str, Any]
    restore_output: str
    doctor_after: dict[str, Any]
    smoke: dict[str, Any]
    smoke_exit: int


@dataclass
class Upgrade:
    """What `Install.upgrade` did: the previous release's backup (its `--json` answer), how long the
    backup and the whole upgrade took, and the upgraded service."""

    backup: dict[str, Any]
    backup_seconds: float
    seconds: float
    service: Service


@dataclass
class Break:
    """What `Install.break_upgrade` did: pages overwritten, the failing smoke and when it answered (the
    decision, monotonic), and the restarted service."""

    pages: int
    smoke_exit: int
    smoke: dict[str, Any]
    decision: float
    service: Service


@dataclass
class Install:
    """A data dir whose `config.yaml` names the vault, served by one release after another. Every service
    it starts is stopped by `stop_all`."""

    data: Path
    vault: Path
    log: Path
    base_env: Mapping[str, str]
    settings: Mapping[str, str] = field(default_factory=dict)
    smoke_concurrency: int = 10
    services: list[Service] = field(default_factory=list)

    @classmethod
    def create(cls, data: Path, vault: Path, log: Path, base_env: Mapping[str, str], **kw: Any) -> Install:
        data.mkdir(parents=True, mode=0o700)
        (data / "config.yaml").write_text(f"vault: {vault}\n", encoding="utf-8")
        return cls(data, vault, log, base_env, **kw)

    @property
    def db(self) -> Path:
        return self.data / "index.sqlite"

    @property
    def key_file(self) -> Path:
        return self.data / "admin.key"

    @property
    def key(self) -> str:
        return self.key_file.read_text().strip()

    def env(self, release: Release) -> dict[str, str]:
        """The release's environment: the data dir and settings; rate limits off (smoke's burst comes from
        one address); the monitor off where the release has one, as in every test but the monitor's (it
        would share the cores with the run), and no monitor setting where it has none (it is refused)."""
        env = release.env(
            {k: v for k, v in self.base_env.items() if not k.startswith("OAA_")},
            OAA_DATA_DIR=str(self.data),
            OAA_SERVER__RATE_LIMITS__ENABLED="false",
            OAA_SERVER__WORKERS="1",  # one process per release under test, as releases before the default
            **self.settings,
        )
        if release.has_monitor:
            env["OAA_MONITOR__ENABLED"] = "false"
        return env

    def run(self, release: Release, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return release.run(*args, env=self.env(release), timeout=3600, check=check)

    def start(self, release: Release, timeout: float = 1800) -> Service:
        """`serve` of the release (it brings the vault's index up to date first), once healthy."""
        service = Service(release, self.env(release), self.log)
        self.services.append(service)
        service.wait_healthy(self.key_file, timeout=timeout)
        return service

    def smoke(self, release: Release, service: Service) -> tuple[int, dict[str, Any]]:
        """`smoke --url ... --key ...` of the release against the service: (exit status, its report)."""
        run = self.run(
            release,
            "smoke",
            *("--url", service.url, "--key", self.key),
            *("--concurrency", str(self.smoke_concurrency), "--json"),
            check=False,
        )
        return run.returncode, report_of(run)

    def stop_all(self) -> None:
        for s in self.services:
            s.stop()

    def upgrade(self, previous: Release, current: Release, service: Service) -> Upgrade:
        """The upgrade in place: a backup by the previous release into <data dir>/backups/, stop, the
        current release on the same data dir (it migrates the index)."""
        t0 = time.monotonic()
        backup = json.loads(self.run(previous, "backup", "--json").stdout)
        backup_s = time.monotonic() - t0
        service.stop()
        upgraded = self.start(current)
        return Upgrade(backup, backup_s, time.monotonic() - t0, upgraded)

    def break_upgrade(self, current: Release, service: Service) -> Break:
        """The upgraded index damaged while the service is stopped (its keyword pages overwritten), the
        service restarted and smoked: the smoke's answer is the decision to roll back."""
        service.stop()
        pages = damage_keyword_index(self.db)
        restarted = self.start(current)
        code, report = self.smoke(current, restarted)
        return Break(pages, code, report, time.monotonic(), restarted)

    def roll_back(
        self, failed: Release, service: Service, previous_commit: str, reinstall_into: Path, decision: float
    ) -> Rollback:
        """docs/rollback.md, "Steps" (an upgrade in place), from the decision at `decision` (monotonic):

        1. tell users: `maintenance on --message ... --until 30m` (if the failed release has it; there is
           no alert to acknowledge when its monitor is off);
        2. keep the current state outside <data dir>/backups/: `alerts list --all --csv` (if it has the
           command) and `backup --output <data dir>/before-rollback.tar.gz` (which may fail on a damaged
           index: the runbook goes on);
        3. stop the service;
        4. reinstall the previous release (`git archive` of it, afresh);
        5. `doctor` with the previous release decides about the index (its `migrations` check);
        6. `restore --latest` with the previous release (the newest archive in backups/ is the one it made
           before the upgrade);
        7. start it, `doctor`, `maintenance off` if it is on (the previous release may have no such
           command: then the restored index's state is read), and `smoke --url ... --key ...`.

        Returns when smoke has answered; `seconds` runs from the decision to that answer.
        """
        step = decision
        laps: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal step
            now = time.monotonic()
            laps[name] = round(now - step, 2)
            step = now

        maintenance_on = failed.has_command("maintenance")
        if maintenance_on:
            message = "Rolling back an upgrade, back in 15 minutes"
            self.run(failed, "maintenance", "on", "--message", message, "--until", "30m")
        lap("1_maintenance_on")

        kept: dict[str, str] = {}
        if failed.has_command("alerts"):
            alerts = self.run(failed, "alerts", "list", "--all", "--csv", check=False)
            incidents = self.data.parent / "incidents-before-rollback.csv"
            incidents.write_text(alerts.stdout, encoding="utf-8")
            kept["alerts"] = f"exit {alerts.returncode}, {len(alerts.stdout.splitlines())} lines"
        state = self.data / "before-rollback.tar.gz"
        backup = self.run(failed, "backup", "--output", str(state), check=False)
        last = (backup.stderr.strip() or backup.stdout.strip() or "no output").splitlines()[-1]
        kept["backup"] = f"exit {backup.returncode}: {last[:300]}"
        lap("2_keep_current_state")

        service.stop()
        lap("3_stop")

        previous = materialise(previous_commit, reinstall_into)
        lap("4_reinstall_previous")

        doctor_before = report_of(self.run(previous, "doctor", "--json", check=False))
        lap("5_doctor_decides")

        restored = self.run(previous, "restore", "--latest")
        lap("6_restore_latest")

        new_service = self.start(previous)
        lap("7a_start")
        doctor_after = report_of(self.run(previous, "doctor", "--json", check=False))
        lap("7b_doctor")
        maintenance = meta_value(self.db, "maintenance")
        if maintenance and json.loads(maintenance).get("on") and previous.has_command("maintenance"):
            self.run(previous, "maintenance", "off")
        lap("7c_maintenance_off")
        code, smoke = self.smoke(previous, new_service)
        lap("7d_smoke")
        seconds = time.monotonic() - decision
        return Rollback(
            previous,
            new_service,
            seconds,
            laps,
            maintenance_on,
            kept,
            doctor_before,
            restored.stdout + restored.stderr,
            doctor_after,
            smoke,
            code,
        )
