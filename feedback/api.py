"""Feedback submission API: `POST /v1/feedback`, mounted by the gateway.

Kinds: thumbs ("up"/"down"), rating (1-5), correction (better answer text), preferred
(index of the preferred choice), comment (text). The completion id must be one this
service issued to the same API key; otherwise 404, decided from the id's signature alone.
A feedback_id sent by the client makes a retry idempotent downstream (deduplicated by the
collector on event_id, which is derived from it).
"""
from __future__ import annotations

import uuid
from typing import Annotated, Union

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from feedback.errors import OpenAIError
from feedback.ids import tenant_of, verify_completion_id
from feedback.producer import EventProducer
from schemas.events import TOPICS, FeedbackKind, FeedbackSubmitted, FeedbackSubmittedPayload

_NS = uuid.UUID("6f1c3c1e-8a43-4b8e-9a55-3f1d2a0b7e10")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: str
    kind: FeedbackKind
    value: Union[StrictStr, StrictInt, StrictFloat] = Field(description='"up"/"down", 1-5, text, or a choice index')
    # Bounds (0 <= choice_index < MAX_CHOICES, text lengths, finite numbers) are the event
    # schema's, checked in submit(): one rule for what is accepted and what can be stored.
    choice_index: int = 0
    feedback_id: str | None = Field(None, max_length=128, description="client id making retries idempotent")


class FeedbackService:
    def __init__(self, producer: EventProducer, signing_key: bytes):
        self.producer = producer
        self.signing_key = signing_key

    def submit(self, req: FeedbackRequest, api_key: str | None) -> FeedbackSubmitted:
        tenant = tenant_of(api_key)
        try:
            known = verify_completion_id(self.signing_key, tenant, req.completion_id)
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in the JSON): no id of ours
            known = False
        if not known:
            raise OpenAIError(404, f"no completion {req.completion_id!r} for this API key", "completion_not_found",
                                "completion_id")
        feedback_id = req.feedback_id or str(uuid.uuid4())
        try:
            payload = FeedbackSubmittedPayload(
                feedback_id=feedback_id, completion_id=req.completion_id, kind=req.kind, value=req.value,
                choice_index=req.choice_index,
            )
        except ValidationError as e:
            err = e.errors()[0]
            # A field's own bound names the field; the kind/value check (a model validator,
            # no location) says "value: ..." itself.
            param = str(err["loc"][0]) if err.get("loc") else "value"
            msg = err["msg"].removeprefix("Value error, ")
            raise OpenAIError(422, msg if msg.startswith(f"{param}:") else f"{param}: {msg}", "invalid_value",
                                param) from e
        # Same feedback id from the same tenant -> same event id: a replay is a no-op in DuckDB.
        event = FeedbackSubmitted(
            event_id=str(uuid.uuid5(_NS, f"{tenant}:{feedback_id}")), tenant=tenant, payload=payload
        )
        self.producer.emit(TOPICS["feedback"], event)
        return event


router = APIRouter()


def bearer_value(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header value, or None."""
    auth = authorization or ""
    return (auth[7:].strip() or None) if auth.lower().startswith("bearer ") else None


def bearer_key(request: Request) -> str | None:
    """The API key of the request's `Authorization: Bearer KEY`, or None."""
    return bearer_value(request.headers.get("authorization"))


def feedback_service(request: Request) -> FeedbackService:
    """The app's FeedbackService (the gateway's lifespan puts it in app.state.feedback)."""
    return request.app.state.feedback


FeedbackDep = Annotated[FeedbackService, Depends(feedback_service)]


@router.post("/v1/feedback", status_code=202)
async def submit_feedback(req: FeedbackRequest, service: FeedbackDep, request: Request) -> dict:
    event = service.submit(req, bearer_key(request))
    return {"id": event.payload.feedback_id, "object": "feedback", "status": "accepted",
            "completion_id": event.payload.completion_id}
