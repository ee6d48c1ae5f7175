"""Backups: one archive of the index (with its keys, jobs and conversations), the settings file and the
admin key, with a manifest of checksums; verified before anything is restored from it.

An archive is a `.tar.gz` holding `manifest.json`, `index.sqlite` (an online copy: SQLite's backup API,
taken while the service runs and writes), and `config.yaml` and `admin.key` when there are such files.
The manifest records the program and schema versions, the embedding model, row counts, and the size and
SHA-256 of every member. A restore verifies all of it (checksums, `integrity_check`, FTS5's integrity
check, counts) before it replaces anything, keeps what it replaces beside it, and swaps files in with
`os.replace`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .. import __version__
from ..config import Settings
from ..security.keys import ADMIN_KEY_FILE
from ..store.snapshot import (
    check_database,
    copy_database,
    latest_schema_version,
    read_facts,
)

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "index.sqlite"
CONFIG = "config.yaml"
MEMBERS = (DATABASE, CONFIG, ADMIN_KEY_FILE)
PREFIX = "oaa-backup-"
SUFFIX = ".tar.gz"


class BackupError(Exception):
    """A backup cannot be made, or an archive cannot be trusted or restored (a one-line reason)."""


@dataclass
class Manifest:
    version: str
    schema_version: int
    embedding_model: str | None
    embedding_dimension: int | None
    counts: dict[str, int]
    members: dict[str, dict[str, Any]]
    """name -> {"sha256", "size"}"""
    created_at: str
    config_origin: str | None = None
    """Where the settings file came from."""
    config_in_data_dir: bool = False
    """It was `<data dir>/config.yaml`: a restore puts it in the target data dir (else beside it, as
    `config.yaml.restored`, for the operator to put back where it belongs)."""
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise BackupError("manifest.json is not a JSON object")
        try:
            return cls(
                version=str(data["version"]),
                schema_version=int(data["schema_version"]),
                embedding_model=data.get("embedding_model"),
                embedding_dimension=data.get("embedding_dimension"),
                counts={str(k): int(v) for k, v in data["counts"].items()},
                members={str(k): dict(v) for k, v in data["members"].items()},
                created_at=str(data["created_at"]),
                config_origin=data.get("config_origin"),
                config_in_data_dir=bool(data.get("config_in_data_dir")),
                format=int(data.get("format", FORMAT)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BackupError(f"manifest.json lacks or garbles a field ({e})") from None


@dataclass
class BackupResult:
    path: Path
    size: int
    seconds: float
    manifest: Manifest
    removed: list[Path] = field(default_factory=list)
    """Older archives removed by retention (scheduled backups)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest.to_dict(),
            "removed": [str(p) for p in self.removed],
        }


@dataclass
class RestoreResult:
    data_dir: Path
    manifest: Manifest
    restored: list[str]
    kept_aside: list[Path]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "manifest": self.manifest.to_dict(),
            "restored": self.restored,
            "kept_aside": [str(p) for p in self.kept_aside],
            "notes": self.notes,
        }


def backups_dir(settings: Settings) -> Path:
    return settings.data_dir / "backups"


def _stamp(t: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)


# -- backup -------------------------------------------------------------------------------------------


def _sqlite_only(settings: Settings, what: str) -> None:
    if settings.database.url:
        raise BackupError(
            f"the index is on a PostgreSQL server, and `{what}` archives the SQLite index only: back the "
            "server up with pg_dump (see docs/deployment.md), or `store copy --to <file>.sqlite` for a copy "
            "this program can archive and restore"
        )


def create_backup(settings: Settings, output: Path | None = None) -> BackupResult:
    """Archive the index, the settings file and the admin key into `output` (default
    `<data dir>/backups/oaa-backup-<UTC time>.tar.gz`, mode 0600); safe while the service writes."""
    t0 = time.perf_counter()
    _sqlite_only(settings, "backup")
    db = settings.database_path
    if not db.is_file():
        raise BackupError(f"there is no index at {db} to back up; check --data-dir")
    target = Path(output).expanduser() if output else backups_dir(settings) / f"{PREFIX}{_stamp()}{SUFFIX}"
    if target.is_dir():
        target = target / f"{PREFIX}{_stamp()}{SUFFIX}"
    if target.exists():
        raise BackupError(f"{target} already exists; name another --output")
    _private_dir(target.parent)
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=target.parent) as tmp:
        work = Path(tmp)
        files: dict[str, Path] = {DATABASE: work / DATABASE}
        copy_database(db, files[DATABASE])
        config_origin = None
        if settings.config_file is not None and settings.config_file.is_file():
            files[CONFIG] = work / CONFIG
            shutil.copyfile(settings.config_file, files[CONFIG])
            config_origin = str(settings.config_file.resolve())
        key = settings.data_dir / ADMIN_KEY_FILE
        if key.is_file() and not key.is_symlink():
            files[ADMIN_KEY_FILE] = work / ADMIN_KEY_FILE
            shutil.copyfile(key, files[ADMIN_KEY_FILE])
        facts = read_facts(files[DATABASE])
        members = {}
        for name, path in files.items():
            sha, size = _digest(path)
            members[name] = {"sha256": sha, "size": size}
        manifest = Manifest(
            version=__version__,
            schema_version=facts.schema_version,
            embedding_model=facts.embedding_model,
            embedding_dimension=facts.embedding_dimension,
            counts=facts.counts,
            members=members,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            config_origin=config_origin,
            config_in_data_dir=settings.config_file is not None
            and settings.config_file.resolve() == (settings.data_dir / CONFIG).resolve(),
        )
        partial = work / "archive.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest.to_dict(), indent=2).encode())
            for name, path in files.items():
                info = tar.gettarinfo(str(path), arcname=name)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)  # the archive appears whole or not at all
    return BackupResult(target, target.stat().st_size, time.perf_counter() - t0, manifest)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def list_backups(settings: Settings) -> list[Path]:
    """Archives in `<data dir>/backups/`, oldest first (their names sort by time)."""
    folder = backups_dir(settings)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def newest_backup(settings: Settings) -> Path | None:
    found = list_backups(settings)
    return found[-1] if found else None


