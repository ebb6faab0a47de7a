"""A compiled mirror of the event schema (msgspec), for the collector's hot path.

schemas/events.py (pydantic) stays the source of truth. `parse_event_fast(raw)` first decodes
with the msgspec structs below, which mirror the pydantic models but are never laxer: what
they accept, pydantic accepts too, with the same values in every field the store reads.
Anything they refuse goes to `parse_event`, whose verdict and error message are final. So
the verdict is always pydantic's; msgspec only makes the common case (an event as the gateway
writes it) fast (issue 18; measured on one 730-byte completion: 3.2 us against pydantic's 6.3,
and +40% collector throughput in tests/bench/results/collector.md).

Why a fallback rather than an exact mirror: pydantic validates JSON in lax mode, so it also
takes "5" or 5.0 for an int, 1 or "yes" for a bool, a unix time or "2025-01-02" for a
datetime, NaN for a metric, and fills a missing event_id or occurred_at with a fresh value.
Mirroring all of that by hand would be a second schema language to keep equal; refusing it
here and letting pydantic decide costs nothing on real traffic, which never looks like that.

Where msgspec would be LAXER than pydantic, the mirror is narrowed (each is a case in
tests/schemas/test_events_fast.py):
- a pattern ends in \\Z, not $: Python's $ also matches before a final newline, Rust's not;
- occurred_at is read as text of at most 6 fractional digits and then converted: with more,
  msgspec rounds to the microsecond and pydantic truncates (two different rows);
- latency_ms has an upper bound: pydantic refuses inf, and a msgspec float has no switch for
  that (its JSON decoder happens to refuse 1e400; the bound does not rely on it);
- documents nested deeper than pydantic's JSON parser allows (about 200 levels) are refused
  by pydantic, not by msgspec: events with more than MAX_BRACKETS brackets go to pydantic.
Lone surrogates (JSON "\\ud800", which the pydantic model refuses by a validator) are not
mirrored: both JSON decoders refuse them as malformed before any field is checked.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Union

import msgspec
from msgspec import Meta

from schemas.events import (
    INT32_MAX, MAX_CHOICES, MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TOOL_CALLS, MAX_TOOL_NAME_CHARS, SCHEMA_VERSION,
    EventEnvelope, FeedbackKind, check_feedback_value, parse_event,
)

# pydantic-core's JSON parser refuses 201 nested objects (and 202 nested arrays): measured
# with pydantic 2.14. The count of brackets bounds the depth from above (brackets inside
# strings count too, so some shallow events go the slow way), with a margin below it.
MAX_BRACKETS = 128

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
# RFC 3339 as both parsers read it alike: [0-9] rather than \d (which takes any Unicode
# digit), at most microseconds, offset optional (naive in both).
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:?[0-9]{2})?\Z"

Id = Annotated[str, Meta(max_length=MAX_ID_CHARS)]
Count = Annotated[int, Meta(ge=0, le=INT32_MAX)]
ChoiceIndex = Annotated[int, Meta(ge=0, lt=MAX_CHOICES)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]


# kw_only (set per class: msgspec does not inherit it): fields in the models' order, a
# required one after optional ones. gc=False: decoded events hold no reference cycles, and untracked structs allocate faster.
class _Strict(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    pass


class ChatMessage(msgspec.Struct, kw_only=True, gc=False):
    # Extra keys allowed, as in the model; the store takes messages from the raw JSON.
    role: str
    content: Any = None


class ToolCall(_Strict, kw_only=True):
    id: Id | None = None
    name: Annotated[str, Meta(max_length=MAX_TOOL_NAME_CHARS)]
    arguments: Text = ""


class Choice(_Strict, kw_only=True):
    index: ChoiceIndex
    text: str
    finish_reason: str | None = None
    tool_calls: Annotated[list[ToolCall], Meta(max_length=MAX_TOOL_CALLS)] = []


class Usage(_Strict, kw_only=True):
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    total_tokens: Count = 0


class ChatCompletedPayload(_Strict, kw_only=True):
    completion_id: Id
    model_version: str
    messages: list[ChatMessage]
    params: dict[str, Any] = {}
    choices: list[Choice]
    usage: Usage = msgspec.field(default_factory=Usage)
    latency_ms: Annotated[float, Meta(ge=0, le=1.7976931348623157e308)]  # finite, as allow_inf_nan=False
    stream: bool = False
    task: Annotated[str, Meta(max_length=512)] | None = None


class FeedbackSubmittedPayload(_Strict, kw_only=True):
    feedback_id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
    completion_id: Id
    kind: FeedbackKind
    value: Union[Text, int, float]  # strict, as StrictStr | StrictInt | StrictFloat: JSON true is none of them
    choice_index: ChoiceIndex = 0

    def __post_init__(self) -> None:
        check_feedback_value(self.kind, self.value)  # the model's own check, shared


class ModelPromotedPayload(_Strict, kw_only=True):
    version: str
    artifact_path: str
    swap_mode: Literal["weights", "lora"] = "weights"
    adapter_path: str | None = None
    parent: str | None = None
    cycle_id: str | None = None
    metrics: dict[str, float] = {}


class ModelRolledBackPayload(_Strict, kw_only=True):
    version: str
    artifact_path: str
    swap_mode: Literal["weights", "lora"] = "weights"
    adapter_path: str | None = None
    rolled_back_from: str
    reason: str = ""


class _Envelope(_Strict, tag_field="type", kw_only=True):
    # event_id and occurred_at are required here: pydantic fills them in with fresh values,
    # which no mirror can match, so such (hand-made) events take the pydantic way.
    event_id: Annotated[str, Meta(pattern=_UUID)]
    schema_version: Annotated[int, Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    # Decoded as checked text, then replaced by its datetime in __post_init__ (see the
    # module docstring: msgspec and pydantic read more than 6 fractional digits apart).
    occurred_at: Annotated[str, Meta(pattern=_TIMESTAMP)]
    tenant: Id = "anonymous"

    def __post_init__(self) -> None:
        self.occurred_at = msgspec.convert(self.occurred_at, datetime)  # type: ignore[assignment]


# `type` as an attribute, like the pydantic models' field (the tag itself is no attribute).
class ChatCompleted(_Envelope, tag="ChatCompleted", kw_only=True):
    type: ClassVar[str] = "ChatCompleted"
    payload: ChatCompletedPayload


class FeedbackSubmitted(_Envelope, tag="FeedbackSubmitted", kw_only=True):
    type: ClassVar[str] = "FeedbackSubmitted"
    payload: FeedbackSubmittedPayload


class ModelPromoted(_Envelope, tag="ModelPromoted", kw_only=True):
    type: ClassVar[str] = "ModelPromoted"
    payload: ModelPromotedPayload


class ModelRolledBack(_Envelope, tag="ModelRolledBack", kw_only=True):
    type: ClassVar[str] = "ModelRolledBack"
    payload: ModelRolledBackPayload


FastEvent = Union[ChatCompleted, FeedbackSubmitted, ModelPromoted, ModelRolledBack]
_decoder = msgspec.json.Decoder(FastEvent)


def parse_event_fast(raw: str | bytes) -> FastEvent | EventEnvelope:
    """Validate one event from the wire with pydantic's verdict, at msgspec's speed when it
    can: a msgspec struct (same attribute names as the model) or, for whatever msgspec
    refuses, pydantic's model. Raises what `parse_event` raises."""
    ev = decode_fast(raw)
    return parse_event(raw) if ev is None else ev


def decode_fast(raw: str | bytes) -> FastEvent | None:
    """The msgspec step alone: the event, or None where pydantic has to decide."""
    brackets = raw.count("{") + raw.count("[") if isinstance(raw, str) else raw.count(b"{") + raw.count(b"[")
    if brackets > MAX_BRACKETS:
        return None
    try:
        return _decoder.decode(raw)
    except Exception:  # refused (or msgspec failed on it in any other way)
        return None
