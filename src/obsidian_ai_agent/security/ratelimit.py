"""Rate limits per key (or client address) and route group, with the `limits` library.

Strategy: the moving window. A caller may make at most N requests in any window of the limit's length
(not just within each calendar minute), so there is no double burst at a window boundary and the time
to wait is exact: when the oldest request in the window leaves it. It keeps one timestamp per request in
the window, which at limits of a few hundred a minute per key is small.

Who is counted: the key's id when the caller has a key; else the client address (IPv6 per network of
`ipv6_prefix` bits). The address is the direct peer, unless that peer is one of `server.trusted_proxies`:
then `X-Forwarded-For` is read from the right, skipping trusted proxies, and the first other address is
the client (what a client writes itself sits further left and is never reached).

What is counted: each route group (`read`, `ask`, `write`, `admin`, ...) has its own budget,
`server.rate_limits.groups[group]`; callers without a key have `rate_limits.anonymous` per group. A
group with no limit configured is not limited (a warning says so once).

Where: in Redis when `redis_url` is set, so that every worker and replica shares one count; else, with
several workers (`rate_limits.storage`: `auto` or `sqlite`), in a table of the index database, so that
the workers of one host share one count and `X-RateLimit-Limit` is what the host allows (with
`database.url`, `auto` always means that table, in the PostgreSQL server: every replica shares the
count); else in this worker's memory. If Redis (or the table) cannot be used the request is NOT
refused (fail open, never a 500): a warning is logged and the limit is counted in this worker's memory
instead, the shared store being tried again every few seconds; another warning says when it answers
again.

Every limited response carries `X-RateLimit-Limit` (requests per window), `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (Unix time, in seconds, when the next request frees up); a refusal is a 429 with
`Retry-After` (seconds) as well.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import Request, Response
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from ..config import ConfigError, RateLimitSettings, Settings
from ..store import IndexStore, StoreError
from ..store.ratelimits import SharedCounters, StoreCounters
from .auth import Principal
from .errors import Refused

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIS_RETRY_SECONDS = 5.0
"""After Redis fails, count in memory for this long before trying Redis again."""
KEY_PREFIX = "obsidian-ai-agent"


@dataclass(frozen=True)
class Usage:
    """The outcome of charging one request."""

    allowed: bool
    limit: RateLimitItem
    remaining: int
    reset: float
    """Unix time at which one more request fits in the window."""

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit.amount),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset)),
        }

    def retry_after(self, now: float | None = None) -> int:
        return max(1, math.ceil(self.reset - (time.time() if now is None else now)))


def trusted_networks(entries: list[str]) -> list[IPNetwork]:
    """`server.trusted_proxies` as networks (a single address is a /32 or /128)."""
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies has {entry!r}, which is not an IP address or network; "
                "give addresses such as 10.0.0.5 or networks such as 10.0.0.0/8"
            ) from None
    return networks


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::ffff:1.2.3.4`."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(
    peer: str | None, forwarded_for: list[str], proxies: list[IPNetwork], ipv6_prefix: int = 128
) -> str:
    """Who to count an anonymous request against: the peer, or, when the peer is a trusted proxy, the
    right-most `X-Forwarded-For` address that is not a trusted proxy. IPv6 is cut to `ipv6_prefix`."""
    if not peer:
        return "unknown"
    ip = parse_address(peer)
    if ip is None:
        return peer  # not an IP (a test client, a unix socket): still one caller

    def trusted(addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in proxies)

    if trusted(ip):
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            hop_ip = parse_address(hop)
            if hop_ip is None:
                break  # not an address: stop at the last proxy we trust
            ip = hop_ip
            if not trusted(hop_ip):
                break
    if isinstance(ip, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


def _redis_uri(url: str) -> str:
    """The `limits` async URI for a redis-py URL (`redis://`, `rediss://`, `unix://`)."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        return "async+" + url
    if scheme == "unix":
        return "async+redis+unix://" + url.partition("://")[2]
    if scheme.startswith("async+redis"):
        return url
    raise ConfigError(
        f"redis_url must start with redis://, rediss:// or unix://, not {scheme + '://'!r}; "
        "e.g. OAA_REDIS_URL=redis://localhost:6379/0"
    )


