import json
import uuid

import pytest
from pydantic import ValidationError

from schemas.events import (
    SCHEMA_VERSION, ChatCompleted, ChatCompletedPayload, FeedbackSubmitted, FeedbackSubmittedPayload,
    ModelPromoted, ModelPromotedPayload, UnknownSchemaVersion, json_schemas, parse_event,
)
from schemas.ddl import ddl


def chat_event(**kw) -> ChatCompleted:
    return ChatCompleted(payload=ChatCompletedPayload(
        completion_id="chatcmpl-x", model_version="base", messages=[{"role": "user", "content": "hi"}],
        choices=[{"index": 0, "text": "hello", "finish_reason": "stop"}], latency_ms=12.5, **kw))


def test_roundtrip_every_type():
    events = [
        chat_event(task="extract"),
        FeedbackSubmitted(payload=FeedbackSubmittedPayload(feedback_id="f1", completion_id="c", kind="rating",
                                                           value=4)),
        ModelPromoted(payload=ModelPromotedPayload(version="v1", artifact_path="/m/v1", parent="base")),
    ]
    for ev in events:
        back = parse_event(ev.to_bytes())
        assert type(back) is type(ev)
        assert back == ev
        assert back.schema_version == SCHEMA_VERSION
        uuid.UUID(back.event_id)


def test_unknown_type_and_missing_fields_are_refused():
    raw = json.loads(chat_event().to_bytes())
    with pytest.raises(ValidationError):
        parse_event({**raw, "type": "Nope"})
    del raw["payload"]["messages"]
    with pytest.raises(ValidationError, match="messages"):
        parse_event(raw)


