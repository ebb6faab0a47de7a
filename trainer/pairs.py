"""Preference pairs for DPO: best vs worst candidate of a prompt, on the BARE prompt.

The chosen answer must be better in substance, not only in form. Measured on unseen tasks
(issue "rewards from what the request itself asks"): the constraint verifier alone chose
"27." for 7 x 28 (it rewards the format it asked for, not the number), and the scaffold's own
skeleton `{"shipment_id": "...", ...}` and an invented 19-digit value were chosen. So a
candidate may be chosen only when (1) some source other than a format-only one judged it,
(2) for a request with known keys, none of its values is a placeholder, missing from the
conversation, a field's name echoed, or another field's text again (bench-lift, 2026-12-07:
{"event": "event", "venue": "venue", ...} chosen three times in one cycle, "June 25" as both
nights and date), nor is any value of its tool calls missing or another argument's again (7
of 19 chosen calls of a cycle carried a value made up, most for the wrong function), and (3) it
is not a user's correction that nothing corroborated (issue
"training no tenant can steer": one API key must not write the chosen answers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

from trainer.prompts import USER_WRITTEN, Candidate, Prompt, request_text
from trainer.rewards.contract import calls_grounded
from trainer.rewards.grounding import copied, echoes_a_name, overlapping
from trainer.rewards.intent import requested_keys
from trainer.rewards.json_extraction import extract_json_object

# Sources that judge only the form of an answer (length, format, schema shape): they rank
# candidates, but never decide a pair alone.
FORMAT_ONLY = frozenset({"constraints", "structured_output"})
# "x", "y", "z": seen copied from a correction's placeholder object into few-shot answers (e2e loop).
PLACEHOLDERS = frozenset({"", "...", "…", "?", "n/a", "tbd", "x", "y", "z", "xx", "xxx", "<value>", "value", "null",
                          "none", "foo", "bar"})


class Pair(TypedDict):
    """One DPO pair: what trainer/optimize.py trains on and pairs.parquet keeps. A dict (typed),
    because TRL's trainers take rows of dicts."""
    prompt_id: str
    prompt: list[dict]  # the bare request's messages
    chosen: str         # the answer's text (may be empty when it is a tool call)
    rejected: str
    margin: float
    chosen_strategy: str
    # A request that offered tools: the tools (so the prompt is rendered as it was served) and
    # each side's tool calls [{"name", "arguments"}] (trained as calls, not as text).
    tools: NotRequired[list[dict]]
    chosen_calls: NotRequired[list[dict]]
    rejected_calls: NotRequired[list[dict]]


@dataclass
class ScoredCandidate:
    candidate: Candidate
    score: float | None
    detail: dict


def build_pairs(prompts: list[Prompt], scored: dict[str, list[ScoredCandidate]], min_margin: float,
                min_best: float) -> list[Pair]:
    """One pair per prompt whose reward spread is wide enough; none where there is no spread.

    The chosen answer must be good in absolute terms too (`min_best`): a pair of two bad
    answers teaches the model little and can teach it the wrong thing.
    """
    pairs = []
    for p in prompts:
        cands = [s for s in scored.get(p.prompt_id, [])
                 if s.score is not None and (s.candidate.text.strip() or s.candidate.tool_calls)]
        if len(cands) < 2:
            continue
        keys = requested_keys(p)
        conversation = request_text(p).lower() if keys else ""
        offers_tools = bool(p.contract.get("tools"))
        eligible = [s for s in cands if choosable(s, keys, conversation)
                    and (not offers_tools or calls_grounded(p, s.candidate))]
        if not eligible:
            continue
        # The rejected side is the model's own answer: user-written text (a correction) is
        # pushed neither up nor down unless corroborated (trainer/rewards/feedback.py).
        rejectable = [s for s in cands if s.candidate.strategy not in USER_WRITTEN]
        if not rejectable:
            continue
        best = max(eligible, key=lambda s: s.score)
        worst = min(rejectable, key=lambda s: s.score)
        margin = best.score - worst.score
        if margin < min_margin or best.score < min_best or _same(best.candidate, worst.candidate):
            continue
        pair = Pair(prompt_id=p.prompt_id, prompt=p.messages, chosen=best.candidate.text,
                    rejected=worst.candidate.text, margin=round(margin, 4), chosen_strategy=best.candidate.strategy)
        if p.contract.get("tools"):
            pair.update(tools=p.contract["tools"], chosen_calls=best.candidate.tool_calls,
                        rejected_calls=worst.candidate.tool_calls)
        pairs.append(pair)
    return pairs


def _same(a: Candidate, b: Candidate) -> bool:
    return a.text == b.text and a.tool_calls == b.tool_calls


def grounded(value, conversation: str) -> bool:
    """A value copied from the conversation (trainer/rewards/grounding.py: numbers by value,
    text as whole words), or a boolean (nothing to copy)."""
    return isinstance(value, bool) or copied(value, conversation)


def choosable(s: ScoredCandidate, keys: list[str] | None, conversation: str) -> bool:
    """May this candidate be a pair's chosen answer? (see the module docstring) `keys`: the
    prompt's requested keys; `conversation`: its request text, lowercased."""
    if s.detail and set(s.detail) <= FORMAT_ONLY:
        return False
    if s.candidate.strategy in USER_WRITTEN and "feedback" not in s.detail:
        return False  # one key's text, uncorroborated: the feedback source had no opinion of it
    if not keys:
        return True
    obj, _ = extract_json_object(s.candidate.text)
    if obj is None:
        return True  # not an object: the verifiers have scored it low already
    wanted = {k.lower() for k in keys}
    values = [v for k, v in obj.items() if str(k).lower() in wanted and not isinstance(v, (dict, list))]
    for v in values:
        if (isinstance(v, str) and v.strip().lower() in PLACEHOLDERS) or not grounded(v, conversation) \
                or echoes_a_name(v, keys):
            return False
    return not overlapping(values)
