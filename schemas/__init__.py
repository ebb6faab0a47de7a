"""Wire and event types of tao-loop, and the DuckDB DDL. Imports nothing of ours."""
from schemas.events import (
    ChatCompleted,
    ChatCompletedPayload,
    EventEnvelope,
    FeedbackKind,
    FeedbackSubmitted,
    FeedbackSubmittedPayload,
    ModelPromoted,
    ModelPromotedPayload,
    ModelRolledBack,
    ModelRolledBackPayload,
    EVENT_TYPES,
    SCHEMA_VERSION,
    TOPICS,
    parse_event,
)

__all__ = [
    "ChatCompleted", "ChatCompletedPayload", "EventEnvelope", "FeedbackKind",
    "FeedbackSubmitted", "FeedbackSubmittedPayload", "ModelPromoted", "ModelPromotedPayload",
    "ModelRolledBack", "ModelRolledBackPayload", "EVENT_TYPES", "SCHEMA_VERSION", "TOPICS",
    "parse_event",
]
