"""The console's routes in-process (FastAPI's TestClient): who gets in, sessions, forms.
The real browser against a real stack is tests/e2e/test_console.py."""
from __future__ import annotations

import json
import time
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from feedback.auth import KeyRing, add_key
from feedback.collector import CollectorCounters
from feedback.store import Store
from tests.trainer.console.fill import fill
from trainer import console
from trainer.console.actions import ModelActions
from trainer.console.auth import COOKIE, ConsoleAuth
from trainer.console.data import ConsoleData

PAGES = ["traffic", "completions", "feedback", "models", "cycles", "collector", "collector?fragment=1"]


@pytest.fixture
def env(tmp_path):
    store = Store(tmp_path / "tao.duckdb")
    fill(store, 200, seed=5)
    keys = {"root": add_key(tmp_path / "api_keys", "root", admin=True), "acme": add_key(tmp_path / "api_keys", "acme")}
    ring = KeyRing(tmp_path / "api_keys")
    app = FastAPI()
    console.mount(app)
    app.state.console_auth = ConsoleAuth(ring, b"s" * 32, 3600)
    app.state.console_data = ConsoleData(store, tmp_path, CollectorCounters().stats, tenant_names=ring.tenant_names)
    # A broker nobody listens on: the actions tested here fail before they would publish.
    app.state.console_actions = ModelActions("127.0.0.1:9", tmp_path, tmp_path / "base", b"s" * 32, store)
    with TestClient(app) as client:
        yield client, keys, tmp_path, app
    store.close()


