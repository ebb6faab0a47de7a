"""Auth, limits and metrics at the gateway's front door. No vLLM is needed: every request
here is refused before the model is asked, or reaches a model server that is deliberately
absent (503), which shows it got past the check under test."""
import time

import pytest
from fastapi.testclient import TestClient

from feedback.procs import free_port
from serving.app import create_app
from feedback.auth import KeyRing, add_key, hash_key, read_keys_file
from serving.settings import GatewaySettings
from tests.serving.test_errors import assert_openai_error, no_events

MSG = [{"role": "user", "content": "Hello"}]


def make_client(tmp_path, **overrides):
    # Open unless a test says otherwise (on loopback, as `tao up` runs it): most tests here
    # are about the limits past the door. tests/serving/test_auth.py covers the default, keys.
    overrides.setdefault("auth", "open")
    settings = GatewaySettings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                               vllm_url=f"http://127.0.0.1:{free_port()}", signing_key="k" * 32, **overrides)
    return TestClient(create_app(settings))


def chat(c, key=None, **body):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return c.post("/v1/chat/completions", json={"model": "tao", "messages": MSG, **body}, headers=headers)


def rejected(c, reason) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(f'tao_requests_rejected_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def keyed(tmp_path):
    user = add_key(tmp_path / "api_keys", "alice")
    admin = add_key(tmp_path / "api_keys", "ops", admin=True)
    with make_client(tmp_path, auth="keys") as c:
        yield c, user, admin


def test_keys_are_stored_hashed(tmp_path):
    key = add_key(tmp_path / "keys", "alice")
    text = (tmp_path / "keys").read_text()
    assert key not in text and hash_key(key) in text
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o600
    assert read_keys_file(tmp_path / "keys")[hash_key(key)].name == "alice"
    with pytest.raises(ValueError, match="already has a key named"):
        add_key(tmp_path / "keys", "alice")


def test_missing_or_wrong_key_is_401_and_logs_nothing(keyed):
    c, user, _ = keyed
    for key in (None, "tao-not-a-real-key"):
        err = assert_openai_error(chat(c, key), 401, "invalid_api_key")
        assert "Authorization: Bearer" in err["message"]
    r = c.post("/v1/feedback", json={"completion_id": "x", "kind": "thumbs", "value": "up"})
    assert_openai_error(r, 401, "invalid_api_key")
    assert_openai_error(c.get("/v1/models"), 401)
    no_events(c)
    assert rejected(c, "unauthorized") == 4
    # A valid key gets past the door (to the absent model server: 503).
    assert_openai_error(chat(c, user), 503, "model_unavailable")


def test_health_and_metrics_need_no_key(keyed):
    c, _, _ = keyed
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").json()["auth"] == "keys"
    assert c.get("/metrics").status_code == 200


def test_admin_routes_need_the_admin_key(keyed):
    c, user, admin = keyed
    assert_openai_error(c.get("/admin/models", headers={"authorization": f"Bearer {user}"}), 403, "admin_only")
    r = c.get("/admin/models", headers={"authorization": f"Bearer {admin}"})
    assert r.status_code == 200 and r.json() == {"live": "base", "versions": []}
    r = c.post("/admin/models/v9/promote", headers={"authorization": f"Bearer {admin}"})
    err = assert_openai_error(r, 404, "version_not_found")
    assert "v9" in err["message"]


def test_open_gateway_has_no_admin_routes(tmp_path):
    with make_client(tmp_path) as c:
        assert c.get("/readyz").json()["auth"] == "open"
        err = assert_openai_error(c.get("/admin/models", headers={"authorization": "Bearer x"}), 403)
        assert "tao keys add" in err["message"]
        assert_openai_error(chat(c, "anyone"), 503)  # open: any caller reaches the model


def test_key_added_while_running_works_within_a_second(tmp_path):
    add_key(tmp_path / "api_keys", "first")
    with make_client(tmp_path) as c:
        later = add_key(tmp_path / "api_keys", "later")
        time.sleep(1.1)
        assert_openai_error(chat(c, later), 503)


def test_key_hashes_from_settings(tmp_path):
    with make_client(tmp_path, api_key_hashes=hash_key("k1"), admin_key_hash=hash_key("root")) as c:
        assert_openai_error(chat(c, "k2"), 401)
        assert_openai_error(chat(c, "k1"), 503)
        assert c.get("/admin/models", headers={"authorization": "Bearer root"}).status_code == 200


def test_bad_key_hash_setting_says_how_to_make_one():
    with pytest.raises(ValueError, match="tao keys hash"):
        GatewaySettings(api_key_hashes="not-a-hash")


def test_rate_limit_per_key_is_429_with_retry_after(tmp_path):
    with make_client(tmp_path, rate_limit="2/minute") as c:
        for _ in range(2):
            assert_openai_error(chat(c, "alice"), 503)
        r = chat(c, "alice")
        err = assert_openai_error(r, 429, "rate_limit_exceeded")
        assert "2 per 1 minute" in err["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert_openai_error(chat(c, "bob"), 503)  # another key has its own budget
        no_events(c)
        assert rejected(c, "rate_limited") == 1


def test_body_too_large_is_413(tmp_path):
    with make_client(tmp_path, max_body_bytes=2048) as c:
        big = [{"role": "user", "content": "x" * 4000}]
        err = assert_openai_error(c.post("/v1/chat/completions", json={"model": "tao", "messages": big}), 413)
        assert "2048" in err["message"]

        def chunks():  # no content-length: the body arrives chunked
            yield b'{"model": "tao", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = c.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert_openai_error(r, 413, "request_too_large")

        def small():
            yield b'{"model": "tao", "messages": [{"role": "user", '
            yield b'"content": "hi"}]}'

        r = c.post("/v1/chat/completions", content=small(), headers={"content-type": "application/json"})
        assert_openai_error(r, 503)  # a small chunked body is read whole and passed on
        no_events(c)


def test_prompt_too_long_says_the_limit(tmp_path):
    with make_client(tmp_path, max_prompt_tokens=50) as c:
        assert c.app.state.chat.limits.counter._tok is not None, "counts with the base model's tokenizer"
        long = [{"role": "user", "content": "the cat sat on the mat " * 20}]
        r = c.post("/v1/chat/completions", json={"model": "tao", "messages": long})
        err = assert_openai_error(r, 400, "context_length_exceeded", "messages")
        assert "at most 50" in err["message"] and "TAO_MAX_PROMPT_TOKENS" in err["message"]
        assert_openai_error(chat(c), 503)  # a short one passes
        no_events(c)


@pytest.mark.parametrize("param,value,limit", [("n", 9, "TAO_MAX_N"), ("n", 0, "TAO_MAX_N"),
                                               ("max_tokens", 5000, "TAO_MAX_TOKENS_LIMIT"),
                                               ("max_completion_tokens", 0, "TAO_MAX_TOKENS_LIMIT"),
                                               ("max_tokens", "10", "TAO_MAX_TOKENS_LIMIT")])
def test_n_and_max_tokens_limits(tmp_path, param, value, limit):
    with make_client(tmp_path) as c:
        err = assert_openai_error(chat(c, **{param: value}), 400, "invalid_value", param)
        assert limit in err["message"]
        no_events(c)


def test_keyring_keeps_old_keys_when_the_file_turns_unreadable(tmp_path):
    path = tmp_path / "keys"
    key = add_key(path, "alice")
    ring = KeyRing(path)
    path.write_text("garbage line here and more\n")
    ring._checked = 0  # skip the once-a-second throttle
    assert ring.lookup(key).name == "alice"


def test_metrics_count_events_and_show_the_live_version(tmp_path):
    with make_client(tmp_path) as c:
        text = c.get("/metrics").text
        assert 'tao_model_version_info{version="base"} 1.0' in text
        assert 'tao_events_total{state="queued"} 0.0' in text
        assert "tao_request_latency_seconds_bucket" in text or "tao_request_latency_seconds" in text
        assert_openai_error(chat(c), 503)
        text = c.get("/metrics").text
        assert 'tao_request_latency_seconds_count{status="503",stream="false"} 1.0' in text