def test_newer_schema_version_is_refused_with_upgrade_hint():
    raw = json.loads(chat_event().to_bytes())
    raw["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises((ValidationError, UnknownSchemaVersion), match="upgrade"):
        parse_event(raw)


def test_extra_fields_are_errors_on_the_wire():
    raw = json.loads(chat_event().to_bytes())
    raw["payload"]["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        parse_event(raw)


@pytest.mark.parametrize("kind,value,ok", [
    ("thumbs", "up", True), ("thumbs", "sideways", False), ("rating", 5, True), ("rating", 0, False),
    ("rating", float("nan"), False), ("rating", True, False), ("correction", "better", True),
    ("correction", "  ", False), ("preferred", 1, True), ("preferred", -1, False), ("comment", "nice", True),
    # finite numbers only, and a choice index within the bound schemas/events.py sets
    ("rating", float("inf"), False), ("rating", 4.5, True), ("preferred", 127, True), ("preferred", 128, False),
    ("preferred", 3_000_000_000, False), ("comment", float("nan"), False),
])
def test_feedback_values_are_checked_per_kind(kind, value, ok):
    make = lambda: FeedbackSubmittedPayload(feedback_id="f", completion_id="c", kind=kind, value=value)
    if ok:
        assert make().value == value
    else:
        with pytest.raises(ValidationError, match="value"):
            make()


def test_json_schema_of_every_event_and_ddl_applies(tmp_path):
    import duckdb

    schemas = json_schemas()
    assert set(schemas) == {"ChatCompleted", "FeedbackSubmitted", "ModelPromoted", "ModelRolledBack"}
    assert "payload" in schemas["ChatCompleted"]["properties"]
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    con.execute(ddl())
    con.execute(ddl())  # idempotent
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"completions", "feedback", "model_events", "consumer_offsets", "cycles"} <= tables


def test_version_1_events_are_still_read():
    from schemas.events import ModelPromoted, parse_event

    ev = ModelPromoted(payload={"version": "v1", "artifact_path": "/m/v1"})
    raw = json.loads(ev.to_bytes())
    raw["schema_version"] = 1
    del raw["payload"]["adapter_path"]
    assert parse_event(json.dumps(raw).encode()).payload.version == "v1"


def test_version_2_completions_without_tool_calls_are_still_read():
    raw = json.loads(chat_event().to_bytes())
    raw["schema_version"] = 2
    del raw["payload"]["choices"][0]["tool_calls"]
    back = parse_event(json.dumps(raw).encode())
    assert back.schema_version == 2 and back.payload.choices[0].tool_calls == []


def test_tool_calls_round_trip_and_are_bounded():
    call = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Lima"'}  # invalid JSON is kept as written
    ev = ChatCompleted(payload=ChatCompletedPayload(
        completion_id="chatcmpl-x", model_version="base", messages=[{"role": "user", "content": "weather?"}],
        choices=[{"index": 0, "text": "", "finish_reason": "tool_calls", "tool_calls": [call]}], latency_ms=1.0))
    back = parse_event(ev.to_bytes())
    assert back.payload.choices[0].tool_calls[0].model_dump() == call
    from schemas.events import MAX_TOOL_CALLS, MAX_TOOL_NAME_CHARS, Choice

    with pytest.raises(ValidationError, match="name"):
        Choice(index=0, text="", tool_calls=[{"name": "x" * (MAX_TOOL_NAME_CHARS + 1)}])
    with pytest.raises(ValidationError, match="tool_calls"):
        Choice(index=0, text="", tool_calls=[{"name": "f"}] * (MAX_TOOL_CALLS + 1))


# Every value that passes validation must also be storable (INTEGER columns are int32) and
# sendable (JSON has no NaN/inf: pydantic would write null, and the event fail on the
# collector). Each case: (event field, a value just inside, a value just outside).
INT32 = 2**31 - 1


def _chat(**payload):
    base = json.loads(chat_event().to_bytes())
    for k, v in payload.items():
        if k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            base["payload"].setdefault("usage", {})[k] = v
        elif k == "choice":
            base["payload"]["choices"][0]["index"] = v
        else:
            base["payload"][k] = v
    return base


def _feedback(**payload):
    base = json.loads(FeedbackSubmitted(payload=FeedbackSubmittedPayload(
        feedback_id="f", completion_id="c", kind="comment", value="fine")).to_bytes())
    base["payload"].update(payload)
    return base


@pytest.mark.parametrize("make,field,inside,outside", [
    (_chat, "prompt_tokens", INT32, INT32 + 1), (_chat, "prompt_tokens", 0, -1),
    (_chat, "completion_tokens", INT32, INT32 + 1), (_chat, "completion_tokens", 0, -1),
    (_chat, "total_tokens", INT32, 2**63), (_chat, "total_tokens", 0, -1),
    (_chat, "choice", 127, 128), (_chat, "choice", 0, -1),
    (_chat, "latency_ms", 0.0, -0.001), (_chat, "latency_ms", 1e300, float("inf")),
    (_chat, "latency_ms", 1e300, float("nan")),
    (_chat, "completion_id", "c" * 256, "c" * 257), (_chat, "task", "t" * 512, "t" * 513),
    (_feedback, "choice_index", 127, 128), (_feedback, "choice_index", 127, 3_000_000_000),
    (_feedback, "choice_index", 0, -1),
    (_feedback, "feedback_id", "f" * 256, "f" * 257), (_feedback, "feedback_id", "f", ""),
    (_feedback, "completion_id", "c" * 256, "c" * 257),
    (_feedback, "value", "v" * 100_000, "v" * 100_001), (_feedback, "value", "ok \x00 \u200f \uffff 😀 e\u0301",
                                                          "lone \ud800 surrogate"),
])
def test_numbers_and_lengths_are_bounded(make, field, inside, outside):
    assert parse_event(make(**{field: inside}))
    with pytest.raises(ValidationError) as e:
        parse_event(make(**{field: outside}))
    loc = {"choice": "index"}.get(field, field)
    assert any(loc in map(str, err["loc"]) for err in e.value.errors()), e.value.errors()


def test_the_tenant_is_bounded():
    raw = json.loads(chat_event().to_bytes())
    assert parse_event({**raw, "tenant": "t" * 256})
    with pytest.raises(ValidationError, match="tenant"):
        parse_event({**raw, "tenant": "t" * 257})


def test_a_valid_event_survives_json_and_fits_its_columns():
    # The largest values the schema allows come back from the wire unchanged.
    ev = parse_event(_chat(prompt_tokens=INT32, completion_tokens=INT32, total_tokens=INT32, choice=127,
                           latency_ms=1e300))
    assert parse_event(ev.to_bytes()) == ev