def signed_in(client, key: str) -> str:
    r = client.post("/console/login", data={"key": key, "next": "/console/feedback"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/feedback"
    cookie = r.cookies[COOKIE]
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    return cookie


def test_no_key_401_tenant_key_403_admin_200(env):
    client, keys, *_ = env
    for p in PAGES + ["cycles/c1"]:
        r = client.get(f"/console/{p}")
        assert r.status_code == 401 and 'name="key"' in r.text, p
        assert client.get(f"/console/{p}", headers={"authorization": f"Bearer {keys['acme']}"}).status_code == 403
        assert client.get(f"/console/{p}", headers={"authorization": "Bearer nope"}).status_code == 401
        ok = client.get(f"/console/{p}", headers={"authorization": f"Bearer {keys['root']}"})
        assert ok.status_code == (404 if p.startswith("cycles/") else 200), p
    # The sign-in form: a tenant's key is refused with 403 and gets no cookie.
    r = client.post("/console/login", data={"key": keys["acme"]}, follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in r.cookies and "not an admin key" in r.text
    assert client.post("/console/login", data={"key": "guess"}, follow_redirects=False).status_code == 401


def test_a_session_cookie_signs_in_and_out(env):
    client, keys, *_ = env
    cookie = signed_in(client, keys["root"])
    assert keys["root"] not in cookie  # the key itself is never in the cookie
    page = client.get("/console/traffic")
    assert page.status_code == 200 and "root" in page.text and "acme" in page.text  # tenants by key name
    # Signing out needs the page's token: a form posted from elsewhere cannot.
    assert client.post("/console/logout", data={"csrf": "x"}).status_code == 403
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and 'Max-Age=0' in r.headers["set-cookie"]


def test_a_signed_out_cookie_is_dead_on_the_server_even_after_a_restart(env, tmp_path):
    client, keys, _, app = env
    path = tmp_path / "signed_out.json"
    app.state.console_auth = ConsoleAuth(KeyRing(tmp_path / "api_keys"), b"s" * 32, 3600, signed_out_path=path)
    cookie = signed_in(client, keys["root"])
    other = signed_in(client, keys["root"])  # a second browser's session
    client.cookies.clear()
    client.cookies.set(COOKIE, cookie)
    page = client.get("/console/traffic")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/console/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    # Kept until the cookie itself would have expired (its own expiry, about the ttl from now).
    (kept_until,) = json.loads(path.read_text()).values()
    assert 3500 < kept_until - time.time() <= 3600
    # A copy of the cookie (kept by whoever saw it) no longer signs in.
    client.cookies.clear()
    client.cookies.set(COOKIE, cookie)
    r = client.get("/console/traffic")
    assert r.status_code == 401 and "signed out" in r.text
    # The other session is untouched, and a restarted worker still refuses the first.
    app.state.console_auth = ConsoleAuth(KeyRing(tmp_path / "api_keys"), b"s" * 32, 3600, signed_out_path=path)
    assert client.get("/console/traffic").status_code == 401
    client.cookies.clear()
    client.cookies.set(COOKIE, other)
    assert client.get("/console/traffic").status_code == 200
    # A bad file is a clear error at start, not a silent amnesty.
    path.write_text("[1, 2")
    with pytest.raises(RuntimeError, match="signed-out console sessions"):
        ConsoleAuth(KeyRing(tmp_path / "api_keys"), b"s" * 32, 3600, signed_out_path=path)


def test_a_tampered_expired_or_revoked_session_is_refused(env):
    client, keys, tmp_path, app = env
    cookie = signed_in(client, keys["root"])
    body, sig = cookie.split(".")

    def get_with(value: str):
        client.cookies.clear()
        client.cookies.set(COOKIE, value)
        return client.get("/console/traffic")

    assert get_with(body + "." + sig[::-1]).status_code == 401
    assert get_with("garbage").status_code == 401
    auth: ConsoleAuth = app.state.console_auth
    auth.ttl_s = -1
    r = get_with(auth.sign_in(keys["root"]))
    assert r.status_code == 401 and "expired" in r.text
    assert get_with(cookie).status_code == 200
    # The key leaves the file: its sessions end (the ring re-reads the file within a second).
    (tmp_path / "api_keys").write_text("".join(line for line in (tmp_path / "api_keys").read_text().splitlines(True)
                                               if " root " not in line))
    time.sleep(1.1)
    assert get_with(cookie).status_code == 401

def test_buttons_need_the_token_and_a_version_name(env):
    client, keys, *_ = env
    signed_in(client, keys["root"])
    token = client.get("/console/models").text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/console/models/v1/promote", data={"csrf": "wrong"}).status_code == 403
    # Names are checked before any path is built: no "../" out of the models directory.
    for bad in ("v1x", "base", "V1", "v1%20"):
        r = client.post(f"/console/models/{bad}/promote", data={"csrf": token}, follow_redirects=False)
        assert r.status_code == 303 and "error=" in r.headers["location"], bad
    r = client.post("/console/models/v7/promote", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and "no version 'v7'" in unquote(r.headers["location"])
    shown = client.get(r.headers["location"])
    assert "no version &#39;v7&#39;" in shown.text
    # A crafted link cannot make the page announce what no action of this session did.
    for forged in ("/console/models?done=Rolled%20back%20to%20v3", "/console/models?done=Rolled%20back&sig=abc",
                   r.headers["location"].replace("v7", "v8")):
        page = client.get(forged).text
        assert 'data-testid="done"' not in page and 'data-testid="error"' not in page, forged
    r = client.post("/console/models/rollback", data={"csrf": token, "to": "x/y"}, follow_redirects=False)
    assert "not a version name" in unquote(r.headers["location"])
    r = client.post("/console/models/rollback", data={"csrf": token}, follow_redirects=False)
    assert "nothing to roll back to" in unquote(r.headers["location"])  # the base model is live


def test_sign_in_redirects_only_inside_the_console(env):
    client, keys, *_ = env
    for target in ("https://evil.example/", "//evil.example/x", "/console/..//evil", "/metrics"):
        r = client.post("/console/login", data={"key": keys["root"], "next": target}, follow_redirects=False)
        assert r.headers["location"] == "/console/traffic", target


def test_static_files_are_served_from_the_package(env):
    client, *_ = env
    for name in ("vendor/htmx-2.0.8.min.js", "vendor/uPlot-1.6.32.iife.min.js", "console.js", "console.css"):
        assert client.get(f"/console/static/{name}").status_code == 200, name
    page = client.get("/console/login").text
    assert "http://" not in page.replace("http://127.0.0.1", "") and "https://" not in page  # nothing from a CDN


def test_stored_text_cannot_run_script(env):
    """A version name planted in tao.control, or a prompt, is shown as text; no inline handler
    exists to inject into, and the policy allows scripts from the console's own files only."""
    from schemas.events import ModelPromoted, ModelPromotedPayload

    client, keys, _, app = env
    store = app.state.console_data.store
    evil = "v1');alert(1)//<script>alert(2)</script>"
    e = ModelPromoted(payload=ModelPromotedPayload(version=evil, artifact_path="/x"))
    store.write_batch([(e, e.to_bytes().decode())], {})
    signed_in(client, keys["root"])
    page = client.get("/console/models")
    assert "<script>alert(2)" not in page.text and "&lt;script&gt;alert(2)" in page.text
    assert " on" + "submit=" not in page.text and " on" + "change=" not in page.text and " on" + "click=" not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    # And a rollback from that "live" version is refused before any path is built from it.
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post("/console/models/rollback", data={"csrf": token}, follow_redirects=False)
    assert "not a version name" in unquote(r.headers["location"])


def test_a_bad_page_time_is_a_400_not_a_500(env):
    client, keys, *_ = env
    signed_in(client, keys["root"])
    r = client.get("/console/completions?before=yesterday")
    assert r.status_code == 400 and "not a time" in r.text
    first = client.get("/console/completions").text
    older = first.split("before=")[1].split('"')[0]
    assert client.get(f"/console/completions?before={older}").status_code == 200
