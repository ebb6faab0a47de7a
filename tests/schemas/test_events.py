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
