"""API keys, stored hashed: who is calling, and may they use the admin routes.

Keys come from a file written by `tao keys add NAME [--admin]` (one line a key:
`sha256:HEX NAME [admin]`, `#` starts a comment) and from settings (TAO_API_KEY_HASHES,
TAO_ADMIN_KEY_HASH). Only SHA-256 hashes are kept anywhere: a leaked file or environment
gives no usable key. The file is re-read when it changes, so a new key works without a
restart. With no key configured at all the gateway is open (local development) and every
caller is the tenant of whatever bearer key it sends, as before.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
_HASH = re.compile(r"sha256:([0-9a-f]{64})")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_hash(value: str, where: str) -> str:
    """A normalised "sha256:HEX", or a ValueError saying how to make one."""
    v = value.strip().lower()
    if not _HASH.fullmatch(v):
        raise ValueError(f'{where}: {value[:12]!r}... is not "sha256:<64 hex digits>"; '
                         "`tao keys hash KEY` prints the hash of a key")
    return v


def new_key() -> str:
    return "tao-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool = False


def read_keys_file(path: Path) -> dict[str, Principal]:
    out: dict[str, Principal] = {}
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
            raise ValueError(f"{path}:{n}: expected 'sha256:HEX NAME [admin]'")
        out[parse_hash(parts[0], f"{path}:{n}")] = Principal(parts[1], admin=len(parts) == 3)
    return out


def add_key(path: Path, name: str, admin: bool = False) -> str:
    """Create a key, append its hash to `path` (mode 600) and return the key: shown once."""
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise ValueError("a key name is 1-64 letters, digits or _.@-")
    if path.exists() and any(p.name == name for p in read_keys_file(path).values()):
        raise ValueError(f"{path} already has a key named {name!r}")
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{hash_key(key)} {name}{' admin' if admin else ''}\n")
    return key


class KeyRing:
    """Looks up the caller of a bearer key. `enabled` is False when no key is configured."""

    def __init__(self, path: Path | None, hashes: list[str] = (), admin_hash: str | None = None):
        self.path = path
        self._static = {h: Principal(f"key-{h[7:15]}") for h in hashes}
        if admin_hash:
            self._static[admin_hash] = Principal("admin", admin=True)
        self._from_file: dict[str, Principal] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._refresh(force=True)

    @property
    def enabled(self) -> bool:
        self._refresh()
        return bool(self._static or self._from_file)

    @property
    def has_admin(self) -> bool:
        self._refresh()
        return any(p.admin for p in (*self._static.values(), *self._from_file.values()))

    def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return None
        self._refresh()
        h = hash_key(key)
        return self._static.get(h) or self._from_file.get(h)

    def _refresh(self, force: bool = False) -> None:
        # At most one stat a second: the file changes when an operator adds a key, not per request.
        now = time.monotonic()
        if self.path is None or (not force and now - self._checked < 1.0):
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._from_file, self._mtime = {}, None
            return
        if mtime != self._mtime:
            try:
                self._from_file = read_keys_file(self.path)
                self._mtime = mtime
                log.info("loaded %d API keys from %s", len(self._from_file), self.path)
            except ValueError as e:  # keep the keys we had: a typo must not lock everyone out
                log.error("ignoring unreadable key file: %s", e)
                if force:
                    raise
