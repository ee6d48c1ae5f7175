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
from ..store import IndexStore, StoreError
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


def create_key(store: IndexStore, name: str, scopes: list[str] | tuple[str, ...]) -> NewKey:
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


def list_keys(store: IndexStore) -> list[KeyRow]:
    return KeyStore(store).list()


def _existing(store: IndexStore, key_id: str) -> KeyRow:
    row = KeyStore(store).get(key_id)
    if row is None:
        raise UnknownKey(f"no API key with id {key_id!r}; `keys list` shows the ids")
    return row


def rotate_key(store: IndexStore, key_id: str, grace: float) -> NewKey:
    """A replacement key with the same name and scopes; the key it replaces keeps working for `grace`
    seconds. Rotating again (with any id of the chain, inside a grace period or not) replaces the chain's
    newest key: no second branch, and older keys keep the expiry they had."""
    old = _existing(store, key_id)
    if not old.active():
        raise UnknownKey(f"API key {key_id!r} is revoked or expired; create a new key instead")
    new_id, secret = _new_secret()
    keys = KeyStore(store)
    if keys.rotate(old.lineage, new_id, _digest(secret), time.time() + grace) is None:
        raise UnknownKey(f"API key {key_id!r} has no live key left to rotate; create a new key instead")
    row = keys.get(new_id)
    assert row is not None
    return NewKey(row, secret)


def lineage_of(store: IndexStore, key_id: str) -> str:
    """The stable id of a key across rotations (the first key of its chain)."""
    row = KeyStore(store).get(key_id)
    return row.lineage if row is not None else key_id


def revoke_key(store: IndexStore, key_id: str) -> KeyRow:
    """Revoke at once, with every other secret of its rotation chain: the next request with any of them
    is refused, in every worker."""
    _existing(store, key_id)
    KeyStore(store).revoke(key_id)
    return _existing(store, key_id)


_last_touch: dict[str, float] = {}
_touch_lock = threading.Lock()


def verify(store: IndexStore, secret: str) -> KeyRow | None:
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
        try:
            keys.touch(row.id, now)
        except StoreError as e:  # a read-only data directory must not lock every key out
            log.debug("could not record the key's last use: %s", e)
    return row


def _file_key(path: Path) -> str | None:
    """The key an existing key file holds, when it holds one in this program's format."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _FORMAT.match(text) else None


def ensure_admin_key(store: IndexStore, settings: Settings) -> Path | None:
    """On a start with no working admin key (none yet, or only read/write keys made with `keys create`
    before the first start, or every admin key revoked): write an admin key to `<data dir>/admin.key`
    (mode 0600) and print its path. Several workers starting at once make exactly one key. Returns the
    file when one was made.

    A key file that exists is never overwritten: when it holds a key, that key becomes this index's
    admin key (an index started afresh keeps the operator's key working); otherwise the new key goes to
    a new file beside it, `admin-<id>.key`."""
    if not settings.server.auth.enabled:
        return None
    keys = KeyStore(store)
    if keys.has_active_admin():
        return None
    path = settings.data_dir / ADMIN_KEY_FILE
    existing = _file_key(path) if path.exists() else None
    if existing is not None and keys.get(existing.split("_")[1]) is not None:
        existing = None  # this index knows that key and it no longer works: a new one goes beside it
    if existing is not None:
        m = _FORMAT.match(existing)
        assert m is not None
        key_id, secret = m.group(1), existing
    else:
        key_id, secret = _new_secret()
    if not keys.insert(key_id, "admin (first start)", ["admin"], _digest(secret), only_if_no_admin=True):
        return None
    if existing is not None:
        message = f"the index has no admin API key; the admin key in {path} is its admin key"
        log.warning(message)
        print(message, file=sys.stderr, flush=True)
        return None
    if path.exists() or path.is_symlink():
        path = settings.data_dir / f"admin-{key_id}.key"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: never write through a file (or a symlink) that appeared meanwhile.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    message = f"created an admin API key; it is in {path} (readable only by this user)"
    log.warning(message)
    print(message, file=sys.stderr, flush=True)
    return path
