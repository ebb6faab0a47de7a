"""Stored traffic for the console's tests and benchmark: completions of every shape from a
few tenants and versions, spread over the last hours, with feedback, written through the
Store as the collector writes them (Store.write_batch)."""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from feedback.store import Store
from schemas.events import (ChatCompleted, ChatCompletedPayload, Choice, FeedbackSubmitted, FeedbackSubmittedPayload,
                           Usage)

TENANTS = ("acme", "globex", "initech")
VERSIONS = ("base", "v1", "v2")
# Sizes like real traffic's: a tool schema of ~1 KB and a system prompt of a few hundred
# characters, so the console's JSON parsing and text search are priced honestly.
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather and a short forecast for a city, in metric units.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Oslo or San Francisco"},
        "country": {"type": "string", "description": "ISO 3166-1 alpha-2 country code, if the city is ambiguous"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "description": "How many days of forecast"},
        "units": {"type": "string", "enum": ["metric", "imperial"], "description": "Units of the answer"}},
        "required": ["city"]}}}
SYSTEM = ("You are the assistant of an order desk. Answer briefly and precisely. When asked for JSON, answer "
          "with JSON only, no prose around it. Never invent values that are not in the conversation; say so "
          "when something is missing. Amounts are in the currency the customer used.")
SCHEMA = {"type": "json_schema", "json_schema": {"name": "order", "schema": {"type": "object", "properties": {
    "id": {"type": "string"}}}}}
# (params, task, the console's shape for them)
SHAPES = [({"tools": [TOOL]}, None, "tools: get_weather"), ({"response_format": SCHEMA}, None, "schema: order"),
          ({"response_format": {"type": "json_object"}}, None, "json"), ({}, "math", "task: math"),
          ({"temperature": 0.7}, None, "chat")]


@dataclass
class Filled:
    completions: list[ChatCompleted] = field(default_factory=list)
    feedback: list[FeedbackSubmitted] = field(default_factory=list)
    shape: dict[str, str] = field(default_factory=dict)  # completion_id -> expected shape


def fill(store: Store, n: int, *, minutes: float = 120, seed: int = 0, feedback_rate: float = 0.3,
         batch: int = 2000, now: datetime | None = None) -> Filled:
    rnd = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    out = Filled()
    pending: list = []

    def flush() -> None:
        if pending:
            store.write_batch([(e, e.to_bytes().decode()) for e in pending], {})
            pending.clear()

    for i in range(n):
        params, task, shape = rnd.choice(SHAPES)
        at = now - timedelta(minutes=rnd.uniform(0, minutes))
        cid = f"cmpl-{uuid.UUID(int=rnd.getrandbits(128)).hex}"
        tenant = rnd.choice(TENANTS)
        c = ChatCompleted(occurred_at=at, tenant=tenant, payload=ChatCompletedPayload(
            completion_id=cid, model_version=rnd.choice(VERSIONS), task=task, params=params,
            messages=[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": f"Question {i}: what is {i} + 1? my email is user{i}@example.com"}],
            choices=[Choice(index=0, text=f"The answer is {i + 1}.", finish_reason="stop")],
            latency_ms=round(rnd.lognormvariate(5, 0.6), 2),
            usage=Usage(prompt_tokens=(pt := rnd.randint(10, 200)), completion_tokens=(ct := rnd.randint(1, 128)),
                        total_tokens=pt + ct)))
        out.completions.append(c)
        out.shape[cid] = shape
        pending.append(c)
        if rnd.random() < feedback_rate:
            kind = rnd.choice(("thumbs", "thumbs", "rating", "correction"))
            value = {"thumbs": rnd.choice(("up", "down")), "rating": rnd.randint(1, 5),
                     "correction": f"It is {i + 1}."}[kind]
            f = FeedbackSubmitted(occurred_at=at + timedelta(seconds=5), tenant=rnd.choice(TENANTS),
                                  payload=FeedbackSubmittedPayload(feedback_id=uuid.UUID(int=rnd.getrandbits(128)).hex,
                                                                   completion_id=cid, kind=kind, value=value))
            out.feedback.append(f)
            pending.append(f)
        if len(pending) >= batch:
            flush()
    flush()
    return out