def _redis_where(url: str) -> str:
    """The Redis server for messages, without user or password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else parts.path or "the socket"


class Limiter:
    """Built once per app (and event loop): the parsed limits, the trusted proxies and the storage."""

    def __init__(self, settings: Settings, store: IndexStore | None = None) -> None:
        """`store`: the process's store, whose PostgreSQL pool the shared counters may use (else they open
        their own, on first use)."""
        rl = settings.server.rate_limits
        self.settings = rl
        self.groups: dict[str, RateLimitItem | None] = {
            name: None if limit == RateLimitSettings.UNLIMITED else parse(limit)
            for name, limit in rl.groups.items()
        }
        self.anonymous = None if rl.anonymous == RateLimitSettings.UNLIMITED else parse(rl.anonymous)
        self.proxies = trusted_networks(settings.server.trusted_proxies)
        self.memory = MovingWindowRateLimiter(MemoryStorage())
        self.shared: MovingWindowRateLimiter | None = None
        self.where = ""
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
            self.where = _redis_where(url)
            storage = RedisStorage(
                _redis_uri(url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=KEY_PREFIX,
                socket_connect_timeout=rl.redis_timeout,
                socket_timeout=rl.redis_timeout,
            )
            self.shared = MovingWindowRateLimiter(storage)
        self.table: SharedCounters | StoreCounters | None = None
        db = settings.database
        if self.shared is None and (
            rl.storage == "sqlite"
            # replicas on one PostgreSQL server share their counts whatever each one's worker count
            or (rl.storage == "auto" and ((settings.server.workers or 1) > 1 or db.url is not None))
        ):
            if db.url is not None:
                self.table = StoreCounters(
                    store if store is not None and store.backend == "postgres" else _opener(settings)
                )
                from ..store.postgres import redact_url

                self.where = f"the database {redact_url(db.url.get_secret_value())}"
            else:
                self.table = SharedCounters(settings.database_path)
                self.where = f"the index database {settings.database_path}"
        items = [i for i in [*self.groups.values(), self.anonymous] if i is not None]
        self.horizon = max((i.get_expiry() for i in items), default=60)
        self._redis_down_until = 0.0
        self._unknown_groups: set[str] = set()

    def limit_for(self, principal: Principal, group: str) -> RateLimitItem | None:
        if principal.key_id is None:
            return self.anonymous
        if group not in self.groups:
            if group not in self._unknown_groups:
                self._unknown_groups.add(group)
                log.warning(
                    "rate limit group %r has no limit in server.rate_limits.groups; it is not limited",
                    group,
                )
            return None
        return self.groups[group]

    async def charge(self, limit: RateLimitItem, *identity: str) -> Usage:
        """Count one request; in Redis when it is set and answering, else in this worker's memory."""
        if self.shared is not None and time.monotonic() >= self._redis_down_until:
            try:
                usage = await self._charge(self.shared, limit, identity)
            except (StorageError, OSError) as e:  # OSError: TimeoutError, refused sockets
                first = self._redis_down_until == 0.0  # later failed retries: debug, not a flood
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "rate limits: Redis at %s is not reachable (%s); counting in this worker's "
                    "memory (limits are per worker until it answers; retrying every %.0fs)",
                    self.where,
                    type(getattr(e, "storage_error", e)).__name__,
                    REDIS_RETRY_SECONDS,
                )
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            else:
                if self._redis_down_until:
                    log.warning("rate limits: Redis at %s answers again; counts are shared", self.where)
                    self._redis_down_until = 0.0
                return usage
        if self.table is not None and time.monotonic() >= self._redis_down_until:
            try:
                usage = await self._charge_table(self.table, limit, identity)
            except StoreError as e:
                first = self._redis_down_until == 0.0
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "rate limits: cannot count in %s (%s); counting in this worker's memory "
                    "(limits are per worker until it works; retrying every %.0fs)",
                    self.where,
                    e,
                    REDIS_RETRY_SECONDS,
                )
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            else:
                if self._redis_down_until:
                    log.warning("rate limits: %s counts again; counts are shared", self.where)
                    self._redis_down_until = 0.0
                return usage
        return await self._charge(self.memory, limit, identity)

    async def _charge_table(
        self, table: SharedCounters | StoreCounters, limit: RateLimitItem, identity: tuple[str, ...]
    ) -> Usage:
        key = "/".join((KEY_PREFIX, str(limit), *identity))
        allowed, remaining, reset = await anyio.to_thread.run_sync(
            table.hit, key, limit.amount, float(limit.get_expiry()), float(self.horizon)
        )
        return Usage(allowed, limit, remaining, reset)

    @staticmethod
    async def _charge(
        limiter: MovingWindowRateLimiter, limit: RateLimitItem, identity: tuple[str, ...]
    ) -> Usage:
        allowed = await limiter.hit(limit, *identity)
        reset, remaining = await limiter.get_window_stats(limit, *identity)
        return Usage(allowed, limit, remaining, reset)


