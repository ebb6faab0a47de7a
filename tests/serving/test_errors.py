"""Bad input gets an OpenAI-shaped error and logs no event. No vLLM is needed: every case
here is refused before the model is asked (or the model's server is deliberately absent)."""
import pytest
from fastapi.testclient import TestClient

from feedback.procs import free_port
from feedback.ids import new_completion_id, tenant_of
from serving.app import create_app
from serving.settings import GatewaySettings


@pytest.fixture
def client(tmp_path):
    # Nothing listens on these ports: Kafka is away (events would spill), vLLM is dead.
    settings = GatewaySettings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                               vllm_url=f"http://127.0.0.1:{free_port()}", signing_key="k" * 32, auth="open")
    with TestClient(create_app(settings)) as c:
        yield c


def assert_openai_error(r, status, code=None, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["message"]
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param
    return err


def no_events(c):
    assert c.app.state.producer.counters.as_dict()["queued"] == 0
    assert c.app.state.producer.counters.as_dict()["spilled"] == 0


def test_malformed_json_body(client):
    r = client.post("/v1/chat/completions", content=b'{"model": "tao", "messages": [', 
                    headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400, "invalid_json")
    assert "JSON" in err["message"]
    no_events(client)


def test_missing_messages(client):
    err = assert_openai_error(client.post("/v1/chat/completions", json={"model": "tao"}), 400, param="messages")
    assert "messages" in err["message"]
    assert_openai_error(client.post("/v1/chat/completions", json={"model": "tao", "messages": []}), 400,
                        param="messages")
    no_events(client)


def test_unknown_model(client):
    r = client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    err = assert_openai_error(r, 404, "model_not_found", "model")
    assert "gpt-9" in err["message"] and "'tao'" in err["message"]
    no_events(client)


def test_dead_model_server_answers_503_at_once(client):
    r = client.post("/v1/chat/completions", json={"model": "tao", "messages": [{"role": "user", "content": "x"}]})
    assert_openai_error(r, 503, "model_unavailable")
    assert "Retry-After" in r.headers
    no_events(client)


def test_an_engine_that_died_under_the_request_is_503_retry():
    from serving.chat import _passthrough_error
    from serving.errors import OpenAIError

    dead = (b'{"error":{"message":"EngineCore encountered an issue. See stack trace (above) for the root cause.",'
            b'"type":"InternalServerError","param":null,"code":500}}')
    with pytest.raises(OpenAIError) as e:
        _passthrough_error(500, dead)
    assert e.value.status == 503 and "retry" in e.value.message and e.value.headers["Retry-After"]
    other = _passthrough_error(400, b'{"error":{"message":"bad temperature","type":"BadRequestError","param":null,'
                                    b'"code":400}}')
    assert other.status_code == 400, "vLLM's own request errors pass through"


def test_models_lists_one_stable_name_with_version(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tao"]
    assert r.headers["x-tao-model-version"] == "base"


def test_feedback_on_unknown_or_foreign_completion_is_404(client):
    foreign = new_completion_id(b"k" * 32, tenant_of("someone-else"))
    for cid in ("chatcmpl-made-up", foreign):
        r = client.post("/v1/feedback", json={"completion_id": cid, "kind": "thumbs", "value": "up"},
                        headers={"authorization": "Bearer mine"})
        assert_openai_error(r, 404, "completion_not_found", "completion_id")
    no_events(client)


@pytest.mark.parametrize("kind,value,status", [("rating", 9, 422), ("thumbs", "maybe", 422), ("rating", True, 400),
                                                ("nonsense", 1, 400)])
def test_feedback_bad_values(client, kind, value, status):
    cid = new_completion_id(b"k" * 32, tenant_of("mine"))
    r = client.post("/v1/feedback", json={"completion_id": cid, "kind": kind, "value": value},
                    headers={"authorization": "Bearer mine"})
    assert_openai_error(r, status)
    no_events(client)


def test_good_feedback_is_accepted_and_queued(client):
    cid = new_completion_id(b"k" * 32, tenant_of("mine"))
    r = client.post("/v1/feedback", json={"completion_id": cid, "kind": "rating", "value": 5},
                    headers={"authorization": "Bearer mine"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted"
    c = client.app.state.producer.counters.as_dict()
    assert c["queued"] == 1


def test_only_a_bearer_header_carries_an_api_key(client):
    # "Basic bWluZQ==" must not be sliced like a bearer header (into "WluZQ=="): the caller is anonymous.
    cid = new_completion_id(b"k" * 32, tenant_of("WluZQ=="))
    r = client.post("/v1/feedback", json={"completion_id": cid, "kind": "thumbs", "value": "up"},
                    headers={"authorization": "Basic bWluZQ=="})
    assert_openai_error(r, 404, "completion_not_found")
    anon = new_completion_id(b"k" * 32, tenant_of(None))
    r = client.post("/v1/feedback", json={"completion_id": anon, "kind": "thumbs", "value": "up"},
                    headers={"authorization": "Basic bWluZQ=="})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("raw,message", [
    (b'{"completion_id": "CID", "kind": "rating", "value": NaN}', "rating"),
    (b'{"completion_id": "CID", "kind": "rating", "value": 0}', "1 to 5"),
    (b'{"completion_id": "CID", "kind": "preferred", "value": -1}', "index"),
    (b'{"completion_id": "CID", "kind": "correction", "value": "   "}', "non-empty"),
    (b'{"completion_id": "CID", "kind": "comment", "value": 3}', "non-empty"),
])
def test_feedback_value_errors_are_422_naming_the_field(client, raw, message):
    cid = new_completion_id(b"k" * 32, tenant_of("mine"))
    r = client.post("/v1/feedback", content=raw.replace(b"CID", cid.encode()),
                    headers={"authorization": "Bearer mine", "content-type": "application/json"})
    err = assert_openai_error(r, 422, "invalid_value", "value")
    assert message in err["message"]
    no_events(client)


def test_replayed_feedback_is_the_same_event(client):
    """A client retrying with its feedback_id sends the same event id: the collector stores
    it once (tests/feedback: deduplicated by event_id)."""
    import json
    import time

    cid = new_completion_id(b"k" * 32, tenant_of("mine"))
    body = {"completion_id": cid, "kind": "thumbs", "value": "up", "feedback_id": "retry-1"}
    for _ in range(2):
        r = client.post("/v1/feedback", json=body, headers={"authorization": "Bearer mine"})
        assert r.status_code == 202 and r.json()["id"] == "retry-1"
    journal = client.app.state.producer.journal.path
    deadline = time.monotonic() + 30
    while client.app.state.producer.counters.as_dict()["spilled"] < 2:  # Kafka is away: to the journal
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ids = [json.loads(json.loads(line)["value"])["event_id"] for line in journal.read_text().splitlines()]
    assert len(ids) == 2 and ids[0] == ids[1]
