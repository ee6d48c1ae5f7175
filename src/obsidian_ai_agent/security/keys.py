"""API keys: random, shown once, stored as SHA-256 hashes, scoped, rotatable with a grace period in which
both keys work, revocable at once in every worker (each request reads the key's row, nothing is cached).

A key reads `oaa_<id>_<secret>`: the id finds the row, the secret (256 random bits) is checked against
the hash in constant time. A fast hash is right here: the secret is random, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..store import Store
from ..store.keys import KeyRow, KeyStore

log = logging.getLogger(__name__)

SCOPES = ("read", "write", "admin")
PREFIX = "oaa_"
_FORMAT = re.compile(r"^oaa_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
ADMIN_KEY_FILE = "admin.key"
_TOUCH_EVERY = 60.0


class UnknownKey(LookupError):
    """No such key (the message names the id and what to do)."""


@dataclass
class NewKey:
    key: KeyRow
    secret: str
    """The key itself: shown once, never stored."""

    def to_dict(self) -> dict[str, object]:
        return {**self.key.to_dict(), "key": self.secret}


def normalize_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """The scopes in canonical order; an unknown or missing scope is a ValueError saying what is allowed."""
    wanted = {s.strip().lower() for s in scopes if s.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return [s for s in SCOPES if s in wanted]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> tuple[str, str]:
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def create_key(store: Store, name: str, scopes: list[str] | tuple[str, ...]) -> NewKey:
    """A new key with these scopes; the returned `secret` is the only time the key is seen."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a key needs a name of 1 to 100 characters (who or what uses it)")
    chosen = normalize_scopes(scopes)
    key_id, secret = _new_secret()
    KeyStore(store).insert(key_id, name, chosen, _digest(secret))
    row = KeyStore(store).get(key_id)
    assert row is not None
    return NewKey(row, secret)


def list_keys(store: Store) -> list[KeyRow]:
    return KeyStore(store).list()


def _existing(store: Store, key_id: str) -> KeyRow:
    row = KeyStore(store).get(key_id)
    if row is None:
        raise UnknownKey(f"no API key with id {key_id!r}; `keys list` shows the ids")
    return row


def rotate_key(store: Store, key_id: str, grace: float) -> NewKey:
    """A replacement key with the same name and scopes; the old one keeps working for `grace` seconds."""
    old = _existing(store, key_id)
    if not old.active():
        raise UnknownKey(f"API key {key_id!r} is revoked or expired; create a new key instead")
    new = create_key(store, old.name, old.scopes)
    KeyStore(store).retire(key_id, time.time() + grace, new.key.id)
    return new


def revoke_key(store: Store, key_id: str) -> KeyRow:
    """Revoke at once: the next request with it is refused, in every worker."""
    _existing(store, key_id)
    KeyStore(store).revoke(key_id)
    return _existing(store, key_id)


_last_touch: dict[str, float] = {}
_touch_lock = threading.Lock()


def verify(store: Store, secret: str) -> KeyRow | None:
    """The active key this secret is, or None."""
    m = _FORMAT.match(secret.strip())
    if not m:
        return None
    keys = KeyStore(store)
    found = keys.get_with_digest(m.group(1))
    if found is None:
        return None
    row, digest = found
    if not hmac.compare_digest(digest, _digest(secret.strip())) or not row.active():
        return None
    now = time.time()
    with _touch_lock:
        due = now - _last_touch.get(row.id, 0.0) >= _TOUCH_EVERY
        if due:
            _last_touch[row.id] = now
    if due:  # a write at most once a minute per key and process, not per request
        keys.touch(row.id, now)
    return row


def ensure_admin_key(store: Store, settings: Settings) -> Path | None:
    """On first start with no key: write an admin key to `<data dir>/admin.key` (mode 0600) and print its
    path. Several workers starting at once make exactly one key. Returns the file when one was made."""
    if not settings.server.auth.enabled:
        return None
    keys = KeyStore(store)
    if keys.count():
        return None
    key_id, secret = _new_secret()
    if not keys.insert(key_id, "admin (first start)", ["admin"], _digest(secret), only_if_none=True):
        return None
    path = settings.data_dir / ADMIN_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    message = f"created an admin API key; it is in {path} (readable only by this user)"
    log.warning(message)
    print(message, file=sys.stderr, flush=True)
    return path
