"""Event types that travel on Kafka between the gateway, the collector and the trainer.

Every event is an envelope (`event_id`, `schema_version`, `type`, `occurred_at`, `tenant`)
around a typed payload. `type` is the discriminator; `parse_event` turns raw JSON bytes
into the right class and raises `pydantic.ValidationError` (or `UnknownSchemaVersion`)
with a message that says what is wrong.

Print the JSON Schema of every event with `tao schemas`.
"""
from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, TypeAdapter, field_validator, model_validator,
)

# 2: ModelPromoted / ModelRolledBack gained adapter_path (lora swap mode). A field is never
# added without a bump: an older reader, which refuses unknown fields, then says "upgrade"
# instead of reporting a stray field (measured: a gateway one commit old ignored a swap).
# Readers accept every version up to their own.
# 3: a ChatCompleted choice gained tool_calls (name, arguments), streaming included; tools,
# tool_choice and response_format were already kept in params.
SCHEMA_VERSION = 3

# Bounds on what an event may carry, so that whatever passes validation can also be stored
# (INTEGER columns are int32; DOUBLE takes no NaN/inf through JSON: pydantic writes them as
# null, which then fails validation on the collector) and sent (Kafka's default record limit
# is ~1 MB). They came after version 2 without a bump: a stricter bound on an existing field
# changes no meaning, it refuses values no reader could have stored (an old event outside
# them went to the dead-letter topic, or stalled the collector, anyway).
INT32_MAX = 2**31 - 1
MAX_CHOICES = 128          # choices per completion; the gateway's TAO_MAX_N must not exceed it
MAX_ID_CHARS = 256         # ids, tenant hashes, tags
MAX_TEXT_CHARS = 100_000   # feedback text: at 6 bytes a character (JSON \uXXXX) still ~600 kB
MAX_TOOL_CALLS = 64        # tool calls in one choice
MAX_TOOL_NAME_CHARS = 64   # OpenAI's own limit on a function name
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]  # token counts: INTEGER columns
ChoiceIndex = Annotated[int, Field(ge=0, lt=MAX_CHOICES)]

# One topic per kind of traffic; the collector reads the first two, every gateway the third.
TOPICS = {
    "completions": "tao.completions",
    "feedback": "tao.feedback",
    "control": "tao.control",
    "deadletter": "tao.deadletter",
}


