"""What the trainer scores: a logged `Prompt`, the `Candidate` answers explored for it, and
the `RewardSource` protocol every reward follows (trainer/rewards/).

A reward source is a plain callable `(prompt, candidates) -> list[float | None]`: one score
in [0, 1] per candidate, or None where the source has no opinion.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Prompt:
    prompt_id: str                   # completion_id of the logged request
    messages: list[dict]             # the bare request, as sent by the client
    task: str | None = None
    feedback: list[dict] = field(default_factory=list)  # [{"kind", "value", "choice_index"}]
    served: str | None = None        # the answer the client got (choice 0)
    # What the request itself asks for, as the client sent it: tools, tool_choice,
    # response_format (see CONTRACT_KEYS). Empty for a plain chat request.
    contract: dict = field(default_factory=dict)
    served_tool_calls: list[dict] = field(default_factory=list)  # choice 0's [{"name", "arguments"}]

    @property
    def text(self) -> str:
        return "\n".join(content_text(m.get("content")) for m in self.messages if m.get("role") == "user")


@dataclass
class Candidate:
    text: str
    strategy: str                    # plain | scaffold | served | correction
    tool_calls: list[dict] = field(default_factory=list)  # [{"name", "arguments" (JSON text)}]


# Strategies whose text a user wrote, not the model: one API key's word. They are scored like
# any candidate, but never a vote (consistency), an exemplar (explore), a pair's rejected side,
# or its chosen side uncorroborated (pairs); trainer/rewards/feedback.py says when they count.
USER_WRITTEN = frozenset({"correction"})


def served_calls(choices: list[dict]) -> list[dict]:
    """The tool calls of choice 0 of a logged completion's choices, as [{"name", "arguments"}]."""
    first = next((c for c in choices if c.get("index") == 0), {})
    return [{"name": c.get("name", ""), "arguments": c.get("arguments", "")} for c in first.get("tool_calls") or []]


# The request parameters that state what the answer must be (the rest only say how to sample).
CONTRACT_KEYS = ("tools", "tool_choice", "response_format")


def contract_of(params: dict) -> dict:
    return {k: params[k] for k in CONTRACT_KEYS if params.get(k) not in (None, [], {})}


def offered_functions(prompt: "Prompt") -> list[dict]:
    """The function tools the request offers, each its `function` object with a string name
    ({"name", "parameters", "description"?}), in the request's order; malformed entries skipped."""
    fns = [t.get("function") for t in prompt.contract.get("tools") or [] if isinstance(t, dict)]
    return [f for f in fns if isinstance(f, dict) and isinstance(f.get("name"), str)]


def choosable_functions(prompt: "Prompt") -> list[dict]:
    """The offered functions the model may choose among: none when tool_choice is "none" or
    forces one function; all of them otherwise ("required" is a choice too, whatever form vLLM
    then makes the call take)."""
    choice = prompt.contract.get("tool_choice")
    return [] if choice == "none" or isinstance(choice, dict) else offered_functions(prompt)


class RewardSource(Protocol):
    def __call__(self, prompt: Prompt, candidates: list[Candidate]) -> list[float | None]: ...


def content_text(content) -> str:
    """The text of a message's content: a string, or OpenAI content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def request_text(prompt: Prompt) -> str:
    """System and user text: a system prompt states schemas and formats as often as the user."""
    return "\n".join(content_text(m.get("content")) for m in prompt.messages if m.get("role") in ("system", "user"))


def user_text(prompt: Prompt) -> str:
    """The user's own words: what an argument or a field may be copied from."""
    return "\n".join(content_text(m.get("content")) for m in prompt.messages if m.get("role") == "user")


def answer_turn(text: str, tool_calls: list[dict] | None = None) -> dict:
    """An answer as the assistant turn that gave it: tool calls as OpenAI `tool_calls`, which
    the chat template renders in the model's own format (schemas/chat_template.py), not as text.
    Used for few-shot demonstrations and for training pairs alike."""
    if not tool_calls:
        return {"role": "assistant", "content": text}
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": c.get("name", ""), "arguments": c.get("arguments") or "{}"}}
             for i, c in enumerate(tool_calls)]
    return {"role": "assistant", "content": text, "tool_calls": calls}


def answer_text(text: str, tool_calls: list[dict] | None = None) -> str:
    """One string for an answer, for tables and reports: its text, then its calls as JSON."""
    if not tool_calls:
        return text
    calls = json.dumps([{"name": c.get("name", ""), "arguments": c.get("arguments") or ""} for c in tool_calls])
    return f"{text}\n{calls}" if text else calls
