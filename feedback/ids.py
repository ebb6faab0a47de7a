"""Tenants and completion ids signed for their tenant.

A tenant is a hash of the caller's API key (the key itself is never stored or logged).
A completion id carries an HMAC of (tenant, random part), so feedback on another tenant's
completion, or on an id that never existed, is refused without a database lookup.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

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
