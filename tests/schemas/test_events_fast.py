"""The compiled mirror (schemas/events_fast.py) keeps pydantic's verdict and values.

Two claims, checked on every record the schema and collector tests use and on records
hypothesis writes (valid events, then mutated: wrong types, values at and past each bound,
missing and unknown keys, odd timestamps and ids, text-level damage):
1. `parse_event_fast` accepts exactly what `parse_event` accepts and raises what it raises;
2. where msgspec itself accepts (the fast path), pydantic accepts too and reads the same
   value, of the same type, into every field.
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.events import (
    INT32_MAX, MAX_CHOICES, MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TOOL_CALLS, MAX_TOOL_NAME_CHARS, SCHEMA_VERSION,
    FeedbackSubmitted, FeedbackSubmittedPayload, ModelPromoted, ModelPromotedPayload, ModelRolledBack,
    ModelRolledBackPayload, UnknownSchemaVersion, parse_event,
)
from schemas.events_fast import decode_fast, parse_event_fast
from tests.schemas import test_events as schema_tests


def verdict(parse, raw: str):
    """(True, event) or (False, the exception's type)."""
    try:
        return True, parse(raw)
    except (ValidationError, UnknownSchemaVersion, ValueError) as e:
        return False, type(e)


def same_values(fast, model, where: str = "event") -> None:
    """Every field pydantic declares has the same value (and type) in the msgspec struct."""
    if isinstance(model, BaseModel):
        assert isinstance(fast, msgspec.Struct), where
        for name in type(model).model_fields:
            same_values(getattr(fast, name), getattr(model, name), f"{where}.{name}")
    elif isinstance(model, (list, dict)):
        assert type(fast) is type(model) and len(fast) == len(model), where
        keys = model.keys() if isinstance(model, dict) else range(len(model))
        for k in keys:
            same_values(fast[k], model[k], f"{where}[{k!r}]")
    elif isinstance(model, datetime):
        assert isinstance(fast, datetime) and fast == model and fast.utcoffset() == model.utcoffset(), where
        assert (fast.tzinfo is None) == (model.tzinfo is None), where
    elif isinstance(model, float):
        assert type(fast) is float and (repr(fast) == repr(model) or math.isnan(fast) and math.isnan(model)), where
    else:
        assert type(fast) is type(model) and fast == model, (where, fast, model)


def check(raw: str) -> bool:
    """Both claims for one record; True where msgspec itself accepted it."""
    ok, got = verdict(parse_event, raw)
    fast_ok, fast_got = verdict(parse_event_fast, raw)
    assert fast_ok == ok, (raw[:500], got, fast_got)
    if not ok:
        assert fast_got is got  # the same exception type: the collector's dead-letter reason
        assert decode_fast(raw) is None, f"msgspec accepted what pydantic refuses: {raw[:500]}"
        return False
    fast = decode_fast(raw)
    if fast is None:
        return False
    same_values(fast, got)
    assert fast.type == got.type
    return True


# -- every record the existing tests use ------------------------------------------------

def _params(test) -> list[tuple]:
    return [tuple(p) for mark in test.pytestmark if mark.name == "parametrize" for p in mark.args[1]]


def _dumps(d: dict) -> str:
    return json.dumps(d)


def corpus() -> list[str]:
    from tests.bench.collector import completion, feedback
    from tests.feedback.test_collector import POISON_KINDS, chat, poison, thumbs

    chat_event = schema_tests.chat_event
    base = json.loads(chat_event().to_bytes())
    out = [chat_event(task="extract").to_bytes().decode(),
           FeedbackSubmitted(payload=FeedbackSubmittedPayload(feedback_id="f1", completion_id="c", kind="rating",
                                                              value=4)).to_bytes().decode(),
           ModelPromoted(payload=ModelPromotedPayload(version="v1", artifact_path="/m/v1",
                                                      parent="base")).to_bytes().decode(),
           ModelRolledBack(payload=ModelRolledBackPayload(version="v1", artifact_path="/m/v1",
                                                          rolled_back_from="v2", reason="thumbs")).to_bytes().decode(),
           _dumps({**base, "type": "Nope"}), _dumps({**base, "schema_version": SCHEMA_VERSION + 1}),
           _dumps({**base, "schema_version": 0}), _dumps({**base, "surprise": 1})]
    no_messages = json.loads(chat_event().to_bytes())
    del no_messages["payload"]["messages"]
    extra = json.loads(chat_event().to_bytes())
    extra["payload"]["surprise"] = 1
    out += [_dumps(no_messages), _dumps(extra)]
    for kind, value, _ in _params(schema_tests.test_feedback_values_are_checked_per_kind):
        out.append(_dumps(schema_tests._feedback(kind=kind, value=value)))
    v1 = json.loads(ModelPromoted(payload={"version": "v1", "artifact_path": "/m/v1"}).to_bytes())
    v1["schema_version"] = 1
    del v1["payload"]["adapter_path"]
    v2 = json.loads(chat_event().to_bytes())
    v2["schema_version"] = 2
    del v2["payload"]["choices"][0]["tool_calls"]
    out += [_dumps(v1), _dumps(v2)]
    call = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Lima"'}
    for calls in ([call], [{"name": "x" * MAX_TOOL_NAME_CHARS}], [{"name": "x" * (MAX_TOOL_NAME_CHARS + 1)}],
                  [{"name": "f"}] * MAX_TOOL_CALLS, [{"name": "f"}] * (MAX_TOOL_CALLS + 1)):
        ev = json.loads(chat_event().to_bytes())
        ev["payload"]["choices"][0]["tool_calls"] = calls
        out.append(_dumps(ev))
    for make, field, inside, outside in _params(schema_tests.test_numbers_and_lengths_are_bounded):
        out += [_dumps(make(**{field: inside})), _dumps(make(**{field: outside}))]
    out += [_dumps({**base, "tenant": "t" * 256}), _dumps({**base, "tenant": "t" * 257}),
            _dumps(schema_tests._chat(prompt_tokens=INT32_MAX, completion_tokens=INT32_MAX,
                                      total_tokens=INT32_MAX, choice=127, latency_ms=1e300))]
    # The collector's own test records: good traffic, the four kinds of poison, issue 13's.
    out += [chat(i).to_bytes().decode() for i in range(3)] + [thumbs("cmpl-x").to_bytes().decode()]
    out += [poison(kind, i).decode("utf-8", "replace") for kind in POISON_KINDS for i in range(10)]
    bad = json.loads(thumbs("cmpl-x").to_bytes())
    bad["payload"]["choice_index"] = 3_000_000_000
    out.append(_dumps(bad))
    # The benchmark's events.
    out += [completion(i).to_bytes().decode() for i in range(3)]
    out += [feedback("cmpl-x", i).to_bytes().decode() for i in range(3)]
    return out


def test_every_record_of_the_tests_gets_pydantics_verdict_and_values():
    records = corpus()
    fast = sum(check(raw) for raw in records)
    accepted = sum(verdict(parse_event, raw)[0] for raw in records)
    assert accepted >= 40 and fast == accepted  # each valid record of the tests takes the fast way


def test_events_as_the_gateway_writes_them_take_the_fast_way():
    from tests.bench.collector import completion, feedback

    for ev in (completion(1), feedback("cmpl-x", 0), feedback("cmpl-x", 1), feedback("cmpl-x", 2)):
        got = parse_event_fast(ev.to_bytes().decode())
        assert isinstance(got, msgspec.Struct) and got.event_id == ev.event_id
        assert parse_event_fast(ev.to_bytes()).event_id == ev.event_id  # bytes too


@pytest.mark.parametrize("raw", [
    # Python's $ matches before a final newline, pydantic's (Rust) pattern does not.
    '"event_id": "%s\\n"' % uuid.uuid4(),
    # More than microseconds: msgspec rounds, pydantic truncates; only pydantic reads these.
    '"occurred_at": "2025-01-02T03:04:05.9999999Z"', '"occurred_at": "2025-01-02T03:04:05.1234567+01:00"',
    # What only pydantic's lax mode takes (it decides, and accepts).
    '"occurred_at": 1700000000', '"occurred_at": "2025-01-02"', '"occurred_at": "2025-01-02T03:04:05,5Z"',
    '"schema_version": "3"', '"schema_version": 3.0', '"tenant": "t", "tenant": "u"',
    '"occurred_at": "2025-02-30T00:00:00Z"', '"event_id": "%s"' % str(uuid.uuid4()).replace("-", ""),
])
def test_envelope_edge_cases(raw):
    ev = json.loads(schema_tests.chat_event().to_bytes())
    key = raw.split('"')[1]
    del ev[key]
    check("{" + raw + ", " + json.dumps(ev)[1:])


@pytest.mark.parametrize("payload", [
    {"latency_ms": 1e400}, {"latency_ms": -0.0}, {"latency_ms": 5}, {"latency_ms": 10**400}, {"stream": 1},
    {"usage": {"prompt_tokens": 1.0}}, {"usage": {"prompt_tokens": "1"}}, {"usage": None}, {"params": None},
    {"task": None}, {"messages": [{"role": "user", "content": {"deep": [1, [2, [3]]]}, "name": "x", "tool_calls": []}]},
    {"messages": [{"content": "no role"}]}, {"messages": [{"role": 1}]}, {"choices": []},
])
def test_payload_edge_cases(payload):
    ev = json.loads(schema_tests.chat_event().to_bytes())
    ev["payload"].update(payload)
    check(json.dumps(ev))


def test_lone_surrogates_and_deep_nesting_are_pydantics_to_refuse():
    ev = schema_tests._feedback(kind="comment", value="x")
    for escaped in ('"lone \\ud800 surrogate"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud83d\\ude00 pair"'):
        check(json.dumps(ev).replace('"x"', escaped))
    for depth in (50, 127, 128, 200, 201, 300, 2000):
        deep = json.loads(schema_tests.chat_event().to_bytes())
        deep["payload"]["params"] = {"x": "DEEP"}
        check(json.dumps(deep).replace('"DEEP"', "[" * depth + "]" * depth))


# -- property-based: random events (mostly valid, each field sometimes not), then damage ------

ODD = ["\x00", "\u200f\u202e", "\uffff", "😀", "e\u0301", "\u2028", "\U0010ffff", "\\", '"', "\n"]
TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=20), st.sampled_from(ODD))
INTS = st.one_of(st.integers(-3, 6), st.sampled_from([MAX_CHOICES - 1, MAX_CHOICES, INT32_MAX, INT32_MAX + 1,
                                                      2**63, -(2**63) - 1, 10**30]))
