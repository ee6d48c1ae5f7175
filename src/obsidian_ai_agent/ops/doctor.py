"""`doctor`: the machine-checkable items of the deployment checklist, each pass / warn / fail with a
one-line reason and a fix. Nothing secret is ever put in a reason (an operator pastes this into a bug
report): keys and passwords are named by their setting, never shown."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config import LOOPBACK_HOSTS, ConfigError, Settings, load_settings
from ..security.keys import ADMIN_KEY_FILE
from ..store import IndexStore, StoreError, open_store
from ..store.pg_schema import PG_MIGRATIONS
from ..store.snapshot import DatabaseFacts, check_database, latest_schema_version, read_facts
from .backup import holders, newest_backup

if TYPE_CHECKING:
    from ..embeddings import Embedder

Status = Literal["pass", "warn", "fail", "skip"]
DISTRIBUTION = "obsidian-ai-agent"
PROBE_TIMEOUT = 3.0
PLACEHOLDERS = {"changeme", "change-me", "placeholder", "secret", "password", "xxx", "todo", "your-api-key"}
DEV_KEY_WORDS = ("dev", "test", "demo", "example", "temp", "tmp")


@dataclass
class Check:
    name: str
    status: Status
    reason: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "warn", "fail", "skip")}
        return {"ok": self.ok, "counts": counts, "checks": [c.to_dict() for c in self.checks]}


class _Result(Exception):
    """Raised by a check for a warn or a fail; returning a string is a pass."""

    def __init__(self, status: Status, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.fix = status, reason, fix


def _fail(reason: str, fix: str) -> _Result:
    return _Result("fail", reason, fix)


def _warn(reason: str, fix: str = "") -> _Result:
    return _Result("warn", reason, fix)


def _skip(reason: str) -> _Result:
    return _Result("skip", reason)


@dataclass
class _Context:
    settings: Settings
    embedder: Embedder | None
    facts: DatabaseFacts | None = None
    server: IndexStore | None = None
    """The PostgreSQL store, when `database.url` names one (else the index is the SQLite file)."""
    latest: int = 0


# -- environment --------------------------------------------------------------------------------------


def check_python(ctx: _Context) -> str:
    from packaging.specifiers import SpecifierSet

    wanted = md.metadata(DISTRIBUTION)["Requires-Python"] or ""
    have = platform.python_version()
    if wanted and not SpecifierSet(wanted).contains(have, prereleases=True):
        raise _fail(f"Python {have} does not meet requires-python {wanted}", f"run it with a Python {wanted}")
    return f"Python {have} meets {wanted or 'any version'}"


def check_packages(ctx: _Context) -> str:
    from packaging.requirements import Requirement

    problems = []
    wanted = md.requires(DISTRIBUTION) or []
    checked = 0
    for line in wanted:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra's requirement
        checked += 1
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{req.name} is missing")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name} {have} does not meet {req.specifier}")
    if problems:
        raise _fail("; ".join(problems[:5]), f"pip install '{DISTRIBUTION}' again in this environment")
    return f"{checked} required packages installed at fitting versions"


def _writable(folder: Path) -> str | None:
    if not folder.is_dir():
        return f"{folder} does not exist"
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{folder} is not writable ({e.strerror or e})"
    return None


def check_directories(ctx: _Context) -> str:
    s = ctx.settings
    folders = {"data": s.data_dir}
    if (s.data_dir / "backups").exists():
        folders["backups"] = s.data_dir / "backups"
    if s.logging.file is not None:
        log = s.logging.file if s.logging.file.is_absolute() else s.data_dir / s.logging.file
        folders["log"] = log.parent
    if s.logging.metrics_dir is not None:
        m = s.logging.metrics_dir
        folders["metrics"] = m if m.is_absolute() else s.data_dir / m
    problems = [f"{kind} dir: {p}" for kind, folder in folders.items() if (p := _writable(folder))]
    if problems:
        raise _fail("; ".join(problems), "create the folders and give the service's user write access")
    return "writable: " + ", ".join(f"{k} {v}" for k, v in folders.items())


def check_production_settings(ctx: _Context) -> str:
    s = ctx.settings
    issues = []
    if s.server.debug:
        issues.append("server.debug is on")
    if s.log_level != "INFO":
        issues.append(f"log_level is {s.log_level}")
    if not s.server.rate_limits.enabled:
        issues.append("rate limits are off")
    if "*" in s.server.cors_origins:
        issues.append("CORS allows every origin")
    if issues:
        raise _warn(
            "; ".join(issues) + " (fine for development, not for production)",
            "set server.debug false, log_level INFO, server.rate_limits.enabled true, list cors_origins",
        )
    where = f"config file {s.config_file}" if s.config_file else "defaults and environment"
    return f"settings valid ({where}); debug off, log level INFO, rate limits on, CORS origins listed"


def check_secrets(ctx: _Context) -> str:
    s = ctx.settings
    named = {"llm.api_key": s.llm.api_key, "embedding.api_key": s.embedding.api_key, "redis_url": s.redis_url}
    bad = [
        name
        for name, value in named.items()
        if value is not None and value.get_secret_value().strip().lower().strip("<>{}") in PLACEHOLDERS
    ]
    if bad:
        raise _fail(f"{', '.join(bad)} holds a placeholder value", "set the real secret (OAA_* environment)")
    return "no placeholder secret"


def check_port(ctx: _Context) -> str:
    host, port = ctx.settings.server.host, ctx.settings.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except OSError as e:
        if ctx.settings.database_path.exists() and holders(ctx.settings.database_path):
            raise _warn(f"{host}:{port} is in use, likely by the running service", "") from None
        raise _fail(
            f"cannot bind {host}:{port} ({e.strerror or e})", "stop what listens there or set server.port"
        ) from None
    return f"{host}:{port} is free to bind"


def check_auth(ctx: _Context) -> str:
    server = ctx.settings.server
    if server.auth.enabled:
        return "API keys required"
    if server.host not in LOOPBACK_HOSTS:
        raise _fail(f"auth is off while bound to {server.host}", "set server.auth.enabled true")
    raise _warn("auth is off (loopback only)", "set server.auth.enabled true before exposing the service")


# -- keys ---------------------------------------------------------------------------------------------


def check_admin_key_file(ctx: _Context) -> str:
    path = ctx.settings.data_dir / ADMIN_KEY_FILE
    if not path.exists():
        raise _skip(f"no {ADMIN_KEY_FILE} in the data dir")
    mode = stat.S_IMODE(path.lstat().st_mode)
    if path.is_symlink() or mode & 0o077:
        raise _fail(f"{path} has mode {mode:04o}, readable by others", f"chmod 600 {path}")
    return f"{path} has mode 0600"


def _keys(ctx: _Context) -> list[Any]:
    from ..store import Store
    from ..store.keys import KeyStore

    if ctx.facts is None:
        raise _skip("no index to read keys from")
    if ctx.facts.schema_version != ctx.latest:
        raise _skip("the index is not at the current schema (see migrations)")
    if ctx.server is not None:
        return [k for k in KeyStore(ctx.server).list() if k.active()]
    with Store(ctx.settings.database_path) as store:
        return [k for k in KeyStore(store).list() if k.active()]


def check_admin_keys(ctx: _Context) -> str:
    if not ctx.settings.server.auth.enabled:
        raise _skip("auth is off")
    admins = [k for k in _keys(ctx) if "admin" in k.scopes]
    if not admins:
        raise _fail(
            "no active admin key",
            "start the service once (it writes admin.key) or `keys create --scope admin`",
        )
    return f"{len(admins)} active admin key(s)"


def check_key_age(ctx: _Context) -> str:
    limit = ctx.settings.server.auth.key_max_age_days
    active = _keys(ctx)
    now = time.time()
    old = [k for k in active if now - k.created_at > limit * 86400]
    if old:
        ids = ", ".join(f"{k.id} ({k.name}, {int((now - k.created_at) / 86400)} days)" for k in old[:5])
        raise _fail(f"keys older than {limit} days: {ids}", "`keys rotate <id>` each of them")
    dev = [k for k in active if any(w in k.name.lower() for w in DEV_KEY_WORDS)]
    if dev:
        names = ", ".join(f"{k.id} ({k.name})" for k in dev[:5])
        raise _warn(f"keys named like development keys: {names}", "`keys revoke <id>` those not in use")
    return f"{len(active)} active key(s), none older than {limit} days"


# -- the index ----------------------------------------------------------------------------------------


def _need_index(ctx: _Context) -> DatabaseFacts:
    if ctx.facts is None:
        raise _warn(
            f"no index at {ctx.settings.database_path} yet",
            "run `obsidian-ai-agent index` or restore a backup",
        )
    return ctx.facts


def check_database_integrity(ctx: _Context) -> str:
    _need_index(ctx)
    if ctx.server is not None:
        found = ctx.server.integrity_check()
        if found != "ok":
            raise _fail(
                f"the index on {ctx.server.location} is damaged: {found}", "REINDEX, or `index --full`"
            )
        server = ctx.server.server_version()  # type: ignore[attr-defined]
        return f"{server} at {ctx.server.location}: integrity ok"
    problem = check_database(ctx.settings.database_path, quick=True)
    if problem is not None:
        raise _fail(
            f"the index is damaged: {problem}",
            "`obsidian-ai-agent restore --latest`, or rebuild with `index`",
        )
    return "quick_check and FTS5 integrity-check pass"


def check_migrations(ctx: _Context) -> str:
    have, latest = _need_index(ctx).schema_version, ctx.latest
    if have > latest:
        raise _fail(f"the index has schema {have}, newer than this program's {latest}", "upgrade the program")
    if have < latest:
        raise _warn(
            f"the index has schema {have}; the next start migrates it to {latest} (copied aside first)", ""
        )
    return f"schema version {have} is current"


def configured_model_id(settings: Settings) -> str:
    from ..embeddings import PACKAGED_MODEL

    e = settings.embedding
    if e.provider == "openai":
        return f"openai:{e.model}"
    return (
        PACKAGED_MODEL if e.model in (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}") else e.model
    )


def check_embedding_model(ctx: _Context) -> str:
    facts = _need_index(ctx)
    want = configured_model_id(ctx.settings)
    if facts.embedding_model is None:
        raise _skip("the index records no embedding model yet")
    if facts.embedding_model != want:
        raise _fail(
            f"the index was built with '{facts.embedding_model}', the configured model is '{want}'",
            "set embedding.model back, or index into a new --data-dir",
        )
    return f"index and settings agree on '{want}'"


def check_model_loads(ctx: _Context) -> str:
    from ..embeddings import get_embedder

    t0 = time.perf_counter()
    try:
        embedder = ctx.embedder or get_embedder(ctx.settings.embedding)
        embedder.embed(["doctor"])
    except Exception as e:
        raise _fail(
            f"the embedding model does not load: {e}", "reinstall the model package, check embedding.*"
        ) from None
    where = "offline" if os.environ.get("HF_HUB_OFFLINE") == "1" else "(HF_HUB_OFFLINE is not 1)"
    runtime = getattr(embedder, "query_runtime", None)
    on = f", queries on {runtime}" if runtime else ""
    return f"'{embedder.model_id}' embeds {where} in {time.perf_counter() - t0:.1f} s{on}"


# -- services -----------------------------------------------------------------------------------------


def _public(url: str) -> str:
    import httpx

    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except Exception:
        return url.rsplit("@", 1)[-1]


def check_llm(ctx: _Context) -> str:
    import httpx

    llm = ctx.settings.llm
    if llm.provider == "extractive":
        raise _skip("no LLM configured (answers are extracts)")
    if llm.provider == "llamacpp":
        path = Path(llm.model).expanduser() if llm.model else None
        if path is not None and not path.is_file():
            raise _fail(f"GGUF model file {path} does not exist", "set llm.model to a GGUF file")
        return "in-process model" + (f" {path.name} present" if path else " (packaged)")
    where = _public(llm.base_url.rstrip("/"))
    headers = {"Authorization": f"Bearer {llm.api_key.get_secret_value()}"} if llm.api_key else {}
    try:
        resp = httpx.get(llm.base_url.rstrip("/") + "/models", headers=headers, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as e:
        raise _fail(
            f"cannot reach the LLM server {where} ({type(e).__name__})", "start it or fix llm.base_url"
        ) from None
    if resp.status_code in (401, 403):
        raise _fail(f"the LLM server {where} refused the API key", "set llm.api_key")
    if resp.status_code >= 500:
        raise _fail(f"the LLM server {where} answered {resp.status_code}", "check the LLM server's logs")
    return f"LLM server {where} answers"


def check_redis(ctx: _Context) -> str:
    from urllib.parse import urlsplit

    if ctx.settings.redis_url is None:
        raise _skip("no redis_url (rate-limit counts kept on this host)")
    import redis

    url = ctx.settings.redis_url.get_secret_value()
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else "the socket"
    try:
        client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT)
        client.ping()
        client.close()
    except Exception as e:
        raise _fail(
            f"Redis at {where} does not answer ({type(e).__name__})", "start Redis or fix redis_url"
        ) from None
    return f"Redis at {where} answers"


def check_disk(ctx: _Context) -> str:
    s = ctx.settings
    folder = s.data_dir if s.data_dir.exists() else s.data_dir.parent
    free_mb = shutil.disk_usage(folder).free // 1_048_576
    want = s.server.min_free_disk_mb
    if free_mb < want / 10:
        raise _fail(f"{free_mb} MB free on the data dir's disk", "free space or move the data dir")
    if free_mb < want:
        raise _warn(f"{free_mb} MB free on the data dir's disk, below {want} MB", "free space")
    return f"{free_mb} MB free"


def check_backup_age(ctx: _Context) -> str:
    s = ctx.settings
    if ctx.server is not None:
        raise _skip("the index is on PostgreSQL: back it up with pg_dump (see docs/deployment.md)")
    newest = newest_backup(s)
    schedule = s.backup.schedule
    if newest is None:
        if schedule:
            raise _fail(f"no backup in {s.data_dir / 'backups'}", "`obsidian-ai-agent backup`")
        raise _warn("no backup and no schedule", "set backup.schedule (e.g. 86400) or run `backup` by hand")
    age = time.time() - newest.stat().st_mtime
    hours = f"{age / 3600:.1f} h"
    if schedule and age > schedule + 60:  # a minute for the scheduler's tick and the job's start
        raise _fail(
            f"the newest backup {newest.name} is {hours} old, past the {schedule} s schedule",
            "check the service's backup jobs (`jobs list`) or run `backup`",
        )
    return f"newest backup {newest.name} is {hours} old"


def check_tls(ctx: _Context) -> str:
    server = ctx.settings.server
    if server.ssl_certfile is None or server.ssl_keyfile is None:
        raise _skip("no TLS certificate configured (behind a TLS proxy?)")
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise _skip("the cryptography package is not installed") from None
    try:
        cert = x509.load_pem_x509_certificate(server.ssl_certfile.read_bytes())
        key = serialization.load_pem_private_key(server.ssl_keyfile.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise _fail(
            f"cannot read the TLS certificate or key ({type(e).__name__}: {e})", "give PEM files"
        ) from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.PEM
    if cert.public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        raise _fail("the TLS key does not match the certificate", "give the key the certificate was made for")
    left = cert.not_valid_after_utc.timestamp() - time.time()
    if left <= 0 or cert.not_valid_before_utc.timestamp() > time.time():
        raise _fail(
            f"the TLS certificate is not valid now (until {cert.not_valid_after_utc:%Y-%m-%d})", "renew it"
        )
    if left < 30 * 86400:
        raise _warn(f"the TLS certificate expires in {int(left / 86400)} days", "renew it")
    return f"certificate and key match; valid until {cert.not_valid_after_utc:%Y-%m-%d}"


CHECKS: list[tuple[str, Callable[[_Context], str]]] = [
    ("python", check_python),
    ("packages", check_packages),
    ("directories", check_directories),
    ("settings", check_production_settings),
    ("secrets", check_secrets),
    ("port", check_port),
    ("auth", check_auth),
    ("admin_key_file", check_admin_key_file),
    ("admin_keys", check_admin_keys),
    ("key_age", check_key_age),
    ("database", check_database_integrity),
    ("migrations", check_migrations),
    ("embedding_model", check_embedding_model),
    ("model_loads", check_model_loads),
    ("llm", check_llm),
    ("redis", check_redis),
    ("disk", check_disk),
    ("backup_age", check_backup_age),
    ("tls", check_tls),
]


def run_doctor(
    config_file: Path | None = None,
    data_dir: Path | None = None,
    *,
    embedder: Embedder | None = None,
    only: list[str] | None = None,
) -> Report:
    """Every check (or those named in `only`); settings that cannot be loaded are one failed check."""
    try:
        settings = load_settings(config_file, data_dir)
    except ConfigError as e:
        return Report([Check("settings", "fail", str(e), "fix the setting named")])
    ctx = _Context(settings, embedder, latest=latest_schema_version())
    if settings.database.url:
        try:
            ctx.server = open_store(settings.database_path, url=settings.database.url.get_secret_value())
        except StoreError as e:
            return Report([Check("database", "fail", str(e), "start the server, or fix database.url")])
        ctx.latest = len(PG_MIGRATIONS)
        ctx.facts = ctx.server.facts()  # type: ignore[attr-defined]
    elif settings.database_path.is_file():
        try:
            ctx.facts = read_facts(settings.database_path)
        except Exception:  # a damaged file: the database check says so
            ctx.facts = DatabaseFacts(latest_schema_version(), None, None)
    checks = []
    for name, fn in CHECKS:
        if only is not None and name not in only:
            continue
        try:
            checks.append(Check(name, "pass", fn(ctx)))
        except _Result as r:
            checks.append(Check(name, r.status, r.reason, r.fix))
        except Exception as e:  # a check that breaks is a failed check, not a traceback
            checks.append(Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}", ""))
    if ctx.server is not None:
        ctx.server.close()
    return Report(checks)
