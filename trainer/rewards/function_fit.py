"""Function fit: which of the offered functions the live model itself would call.

Where a request offers several tools, the exploration strategies that write calls fill each
function's skeleton in turn (trainer/explore.py), so a group holds valid, grounded calls of
every function and neither the contract verifier (it checks arguments, not the choice) nor a
majority vote (the functions come out evenly) can tell which one the user wanted. The model
itself often can: the log-probability it gives each function's name right where a call
begins (measured on the lift benchmark's 108 tool requests, three functions offered each:
the most likely name was the right function for 77, and for 56 of the 61 where it led the
runner-up by 2 nats; tests/bench/results/function_fit.md). `trainer.beliefs` computes those log-probs; this
source turns them into scores.

It is evidence with an error bar, not truth: a prompt whose favourite does not lead the
runner-up by `margin` nats is masked (no opinion on any candidate), and an answer in words
gets no opinion either (calling may be optional). It never judges the gate's held-out
prompts: beliefs are computed for training prompts only.
"""
from __future__ import annotations

from trainer.prompts import Candidate, Prompt
from trainer.rewards.contract import calls_of

# prompt_id -> {function name: sum of log-probs of the name where a call begins}
Beliefs = dict[str, dict[str, float]]


def favourite(logprobs: dict[str, float], margin: float) -> str | None:
    """The function the model clearly prefers: the most likely name, when it leads the next by
    at least `margin` nats; None when it does not (or there is no choice to make)."""
    if len(logprobs) < 2:
        return None
    ranked = sorted(logprobs.items(), key=lambda kv: kv[1], reverse=True)
    return ranked[0][0] if ranked[0][1] - ranked[1][1] >= margin else None


class FunctionFit:
    """A reward source: 1 for an answer whose calls all name the favourite function, the
    share of its calls that do otherwise; None where the prompt has no clear favourite, where
    no answer calls it (exploration tries a few functions only: zeros for all would tell the
    answers apart by nothing), or for an answer that makes no call."""

    def __init__(self, beliefs: Beliefs, margin: float):
        self.beliefs, self.margin = beliefs, margin

    def favourite(self, prompt: Prompt) -> str | None:
        return favourite(self.beliefs.get(prompt.prompt_id) or {}, self.margin)

    def __call__(self, prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
        best = self.favourite(prompt)
        if best is None:
            return [None] * len(candidates)
        out: list[float | None] = []
        for c in candidates:
            calls = calls_of(c)
            out.append(sum(call.get("name") == best for call in calls) / len(calls) if calls else None)
        return out if any(s for s in out) else [None] * len(candidates)