FLOATS = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, -0.0, 1.0, 4.5, 5.0, 5.000001, 1e308, 1.7976931348623157e308]))
JSON_SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT,
                         st.sampled_from(["5", "true", "up", "2025-01-02", "weights", "lora", "thumbs", ""]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)


def mostly(valid, invalid=JSON_SCALARS):
    """A valid value 19 times in 20, so that about half the events are valid throughout and
    the rest have one or two bad fields. (Not one_of(valid, valid, ..., invalid): hypothesis
    merges equal branches.)"""
    return st.sampled_from([True] * 19 + [False]).flatmap(lambda ok: valid if ok else invalid)


def bounded(limit: int, min_size: int = 0):
    """Text up to a length bound (short, or exactly at it), sometimes one past it."""
    at = lambda n: st.sampled_from(["x", "😀", "\u0301"]).map(lambda c: c * n)  # noqa: E731
    return mostly(st.one_of(TEXT.filter(lambda t: len(t) >= min_size), at(limit)), at(limit + 1))


def timestamps():
    def fmt(args):
        dt, sep, digits, zone = args
        base = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{sep}{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        frac = f"{dt.microsecond:06d}{dt.microsecond % 1000:03d}"[:digits]
        return base + ("." + frac if digits else "") + zone
    zones = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-0800", "+23:59", ""])
    return mostly(st.tuples(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
                            st.sampled_from(["T", "t", " "]), st.integers(0, 9), zones).map(fmt),
                  st.one_of(JSON_SCALARS, st.sampled_from(["2025-01-02T03:04:05+24:00", "2025-01-02_03:04:05Z",
                                                           "2025-01-02T03:04:05+01", "2025-02-29T00:00:00Z"])))


def event_ids():
    return mostly(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())),
                  st.one_of(st.uuids().map(lambda u: str(u) + "\n"), st.uuids().map(lambda u: u.hex), TEXT))