class UnknownSchemaVersion(ValueError):
    """An event written by a newer tao-loop than this one: never guess its meaning."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


_UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class _Strict(BaseModel):
    # Unknown fields are errors on the wire: a typo must not silently drop data.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(BaseModel):
    # Messages are kept as sent (tool calls, names, content parts): extra keys allowed.
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None


def _encodable(v: str) -> str:
    # A lone surrogate (JSON "\\ud800" parses into one) cannot be written as UTF-8: the
    # event could not even be serialised for Kafka.
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (it contains a lone surrogate)") from None
    return v


class ToolCall(_Strict):
    """A function call the model made, as the client got it (`arguments` is the model's raw
    JSON text: invalid JSON is evidence too, so it is kept as written)."""
    id: str | None = Field(None, max_length=MAX_ID_CHARS)
    name: str = Field(max_length=MAX_TOOL_NAME_CHARS)
    arguments: str = Field("", max_length=MAX_TEXT_CHARS)


class Choice(_Strict):
    index: ChoiceIndex
    text: str
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)


class Usage(_Strict):
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    total_tokens: Count = 0


class ChatCompletedPayload(_Strict):
    completion_id: str = Field(max_length=MAX_ID_CHARS)
    model_version: str
    messages: list[ChatMessage]
    params: dict[str, Any] = Field(default_factory=dict, description="sampling parameters as requested")
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = Field(ge=0, allow_inf_nan=False)
    stream: bool = False
    task: str | None = Field(default=None, max_length=512, description="task tag from request metadata, if any")


class FeedbackKind(str, Enum):
    thumbs = "thumbs"          # value: "up" | "down"
    rating = "rating"          # value: 1..5
    correction = "correction"  # value: the better answer, as text
    preferred = "preferred"    # value: index of the preferred choice (of n)
    comment = "comment"        # value: free text


class FeedbackSubmittedPayload(_Strict):
    feedback_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    completion_id: str = Field(max_length=MAX_ID_CHARS)
    kind: FeedbackKind
    # Strict: JSON true must not become rating 1. A float is taken by rating alone, whose
    # 1..5 check refuses NaN and inf too (and says so in the words of its kind).
    value: Union[Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)], StrictInt, StrictFloat]
    choice_index: ChoiceIndex = 0

    @field_validator("feedback_id", "value")
    @classmethod
    def _text_encodable(cls, v):
        return _encodable(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _value_fits_kind(self) -> "FeedbackSubmittedPayload":
        check_feedback_value(self.kind, self.value)
        return self


def check_feedback_value(k: FeedbackKind, v: str | int | float) -> None:
    """Raise ValueError unless `v` is a value for feedback of kind `k`. One function for
    this model and its compiled mirror (schemas/events_fast.py), so the two cannot drift."""
    if k is FeedbackKind.thumbs and v not in ("up", "down"):
        raise ValueError('value: thumbs feedback takes "up" or "down"')
    if k is FeedbackKind.rating:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or not 1 <= v <= 5:
            raise ValueError("value: rating feedback takes a number from 1 to 5")
    if k in (FeedbackKind.correction, FeedbackKind.comment) and (not isinstance(v, str) or not v.strip()):
        raise ValueError(f"value: {k.value} feedback takes non-empty text")
    if k is FeedbackKind.preferred and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_CHOICES):
        raise ValueError(f"value: preferred feedback takes the index of a choice (integer from 0 to "
                         f"{MAX_CHOICES - 1})")


class ModelPromotedPayload(_Strict):
    version: str
    artifact_path: str = Field(description="directory with merged weights (config.json, *.safetensors)")
    swap_mode: Literal["weights", "lora"] = "weights"
    adapter_path: str | None = Field(None, description="LoRA adapter of this version against the base model "
                                     "(for gateways in lora mode); None: weights only")
    parent: str | None = None
    cycle_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class ModelRolledBackPayload(_Strict):
    version: str = Field(description="the version now live again")
    artifact_path: str
    swap_mode: Literal["weights", "lora"] = "weights"
    adapter_path: str | None = Field(None, description="LoRA adapter against the base (None: the base itself, "
                                     "or weights only)")
    rolled_back_from: str
    reason: str = ""


class EventEnvelope(_Strict):
    # A pattern, checked in pydantic-core: uuid.UUID() in a Python validator cost the
    # collector 9 us an event (a quarter of its validation time).
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()), pattern=_UUID_PATTERN,
                          description="a UUID, unique per event: the collector's deduplication key")
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime = Field(default_factory=_now)
    tenant: str = Field(default="anonymous", max_length=MAX_ID_CHARS, description="hash of the API key, never the key")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise UnknownSchemaVersion(
                f"schema_version {v} is newer than this build understands ({SCHEMA_VERSION}): upgrade tao-loop"
            )
        if v < 1:
            raise ValueError("schema_version must be >= 1")
        return v

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def key(self) -> bytes:
        """Kafka partition key: events about one completion stay in order on one partition."""
        p = getattr(self, "payload")
        return (getattr(p, "completion_id", None) or getattr(p, "version", None) or self.event_id).encode()


class ChatCompleted(EventEnvelope):
    type: Literal["ChatCompleted"] = "ChatCompleted"
    payload: ChatCompletedPayload


class FeedbackSubmitted(EventEnvelope):
    type: Literal["FeedbackSubmitted"] = "FeedbackSubmitted"
    payload: FeedbackSubmittedPayload


class ModelPromoted(EventEnvelope):
    type: Literal["ModelPromoted"] = "ModelPromoted"
    payload: ModelPromotedPayload


class ModelRolledBack(EventEnvelope):
    type: Literal["ModelRolledBack"] = "ModelRolledBack"
    payload: ModelRolledBackPayload


Event = Annotated[
    Union[ChatCompleted, FeedbackSubmitted, ModelPromoted, ModelRolledBack], Field(discriminator="type")
]
EVENT_TYPES: dict[str, type[EventEnvelope]] = {
    c.model_fields["type"].default: c for c in (ChatCompleted, FeedbackSubmitted, ModelPromoted, ModelRolledBack)
}
_adapter: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(raw: bytes | str | dict) -> EventEnvelope:
    """Validate one event from the wire. Raises ValidationError / UnknownSchemaVersion."""
    if isinstance(raw, dict):
        return _adapter.validate_python(raw)
    return _adapter.validate_json(raw)


def json_schemas() -> dict[str, dict]:
    """JSON Schema of every event type, keyed by type name."""
    return {name: cls.model_json_schema() for name, cls in EVENT_TYPES.items()}
