"""Tenants and completion ids signed for their tenant.

A tenant is a hash of the caller's API key (the key itself is never stored or logged).
A completion id carries an HMAC of (tenant, random part), so feedback on another tenant's
completion, or on an id that never existed, is refused without a database lookup.

The HMAC key is shared by every gateway replica and the worker (which signs tao.control
events with it, see feedback/registry.py): TAO_SIGNING_KEY, or DATA_DIR/signing.key, made
by whichever process needs it first (`load_or_create_key`).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

_PREFIX = "chatcmpl-tao-"


def tenant_of(api_key: str | None) -> str:
    if not api_key:
        return "anonymous"
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


def _sig(key: bytes, tenant: str, rand: str) -> str:
    return hmac.new(key, f"{tenant}:{rand}".encode(), hashlib.sha256).hexdigest()[:20]


def new_completion_id(key: bytes, tenant: str) -> str:
    rand = secrets.token_hex(12)
    return f"{_PREFIX}{rand}{_sig(key, tenant, rand)}"


def verify_completion_id(key: bytes, tenant: str, completion_id: str) -> bool:
    if not completion_id.startswith(_PREFIX) or len(completion_id) != len(_PREFIX) + 24 + 20:
        return False
    body = completion_id[len(_PREFIX):]
    rand, sig = body[:24], body[24:]
    return hmac.compare_digest(sig, _sig(key, tenant, rand))


def shared_key(configured: str | None, data_dir: Path) -> bytes:
    """TAO_SIGNING_KEY if set, else the key kept in DATA_DIR/signing.key."""
    return configured.encode() if configured else load_or_create_key(data_dir / "signing.key")


def load_or_create_key(path: Path) -> bytes:
    """The key kept in `path`; a new random one if there is none yet.

    Replicas (and the worker) starting at once must end with ONE key: each writes a whole
    candidate under a name of its own, created 0600 (never readable by others, not for a
    moment), and hard-links it to `path`. A link never replaces a file that exists, so the
    first one wins and everyone reads that one; nobody ever sees a half-written key.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process got there first: its key is the key
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:  # written by an older tao-loop (write, then chmod) or by hand
        log.warning("%s was readable by others (mode %o): made 0600", path, mode)
        os.chmod(path, 0o600)
    key = path.read_bytes().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it (a new key is made; completion ids signed with the old "
                           "one stop verifying) or set TAO_SIGNING_KEY")
    return key