def feedback_values(kind: str):
    valid = {"thumbs": st.sampled_from(["up", "down"]), "rating": st.one_of(st.integers(1, 5), st.floats(1, 5)),
             "preferred": st.integers(0, MAX_CHOICES - 1), "other": st.nothing()}.get(kind, bounded(MAX_TEXT_CHARS, 1))
    return mostly(valid, st.one_of(JSON_SCALARS, st.sampled_from([" ", True, 0, 6, 5.5, MAX_CHOICES, "x" * 100_001])))


def payloads(kind: str):
    opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
    index, count = mostly(st.integers(0, MAX_CHOICES - 1), INTS), mostly(st.integers(0, INT32_MAX), INTS)
    if kind == "ChatCompleted":
        tool_call = st.fixed_dictionaries({"name": bounded(MAX_TOOL_NAME_CHARS)},
                                          optional={"id": opt(bounded(MAX_ID_CHARS)), "arguments": mostly(TEXT)})
        choice = st.fixed_dictionaries({"index": index, "text": mostly(TEXT)}, optional={
            "finish_reason": opt(TEXT), "tool_calls": st.lists(tool_call, max_size=3)})
        message = st.fixed_dictionaries({"role": mostly(TEXT)}, optional={"content": JSON_VALUES, "name": TEXT})
        return st.fixed_dictionaries(
            {"completion_id": bounded(MAX_ID_CHARS), "model_version": mostly(TEXT),
             "messages": st.lists(message, max_size=3), "choices": st.lists(choice, max_size=3),
             "latency_ms": mostly(st.one_of(st.floats(0, allow_infinity=False), st.integers(0)), FLOATS)},
            optional={"params": st.dictionaries(TEXT, JSON_VALUES, max_size=3), "stream": mostly(st.booleans()),
                      "task": opt(bounded(512)),
                      "usage": st.fixed_dictionaries({}, optional={k: count for k in
                                                                   ("prompt_tokens", "completion_tokens",
                                                                    "total_tokens")})})
    if kind == "FeedbackSubmitted":
        return st.sampled_from(["thumbs", "rating", "correction", "preferred", "comment", "other"]).flatmap(
            lambda k: st.fixed_dictionaries(
                {"feedback_id": bounded(MAX_ID_CHARS, 1), "completion_id": bounded(MAX_ID_CHARS), "kind": st.just(k),
                 "value": feedback_values(k)}, optional={"choice_index": index}))
    fields = {"version": mostly(TEXT), "artifact_path": mostly(TEXT)}
    optional = {"swap_mode": mostly(st.sampled_from(["weights", "lora"])), "adapter_path": opt(TEXT)}
    if kind == "ModelPromoted":
        optional |= {"parent": opt(TEXT), "cycle_id": opt(TEXT),
                     "metrics": st.dictionaries(TEXT, mostly(st.one_of(FLOATS, INTS)), max_size=3)}
    else:
        fields |= {"rolled_back_from": mostly(TEXT)}
        optional |= {"reason": mostly(TEXT)}
    return st.fixed_dictionaries(fields, optional=optional)


