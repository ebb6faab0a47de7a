"""Auth never fails open (issue 13): a gateway that had keys never turns open because its key
file went missing or empty; open mode is explicit and loopback only; the API docs follow the
same rule. Real app over HTTP (TestClient); no vLLM is needed: GET /v1/models and the docs
answer 200 without the model, so 200 vs 401 shows what the door decided."""
import logging
import time

import pytest
from pydantic import ValidationError

from feedback.auth import add_key
from serving.settings import GatewaySettings
from tests.serving.test_errors import assert_openai_error
from tests.serving.test_guard import make_client

REFUSING = "EVERY request gets 401"
DOCS = ("/docs", "/redoc", "/openapi.json")


def get(c, path, key=None):
    return c.get(path, headers={"authorization": f"Bearer {key}"} if key else {})


def past_the_throttle():
    time.sleep(1.1)  # the key file is looked at no more than once a second


@pytest.mark.parametrize("auth", ["keys", "open"])
@pytest.mark.parametrize("change", ["emptied", "only_comments", "deleted"])
def test_key_file_emptied_or_deleted_while_running_is_401_never_200(tmp_path, caplog, auth, change):
    path = tmp_path / "api_keys"
    key = add_key(path, "alice")
    with make_client(tmp_path, auth=auth) as c:
        assert get(c, "/v1/models", key).status_code == 200
        assert c.get("/readyz").json()["auth"] == "keys"  # a key was seen: keys, even when started open
        if change == "emptied":
            path.write_text("")
        elif change == "only_comments":
            path.write_text("# every key revoked\n\n   # nothing here\n")
        else:
            path.unlink()
        past_the_throttle()
        with caplog.at_level(logging.ERROR, logger="feedback.auth"):
            for _ in range(3):
                for k in (key, None, "anything"):
                    err = assert_openai_error(get(c, "/v1/models", k), 401, "invalid_api_key")
                    assert "tao keys add" in err["message"]
            for path_ in DOCS:
                assert get(c, path_, key).status_code == 401
        said = [r for r in caplog.records if REFUSING in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.ERROR, "one loud line per change, not per request"
        ready = c.get("/readyz").json()
        assert ready["auth"] == "keys" and ready["api_keys_configured"] is False
        # Keys come back: the gateway lets that key in again, still without a restart.
        again = add_key(path, "bob")
        past_the_throttle()
        assert get(c, "/v1/models", again).status_code == 200
        assert get(c, "/v1/models").status_code == 401


def test_by_default_a_gateway_without_keys_refuses_everyone(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="feedback.auth"):
        with make_client(tmp_path, auth=GatewaySettings.model_fields["auth"].default) as c:
            for k in (None, "anything"):
                err = assert_openai_error(get(c, "/v1/models", k), 401, "invalid_api_key")
                assert "no API key configured" in err["message"]
            assert_openai_error(c.post("/v1/chat/completions", json={"model": "tao", "messages": []}), 401)
            for path in DOCS:
                assert get(c, path).status_code == 401
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").json()["auth"] == "keys"
            key = add_key(tmp_path / "api_keys", "first")  # fixed without a restart
            past_the_throttle()
            assert get(c, "/v1/models", key).status_code == 200
    assert any(REFUSING in r.getMessage() and "TAO_AUTH=open" in r.getMessage() for r in caplog.records)


def test_open_mode_on_loopback_needs_no_key_until_the_first_key(tmp_path):
    with make_client(tmp_path, auth="open", host="127.0.0.1") as c:
        assert get(c, "/v1/models").status_code == 200
        for path in DOCS:
            assert get(c, path).status_code == 200
        ready = c.get("/readyz").json()
        assert ready["auth"] == "open" and ready["api_keys_configured"] is False
        key = add_key(tmp_path / "api_keys", "first")
        past_the_throttle()
        assert_openai_error(get(c, "/v1/models"), 401)  # the first key turns keys on
        assert get(c, "/v1/models", key).status_code == 200
        (tmp_path / "api_keys").unlink()
        past_the_throttle()
        assert_openai_error(get(c, "/v1/models"), 401)  # and deleting it does not open the door again
        assert_openai_error(get(c, "/v1/models", key), 401)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_open_mode_is_allowed_on_loopback(host):
    assert GatewaySettings(auth="open", host=host).auth == "open"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "gateway.example.com"])
def test_open_mode_off_loopback_refuses_to_start_and_says_what_to_set(host):
    with pytest.raises(ValidationError) as e:
        GatewaySettings(auth="open", host=host)
    msg = str(e.value)
    assert "TAO_AUTH=open" in msg and "loopback" in msg and "tao keys add" in msg
    assert GatewaySettings(host=host).auth == "keys"  # the default: keys


def test_docs_follow_the_api_rule(tmp_path):
    key = add_key(tmp_path / "api_keys", "alice")
    with make_client(tmp_path, auth="keys") as c:
        for path in DOCS:
            assert_openai_error(get(c, path), 401, "invalid_api_key")
            assert get(c, path, key).status_code == 200
        assert "/v1/chat/completions" in get(c, "/openapi.json", key).json()["paths"]
