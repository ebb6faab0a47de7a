"""POST /v1/feedback refuses, with a 422 naming the field, every value the event schema
would refuse downstream: what the API accepts, the collector can store (issue 13)."""
import json

import pytest
from fastapi.testclient import TestClient

from feedback.procs import free_port
from feedback.ids import new_completion_id, tenant_of
from serving.app import create_app
from serving.settings import GatewaySettings


@pytest.fixture
def client(tmp_path):
    # Kafka is away (accepted events spill to the journal), vLLM is not needed.
    settings = GatewaySettings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                               vllm_url=f"http://127.0.0.1:{free_port()}", signing_key="k" * 32, auth="open")
    with TestClient(create_app(settings)) as c:
        c.cid = new_completion_id(settings.signing_key_bytes(), tenant_of(None))
        yield c


def events(c) -> int:
    n = c.app.state.producer.counters.as_dict()
    return n["queued"] + n["spilled"]


def post(c, body: bytes | dict):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return c.post("/v1/feedback", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("field,value", [
    ("choice_index", 3_000_000_000), ("choice_index", 128), ("choice_index", -1), ("choice_index", 10**40),
    ("value", "x" * 100_001), ("feedback_id", "f" * 129),
])
def test_out_of_bounds_is_422_naming_the_field(client, field, value):
    body = {"completion_id": client.cid, "kind": "comment", "value": "ok", field: value}
    r = post(client, body)
    expected = 400 if field == "feedback_id" else 422  # the request model's own limit (400), as before
    assert r.status_code == expected, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"} and err["param"] == field
    assert field in err["message"] and err["type"] == "invalid_request_error"
    assert events(client) == 0


@pytest.mark.parametrize("raw", [
    b'{"completion_id": "%s", "kind": "rating", "value": NaN}',        # Python's json reads NaN and Infinity
    b'{"completion_id": "%s", "kind": "rating", "value": Infinity}',
    b'{"completion_id": "%s", "kind": "preferred", "value": 3000000000}',
    b'{"completion_id": "%s", "kind": "comment", "value": "lone \\ud800 surrogate"}',  # unencodable as UTF-8
])
def test_values_that_json_or_kafka_cannot_carry_are_422(client, raw):
    r = post(client, raw % client.cid.encode())
    assert r.status_code == 422 and r.json()["error"]["param"] == "value", r.text
    assert events(client) == 0


def test_the_bounds_themselves_are_accepted(client):
    for body in ({"kind": "comment", "value": "\x00\u200f\uffff😀e\u0301" * 1000, "choice_index": 127},
                 {"kind": "preferred", "value": 127}, {"kind": "rating", "value": 4.5}):
        r = post(client, {"completion_id": client.cid, **body})
        assert r.status_code == 202, r.text
    assert events(client) == 3


def test_a_lone_surrogate_completion_id_is_404_not_500(client):
    cid = "chatcmpl-tao-" + "\\ud800" * 24 + "a" * 20
    r = post(client, b'{"completion_id": "%s", "kind": "thumbs", "value": "up"}' % cid.encode())
    assert r.status_code == 404, r.text


def test_a_chat_task_tag_the_event_cannot_hold_is_refused_up_front(client):
    # The task tag (metadata.task) lands in ChatCompletedPayload.task (at most 512 characters):
    # accepted here, the answer's event could not be made after vLLM had answered (a 500).
    msg = [{"role": "user", "content": "x"}]
    r = client.post("/v1/chat/completions", json={"model": "tao", "messages": msg, "metadata": {"task": "t" * 513}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata.task", r.text
    assert events(client) == 0