def events():
    kind = st.sampled_from(["ChatCompleted", "FeedbackSubmitted", "ModelPromoted", "ModelRolledBack"])
    return kind.flatmap(lambda k: st.fixed_dictionaries(
        {"event_id": event_ids(), "occurred_at": timestamps(), "type": st.just(k), "payload": payloads(k)},
        optional={"schema_version": mostly(st.integers(1, SCHEMA_VERSION), st.sampled_from([0, 4, 1.0, "3"])),
                  "tenant": bounded(MAX_ID_CHARS)}))


def _slots(node, out: list) -> list:
    """Every (container, key) of a JSON tree: where damage can be done."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((node, k))
        _slots(v, out)
    return out


@settings(max_examples=2000, deadline=None, database=None, print_blob=True,
          suppress_health_check=list(HealthCheck))
@given(ev=events(), data=st.data())
def test_random_events_get_pydantics_verdict_and_values(ev, data):
    # Half of the events as generated, the others damaged once or twice.
    for _ in range(data.draw(st.sampled_from([0, 0, 1, 2]), label="damage")):
        slots = _slots(ev, [])
        if not slots:
            break
        node, key = data.draw(st.sampled_from(slots), label="where")
        how = data.draw(st.sampled_from(["replace", "delete", "add"]), label="how")
        if how == "replace":
            node[key] = data.draw(JSON_VALUES, label="value")
        elif how == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[data.draw(st.sampled_from(["surprise", "type", "role", "extra"]), label="new key")] = \
                data.draw(JSON_VALUES, label="new value")
    raw = json.dumps(ev, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    raw = data.draw(mostly(st.just(raw), st.sampled_from([raw + "\n", " " + raw, raw[:-1], raw + "x", "\ufeff" + raw])),
                    label="text")
    check(raw)