def prune_backups(settings: Settings, keep: int) -> list[Path]:
    """Remove all but the newest `keep` archives of `<data dir>/backups/`; returns what went."""
    found = list_backups(settings)
    gone = found[: max(0, len(found) - keep)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def scheduled_backup(settings: Settings) -> BackupResult:
    """A backup into `<data dir>/backups/`, then retention (`backup.keep`): what a `backup` job does."""
    result = create_backup(settings)
    result.removed = prune_backups(settings, settings.backup.keep)
    return result


def backup_due(settings: Settings, now: float | None = None) -> bool:
    """Whether the schedule (`backup.schedule` seconds) wants a backup now."""
    if settings.backup.schedule <= 0:
        return False
    newest = newest_backup(settings)
    now = time.time() if now is None else now
    return newest is None or now - newest.stat().st_mtime >= settings.backup.schedule


# -- verify -------------------------------------------------------------------------------------------


@contextmanager
def _unpacked(archive: Path, into: Path | None = None) -> Iterator[tuple[Path, Manifest]]:
    """The archive's members checked against its manifest and written to a private temp dir."""
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise BackupError(f"{archive} does not exist")
    if into is not None:
        _private_dir(into)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=into) as tmp:
        work = Path(tmp)
        manifest: Manifest | None = None
        seen: dict[str, tuple[str, int]] = {}
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                for info in tar:
                    if info.name == MANIFEST and info.isfile():
                        f = tar.extractfile(info)
                        assert f is not None
                        try:
                            manifest = Manifest.from_dict(json.loads(f.read(1 << 20)))
                        except ValueError as e:
                            raise BackupError(f"manifest.json is not valid JSON ({e})") from None
                        continue
                    if info.name not in MEMBERS or not info.isfile():
                        raise BackupError(f"unexpected member {info.name!r} in the archive")
                    src = tar.extractfile(info)
                    assert src is not None
                    h = hashlib.sha256()
                    size = 0
                    fd = os.open(work / info.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as dst:
                        while block := src.read(1 << 20):
                            h.update(block)
                            size += len(block)
                            dst.write(block)
                    seen[info.name] = (h.hexdigest(), size)
        except (tarfile.TarError, OSError, EOFError) as e:
            if isinstance(e, FileExistsError):
                raise BackupError("the archive holds a member twice") from None
            raise BackupError(f"{archive} is not a readable backup archive ({e})") from None
        if manifest is None:
            raise BackupError(f"{archive} has no manifest.json; it is not a backup of this program")
        for name in sorted(set(manifest.members) | set(seen)):
            want = manifest.members.get(name)
            if want is None:
                raise BackupError(f"member {name} is not in the manifest")
            if name not in seen:
                raise BackupError(f"member {name} named in the manifest is missing")
            if seen[name] != (want.get("sha256"), want.get("size")):
                raise BackupError(
                    f"member {name} does not match its SHA-256 in the manifest (damaged or altered)"
                )
        if DATABASE not in seen:
            raise BackupError("the archive holds no index.sqlite")
        yield work, manifest


def _check_index(work: Path, manifest: Manifest) -> None:
    db = work / DATABASE
    if manifest.schema_version > latest_schema_version():
        raise BackupError(_newer(manifest.schema_version, manifest.version))
    problem = check_database(db)
    if problem is not None:
        raise BackupError(f"the archived index fails its integrity check: {problem}")
    facts = read_facts(db)
    if facts.schema_version > latest_schema_version():
        raise BackupError(_newer(facts.schema_version, manifest.version))
    if facts.schema_version != manifest.schema_version:
        raise BackupError(
            f"the archived index has schema version {facts.schema_version}, the manifest says "
            f"{manifest.schema_version}"
        )
    for table, want in manifest.counts.items():
        if facts.counts.get(table) != want:
            raise BackupError(
                f"the archived index holds {facts.counts.get(table)} {table}, the manifest says {want}"
            )


def _newer(version: int, program: str) -> str:
    return (
        f"the archive's index has schema version {version}, newer than this program's "
        f"{latest_schema_version()} (it was made by obsidian-ai-agent {program}); restore it with that "
        "version or a newer one"
    )


def verify_backup(archive: Path) -> Manifest:
    """Check an archive as a restore would: checksums, integrity, schema version, counts. Raises
    BackupError with the reason; returns the manifest when all is well."""
    with _unpacked(archive) as (work, manifest):
        _check_index(work, manifest)
        return manifest


# -- restore ------------------------------------------------------------------------------------------


def holders(db: Path) -> list[str]:
    """Processes that have the index (or its -wal/-shm) open: `pid N (command)`, this process included.
    Processes of other users are not visible unless this runs as root."""
    wanted = {os.path.realpath(f"{db}{s}") for s in ("", "-wal", "-shm")}
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            paths = {f.path for f in proc.open_files()}
        except (psutil.Error, OSError):
            continue
        if paths & wanted:
            who = "this process" if proc.pid == os.getpid() else proc.info["name"]
            found.append(f"pid {proc.pid} ({who})")
    return found


def restore_backup(
    settings: Settings, archive: Path | None = None, *, latest: bool = False, force: bool = False
) -> RestoreResult:
    """Restore an archive (or, `latest`, the newest in `<data dir>/backups/`) into the data dir, new or
    existing. Everything is verified first; what is replaced is kept beside it (`<name>.before-restore-
    <time>`); a database some process holds open is refused unless `force`."""
    data = settings.data_dir
    if latest:
        archive = newest_backup(settings)
        if archive is None:
            raise BackupError(f"there is no backup in {backups_dir(settings)} to restore")
    if archive is None:
        raise BackupError("name an archive to restore, or give --latest")
    _sqlite_only(settings, "restore")
    db = settings.database_path
    _private_dir(data)
    with _unpacked(archive, into=data) as (work, manifest):
        _check_index(work, manifest)
        busy = holders(db) if db.exists() else []
        notes = []
        if busy and not force:
            raise BackupError(
                f"{db} is in use by {', '.join(busy)}; stop the service first (`systemctl stop "
                "obsidian-ai-agent`), or give --force to replace it anyway and restart those processes after"
            )
        if busy:
            notes.append(f"replaced while in use by {', '.join(busy)}: restart them now")
        plan: list[tuple[Path, Path]] = [(work / DATABASE, db)]
        if (work / ADMIN_KEY_FILE).is_file():
            plan.append((work / ADMIN_KEY_FILE, data / ADMIN_KEY_FILE))
        if (work / CONFIG).is_file():
            if manifest.config_in_data_dir:
                plan.append((work / CONFIG, data / CONFIG))
            else:
                plan.append((work / CONFIG, data / f"{CONFIG}.restored"))
                notes.append(
                    f"the settings file came from {manifest.config_origin}; it is in "
                    f"{data / (CONFIG + '.restored')} for you to put back where it belongs"
                )
        stamp = _stamp()
        aside = _replace_all(plan, db, stamp)
    return RestoreResult(data, manifest, [str(dst) for _, dst in plan], aside, notes)


def _replace_all(plan: list[tuple[Path, Path]], db: Path, stamp: str) -> list[Path]:
    """Move every target (and the database's -wal/-shm) aside, then swap the new files in; on a failure
    the moved files go back where they were."""
    moved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for _, dst in plan:
            extras = [Path(f"{db}-wal"), Path(f"{db}-shm")] if dst == db else []
            for p in [dst, *extras]:
                if p.exists() or p.is_symlink():
                    kept = p.with_name(f"{p.name}.before-restore-{stamp}")
                    if p == db:
                        # a second name for the old file: the database path is never missing, and its
                        # -wal moves aside before the new file arrives, so no stale log touches it
                        os.link(p, kept)
                    else:
                        os.replace(p, kept)
                    moved.append((p, kept))
        for src, dst in plan:
            os.replace(src, dst)
            placed.append(dst)
    except OSError as e:
        for dst in placed:
            with suppress(OSError):
                dst.unlink()
        for original, kept in reversed(moved):
            with suppress(OSError):
                os.replace(kept, original)
        raise BackupError(f"restore failed while replacing files, nothing changed: {e}") from None
    return [kept for _, kept in moved]


# -- schedule -----------------------------------------------------------------------------------------


class BackupScheduler:
    """Queues a `backup` job whenever `backup.schedule` seconds have passed since the newest archive in
    `<data dir>/backups/`. Every worker may run one: the job's dedupe key keeps it to one job at a time."""

    def __init__(self, engine: Engine, every: float = 60.0) -> None:
        self.engine = engine
        self.every = min(every, max(1.0, engine.settings.backup.schedule / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backup-schedule", daemon=True)

    def start(self) -> BackupScheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def tick(self) -> int | None:
        """Queue a backup job when one is due; its id, or None."""
        if not backup_due(self.engine.settings):
            return None
        from ..jobs import submit

        return submit(self.engine, "backup", {}, dedupe_key="backup")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a busy or read-only store must not end the schedule; the next tick retries
                log.exception("could not queue a scheduled backup")
            self._stop.wait(self.every)
