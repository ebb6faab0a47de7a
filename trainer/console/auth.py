"""Who may see the console: holders of an admin key (feedback/auth.py's key ring, the same
file and settings as the gateway's admin routes), nobody else.

A browser signs in once with its key on /console/login and gets a session cookie: the key's
hash and an expiry, signed with the worker's signing key (HMAC). The cookie never holds the
key, and each request looks the hash up again, so removing the key from the file ends every
session made with it within a second. Scripts may send `Authorization: Bearer KEY` instead.

Answers: no credentials, an unknown key, a bad or expired cookie: 401; a valid key that is
not an admin key: 403. A form that changes something (promote, roll back, sign out) also
carries a token derived from the session (a per-session CSRF token), and the cookie is
SameSite=Strict: another site cannot make a signed-in browser press a button.

Signing out ends the session on the server too: the cookie's signature is kept, until the
cookie would have expired, in a small file in the data directory (so a copied cookie stays
dead after a worker restart), and a request carrying it gets 401.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from feedback.auth import KeyRing, Principal, hash_key
from feedback.files import write_json_atomic

COOKIE = "tao_console"


class Denied(Exception):
    """The request may not see the console: 401 (who are you?) or 403 (not an admin)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Session:
    principal: Principal
    cookie: str | None  # None: a bearer key (no session, no CSRF token needed: no browser sent it)
    csrf: str
    expires: int = 0  # the cookie's expiry (epoch s), as checked; 0 for a bearer key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConsoleAuth:
    def __init__(self, keys: KeyRing, secret: bytes, ttl_s: float, signed_out_path: Path | None = None):
        """`signed_out_path`: where signed-out sessions are kept (None: in memory only)."""
        self.keys, self.ttl_s, self.signed_out_path = keys, ttl_s, signed_out_path
        # A key of its own, derived: a console cookie is no valid completion-id signature.
        self._secret = hmac.new(secret, b"tao-console-session", hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._signed_out: dict[str, int] = self._load_signed_out()

    def _load_signed_out(self) -> dict[str, int]:
        if self.signed_out_path is None or not self.signed_out_path.exists():
            return {}
        try:
            got = json.loads(self.signed_out_path.read_text())
            return {str(k): int(v) for k, v in got.items()}
        except (ValueError, TypeError, AttributeError) as e:
            # Unreadable: refuse to start rather than bring signed-out cookies back to life.
            raise RuntimeError(f"{self.signed_out_path}: not a JSON object of signed-out console sessions ({e}); "
                               "delete it to start over (signed-out cookies then work again until they expire, "
                               "unless you also change TAO_SIGNING_KEY)") from e

    def sign_out(self, session: "Session") -> None:
        """End a cookie session for good (a bearer key has none to end)."""
        if session.cookie is None:
            return
        sig = session.cookie.split(".", 1)[1]
        now = time.time()
        with self._lock:
            # Expired cookies are refused anyway: forget them, so the file stays small.
            self._signed_out = {k: v for k, v in self._signed_out.items() if v >= now}
            self._signed_out[sig] = session.expires
            if self.signed_out_path is not None:
                write_json_atomic(self.signed_out_path, self._signed_out)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def csrf_for(self, cookie: str) -> str:
        return self._sign("csrf|" + cookie)[:32]

    def sign_in(self, key: str) -> str:
        """The session cookie's value for an admin key, or Denied."""
        who = self.keys.lookup(key.strip())
        self._check(who)
        # A nonce: two sign-ins in one second are two sessions, and signing out of one leaves the other.
        body = _b64(json.dumps({"h": hash_key(key.strip()), "exp": int(time.time() + self.ttl_s),
                                "n": _b64(os.urandom(9))}).encode())
        return f"{body}.{self._sign(body)}"

    def _check(self, who: Principal | None) -> Principal:
        if who is None:
            hint = "" if self.keys.has_admin else (
                " No admin key is configured: create one with `tao keys add NAME --admin` (or set "
                "TAO_ADMIN_KEY_HASH), then sign in with it.")
            raise Denied(401, "Sign in with an admin API key." + hint)
        if not who.admin:
            raise Denied(403, f"The key {who.name!r} is not an admin key: the console is for admins only.")
        return who

    def session(self, authorization: str | None, cookie: str | None) -> Session:
        if authorization and authorization.lower().startswith("bearer "):
            who = self._check(self.keys.lookup(authorization[7:].strip()))
            return Session(who, None, "")
        if not cookie:
            self._check(None)
        try:
            body, sig = cookie.split(".", 1)
            if not hmac.compare_digest(sig, self._sign(body)):
                raise ValueError("signature")
            claims = json.loads(_unb64(body))
            if claims["exp"] < time.time():
                raise Denied(401, "Your console session has expired: sign in again.")
            if sig in self._signed_out:
                raise Denied(401, "This console session was signed out: sign in again.")
        except Denied:
            raise
        except (ValueError, KeyError, TypeError):
            raise Denied(401, "Your console session is not valid (signed with another key?): sign in again.")
        who = self._check(self.keys.lookup_hash(claims["h"]))
        return Session(who, cookie, self.csrf_for(cookie), int(claims["exp"]))

    def note_sig(self, session: Session, kind: str, text: str) -> str:
        """A signature for the message an action leaves in its redirect (?done=...): the page
        shows only messages this session's own action made, never text from a crafted link."""
        return self._sign(f"note|{session.csrf}|{kind}|{text}")[:22]

    def check_csrf(self, session: Session, token: str | None) -> None:
        if session.cookie is not None and not hmac.compare_digest(token or "", session.csrf):
            raise Denied(403, "This form is stale or came from another page: reload the page and try again.")
