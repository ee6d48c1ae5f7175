"""Who is calling: the API key from `Authorization: Bearer` or `X-API-Key`, checked against the store.

Scopes: `read` (search, ask, status), `write` (notes, indexing), `admin` (config, keys, reindex, cache,
jobs); a key may hold several, and `admin` reaches every route. With auth switched off (allowed only on
loopback, see config), every caller is an anonymous principal with every scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from starlette.requests import Request

from .errors import Refused
from .keys import ADMIN_KEY_FILE, SCOPES, verify

ALL_SCOPES = frozenset(SCOPES)
ADMIN_KEY_HINT = (
    f"On first start the service writes an admin key to <data dir>/{ADMIN_KEY_FILE} when no admin key "
    "exists; on the server, `obsidian-ai-agent keys create --name NAME --scope admin` makes one "
    "(add `--scope read`/`--scope write` keys the same way)"
)


@dataclass(frozen=True)
class Principal:
    """The caller: a key's id, name and scopes; `key_id` None means anonymous (auth switched off)."""

    key_id: str | None
    name: str = "anonymous"
    scopes: frozenset[str] = field(default_factory=frozenset)

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        kind, _, value = auth.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


async def authenticate(request: Request, scope: str) -> Principal:
    """The principal for this request, or Refused 401 (no or bad key) / 403 (key lacks the scope)."""
    settings = request.app.state.settings
    if not settings.server.auth.enabled:
        return Principal(None, "anonymous", ALL_SCOPES)
    challenge = {"WWW-Authenticate": 'Bearer realm="obsidian-ai-agent"'}
    secret = presented_key(request)
    if secret is None:
        raise Refused(
            401,
            "this route needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`. "
            f"{ADMIN_KEY_HINT}",
            code="unauthorized",
            headers=challenge,
        )
    engine = request.app.state.engine
    row = await anyio.to_thread.run_sync(lambda: verify(engine.store, secret), abandon_on_cancel=True)
    if row is None:
        raise Refused(
            401,
            "the API key is not valid (unknown, revoked, or past its rotation grace period)",
            code="unauthorized",
            headers=challenge,
        )
    principal = Principal(row.id, row.name, frozenset(row.scopes))
    request.state.principal = principal
    if not principal.allows(scope):
        raise Refused(
            403,
            f"the API key {row.id!r} lacks the {scope!r} scope this route needs; "
            f"it has: {', '.join(row.scopes)}",
            code="forbidden",
        )
    return principal