def _opener(settings: Settings) -> Callable[[], IndexStore]:
    """What opens a PostgreSQL store of the counters' own: a small pool, a short wait."""
    db = settings.database
    assert db.url is not None

    def open_counters_store() -> IndexStore:
        from ..store.postgres import PostgresStore

        return PostgresStore(
            db.url.get_secret_value() if db.url else "",
            pool_size=2,
            timeout_s=min(db.timeout_s, 5.0),
            application="obsidian-ai-agent-ratelimit",
        )

    return open_counters_store


def get_limiter(app: Any) -> Limiter:
    """The app's limiter, built on first use in this event loop (storage clients belong to one loop)."""
    loop = asyncio.get_running_loop()
    cached = getattr(app.state, "rate_limiter", None)
    if cached is not None and cached[0] is loop:
        limiter: Limiter = cached[1]
        return limiter
    engine = getattr(app.state, "engine", None)
    limiter = Limiter(app.state.settings, store=getattr(engine, "store", None))
    app.state.rate_limiter = (loop, limiter)
    return limiter


def _describe(limit: RateLimitItem) -> str:
    unit = limit.GRANULARITY.name
    per = unit if limit.multiples == 1 else f"{limit.multiples} {unit}s"
    return f"{limit.amount} per {per}"


async def enforce_rate_limit(request: Request, response: Response, principal: Principal, group: str) -> None:
    """Charge this request to the caller's budget for `group`; set the `X-RateLimit-*` headers on
    `response` (and in `request.state.rate_limit_headers`, for a route that returns a Response of its own,
    whose headers FastAPI does not merge), or raise Refused 429 with `Retry-After` when it is spent."""
    settings: Settings = request.app.state.settings
    if not settings.server.rate_limits.enabled:
        return
    limiter = get_limiter(request.app)
    limit = limiter.limit_for(principal, group)
    if limit is None:
        return
    if principal.key_id is not None:
        identity = ("key", principal.key_id, group)
        who = f"API key {principal.key_id!r}"
    else:
        address = client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            limiter.proxies,
            limiter.settings.ipv6_prefix,
        )
        identity = ("address", address, group)
        who = f"address {address}"
    usage = await limiter.charge(limit, *identity)
    headers = usage.headers()
    if not usage.allowed:
        wait = usage.retry_after()
        raise Refused(
            429,
            f"rate limit reached: {who} may make {_describe(limit)} {group!r} requests; "
            f"retry in {wait} second{'s' if wait != 1 else ''}",
            details={"group": group, "limit": _describe(limit), "retry_after": wait},
            headers={**headers, "Retry-After": str(wait)},
        )
    response.headers.update(headers)
    request.state.rate_limit_headers = headers  # for routes that return their own Response (streams)
