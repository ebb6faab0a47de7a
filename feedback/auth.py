"""API keys, stored hashed: who is calling, and may they use the admin routes.

Keys come from a file written by `tao keys add NAME [--admin]` (one line a key:
`sha256:HEX NAME [admin]`, `#` starts a comment) and from settings (TAO_API_KEY_HASHES,
TAO_ADMIN_KEY_HASH). Only SHA-256 hashes are kept anywhere: a leaked file or environment
gives no usable key. The file is re-read when it changes, so a new key works without a
restart.

Auth never fails open. In mode `keys` (TAO_AUTH, the default) a missing, emptied or
comment-only key file with no key in the settings refuses every caller (401) and says so in
the log, once per change. Mode `open` (explicit, and only on a loopback address: checked in
serving/settings.py) lets anyone in, each caller the tenant of whatever bearer key it sends,
but only until a key is seen: from then on the ring stays in `keys` for the life of the
process, so deleting the file afterwards never opens the gateway again.
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
    """Looks up the caller of a bearer key; `mode` says whether a key is needed at all."""

    def __init__(self, path: Path | None, hashes: list[str] = (), admin_hash: str | None = None,
                 allow_open: bool = False):
        self.path = path
        self._static = {h: Principal(f"key-{h[7:15]}") for h in hashes}
        if admin_hash:
            self._static[admin_hash] = Principal("admin", admin=True)
        self._from_file: dict[str, Principal] = {}
        self._file_state = "unset"  # what the file held at the last look: for the log lines
        self._signature: tuple | None = None
        self._checked = 0.0
        self._open = allow_open  # cleared for good by the first key seen
        self._said: tuple | None = None
        self._refresh(force=True)

    @property
    def mode(self) -> str:
        """"open" (no key needed: TAO_AUTH=open and no key ever seen) or "keys"."""
        self._refresh()
        return "open" if self._open else "keys"

    @property
    def enabled(self) -> bool:
        return self.mode == "keys"

    @property
    def configured(self) -> bool:
        """Whether any key is configured now (False in mode keys: every caller is refused)."""
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

    def tenant_names(self) -> dict[str, str]:
        """Each key's tenant (feedback.ids.tenant_of: the first 24 hex digits of its SHA-256)
        and the key's name, for people reading per-tenant figures."""
        self._refresh()
        return {h[7:31]: p.name for h, p in (*self._static.items(), *self._from_file.items())}

    def lookup_hash(self, key_hash: str) -> Principal | None:
        """The holder of a key known by its hash (a console session keeps the hash, never the key)."""
        self._refresh()
        return self._static.get(key_hash) or self._from_file.get(key_hash)

    def _refresh(self, force: bool = False) -> None:
        # At most one stat a second: the file changes when an operator adds a key, not per request.
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        if self.path is not None:
            self._read_file(force)
        if self._static or self._from_file:
            self._open = False
        self._say()

    def _read_file(self, force: bool) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._from_file, self._signature, self._file_state = {}, None, "missing"
            return
        # Size and inode too: a rewrite within the clock's resolution keeps the mtime.
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._from_file = read_keys_file(self.path)
        except ValueError as e:  # keep the keys we had: a typo must not lock everyone out
            log.error("ignoring unreadable key file: %s", e)
            if force:
                raise
            return
        self._file_state = f"{len(self._from_file)} keys" if self._from_file else "empty or only comments"
        log.info("loaded %d API keys from %s", len(self._from_file), self.path)

    def _say(self) -> None:
        """One log line per change of what the gateway does, never one per request."""
        refusing = not self._open and not (self._static or self._from_file)
        state = (self._open, refusing, self._file_state if refusing else None)
        if state == self._said:
            return
        self._said = state
        where = f"the key file {self.path} is {self._file_state}" if self.path else "no key file is set"
        if self._open:
            log.warning("TAO_AUTH=open and no API key configured: the gateway answers anyone who can reach it "
                        "(loopback only); the first key (`tao keys add NAME`) turns keys on")
        elif refusing:
            log.error("no API key configured (%s, and TAO_API_KEY_HASHES / TAO_ADMIN_KEY_HASH are unset): "
                      "EVERY request gets 401 until a key is added with `tao keys add NAME` (picked up within a "
                      "second); for local development without keys set TAO_AUTH=open (loopback only)", where)
        else:
            log.info("API keys required: %d configured", len(self._static) + len(self._from_file))
