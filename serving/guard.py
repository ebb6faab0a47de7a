"""The gateway's front door, before any route runs: body size, API key, rate limit.

A plain ASGI middleware (no BaseHTTPMiddleware: it would add a task and a copy per request
on the hot path). /v1/*, /admin/* and the API docs (/docs, /redoc, /openapi.json) are
guarded; health, readiness and metrics are not. Whether a key is needed at all is the key
ring's `mode` (feedback/auth.py): it never turns open because keys went missing.
Order: 413 (body too large) -> 401 (no valid key) -> 403 (admin route, not an admin key)
-> 429 (rate limit, with Retry-After). A refused request never reaches vLLM and never logs
an event. The token rate limit needs the counted prompt: serving/limits.py, in the route.
"""
from __future__ import annotations

import math
from typing import Callable

from feedback.api import bearer_value
from feedback.ids import tenant_of
from feedback.auth import KeyRing, Principal
from serving.errors import error_response
from serving.limits import RateLimiter

# The API docs too: they follow the API's rule (a key in mode keys), not an open side door.
GUARDED = ("/v1/", "/admin/", "/docs", "/redoc", "/openapi.json")


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The bearer key from raw ASGI headers (parsed like the routes parse it)."""
    value = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)
    return bearer_value(value)


class Guard:
    def __init__(self, app, keys: KeyRing, limiter: RateLimiter, max_body_bytes: int,
                 on_reject: Callable[[str], None] = lambda reason: None):
        self.app, self.keys, self.limiter, self.max_body = app, keys, limiter, max_body_bytes
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED):
            return await self.app(scope, receive, send)
        refusal = self._check(scope)
        if refusal is not None:
            reason, response = refusal
            self.on_reject(reason)
            return await response(scope, receive, send)
        return await self._with_body_limit(scope, receive, send)

    def _check(self, scope):
        headers = scope["headers"]
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return "body_too_large", self._too_large()
        key = bearer(headers)
        admin_route = scope["path"].startswith("/admin/")
        if self.keys.enabled:
            principal = self.keys.lookup(key)
            if principal is None:
                if not self.keys.configured:
                    msg = ("this gateway has no API key configured, so it refuses every request: an operator "
                           "adds one with `tao keys add NAME`")
                else:
                    msg = ("invalid API key" if key else "no API key") + ": send the header 'Authorization: Bearer KEY'"
                return "unauthorized", error_response(401, msg, "invalid_api_key",
                                                      headers={"WWW-Authenticate": "Bearer"})
        else:
            principal = Principal(tenant_of(key))
        if admin_route and not principal.admin:
            msg = ("this route needs the admin key" if self.keys.has_admin else
                   "admin routes are off: add an admin key (`tao keys add NAME --admin`) or set TAO_ADMIN_KEY_HASH")
            return "forbidden", error_response(403, msg, "admin_only")
        wait = self.limiter.hit(principal.name)
        if wait is not None:
            return "rate_limited", error_response(
                429, f"rate limit {self.limiter.item} for this API key exceeded; retry in {math.ceil(wait)} s",
                "rate_limit_exceeded", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        scope.setdefault("state", {})["principal"] = principal
        return None

    async def _with_body_limit(self, scope, receive, send):
        if any(k == b"content-length" for k, _ in scope["headers"]):
            return await self.app(scope, receive, send)  # already checked against the limit
        # A chunked body has no length up front: read it here, up to the limit, then hand
        # the app a replay. (Failing inside the app's own read would surface as a 400.)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                self.on_reject("body_too_large")
                return await self._too_large()(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self):
        return error_response(413, f"request body larger than {self.max_body} bytes (TAO_MAX_BODY_BYTES)",
                              "request_too_large")
