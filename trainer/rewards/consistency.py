"""Self-consistency across samples: an answer that the other candidates of its prompt also
give is more likely right. `final_answer_key` says when two answers are the same answer;
`agreement` is the soft share, `majority_vote` the TTRL-style vote masked where no clear
majority exists (the source for prompts nothing else can check: `Fallback`).
"""
from __future__ import annotations

import json
import re
from typing import Callable

from trainer.prompts import USER_WRITTEN, Candidate, Prompt
from trainer.rewards.json_extraction import extract_json_object

_LAST_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def final_answer_key(text: str) -> str | None:
    """What two answers must share to count as the same answer: the parsed object's values
    for JSON, the last number for numeric answers, else the text without case, punctuation
    and extra spaces. None for an empty answer."""
    t = text.strip()
    if not t:
        return None
    obj, _ = extract_json_object(t)
    if obj is not None:
        return "json:" + json.dumps({str(k).strip().lower(): _norm_value(v) for k, v in obj.items()}, sort_keys=True)
    nums = _LAST_NUMBER_RE.findall(t)
    if nums:
        return "num:" + _norm_number(nums[-1])
    norm = " ".join(re.sub(r"[^\w\s]", " ", t.lower()).split())
    return "text:" + norm if norm else None


def answer_key(candidate: Candidate) -> str | None:
    """final_answer_key of the text, or for an answer that calls tools, the calls themselves
    (names, and arguments parsed where they parse): two calls agree when they do the same."""
    if not candidate.tool_calls:
        return final_answer_key(candidate.text)
    calls = []
    for c in candidate.tool_calls:
        try:
            args = json.loads(c.get("arguments") or "{}")
        except ValueError:
            args = c.get("arguments")
        calls.append([c.get("name"), args])
    return "calls:" + json.dumps(calls, sort_keys=True, default=str)


def _norm_number(s: str) -> str:
    x = float(s.replace(",", ""))
    return str(int(x)) if x.is_integer() else repr(x)


def _norm_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return _norm_number(str(v))
    if isinstance(v, str):
        s = v.strip()
        if re.fullmatch(r"[-+]?[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", s):
            return _norm_number(s.lstrip("+$€£"))
        return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())
    return json.dumps(v, sort_keys=True).lower()


def agreement(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Self-consistency: each candidate's share of the OTHER candidates giving the same final
    answer. No opinion with fewer than 3 candidates (one other answer is no majority)."""
    # Only the model's own answers are counted as the others: a user's correction is scored,
    # never a vote that lifts the samples copying it (as in the majority vote).
    keys = [answer_key(c) for c in candidates]
    voters = [j for j, c in enumerate(candidates) if c.strategy not in USER_WRITTEN]
    if len(voters) < 3:
        return [None] * len(candidates)
    return [0.0 if k is None else (sum(1 for j in voters if keys[j] == k and j != i) / (len(voters) - (i in voters)))
            for i, k in enumerate(keys)]


# -- majority vote (TTRL-style), masked where there is no clear majority ------------------
# Unmasked intrinsic rewards are known to rise and then collapse (URLVR, "No Free Lunch",
# CuMa): a model trained toward whatever it says most often drifts to confident nonsense.
# So the vote speaks only where a clear majority exists, and only of short answers and
# JSON fields, where "the same answer" is well defined.
MIN_VOTERS = 3           # fewer answers make no majority
MAJORITY_SHARE = 0.5     # the top answer needs more than this share of the votes
MAX_SHORT_WORDS = 4      # a text answer of more words is prose: no vote on it


def _short_key(text: str) -> str | None:
    """The vote key of a short answer (a number, a label, a few words), else None."""
    key = final_answer_key(text)
    if key is None or key.startswith("json:"):
        return None
    if key.startswith("text:") and len(key[5:].split()) > MAX_SHORT_WORDS:
        return None
    return key


def _clear_winner(votes: list) -> object | None:
    counted = [v for v in votes if v is not None]
    if len(counted) < MIN_VOTERS:
        return None
    tally: dict = {}
    for v in counted:
        tally[v] = tally.get(v, 0) + 1
    (best, n), *rest = sorted(tally.items(), key=lambda kv: -kv[1])
    if n / len(counted) <= MAJORITY_SHARE or (rest and rest[0][1] == n):
        return None
    return best


def majority_vote(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """1 for the clear majority's answer, 0 for another; for JSON answers the share of fields
    that agree with each field's clear majority. None (masked) where no clear majority exists,
    and for answers of another kind (prose)."""
    voters = [c for c in candidates if c.strategy not in USER_WRITTEN]  # one key could steer the vote
    objs = [extract_json_object(c.text)[0] for c in candidates]
    voter_objs = [extract_json_object(c.text)[0] for c in voters]
    if sum(o is not None for o in voter_objs) >= MIN_VOTERS:
        fields = {str(k).strip().lower() for o in voter_objs if o for k in o}
        winners = {}
        for f in fields:
            votes = [_norm_value(_field(o, f)) if o is not None and _field(o, f) is not None else None
                     for o in voter_objs]
            w = _clear_winner(votes)
            if w is not None:
                winners[f] = w
        if not winners:
            return [None] * len(candidates)
        return [None if o is None else
                sum(_field(o, f) is not None and _norm_value(_field(o, f)) == w for f, w in winners.items()) / len(winners)
                for o in objs]
    winner = _clear_winner([_short_key(c.text) for c in voters])
    if winner is None:
        return [None] * len(candidates)
    keys = [_short_key(c.text) for c in candidates]
    return [None if k is None else float(k == winner) for k in keys]


def _field(obj: dict, name: str):
    for k, v in obj.items():
        if str(k).strip().lower() == name:
            return v
    return None


class Fallback:
    """`source`, speaking only on prompts none of `verifiers` judges: self-consistency is the
    fallback where nothing checks the answer, never a second opinion against a check.

    The ensemble passes the scores it already has (`judged`, by source name), so a verifier
    that is also a source (the SQL one executes every candidate) does not run twice."""

    reads_others = True  # the ensemble passes the scores it already has (ensemble.reads_others)

    def __init__(self, source: Callable, verifiers: dict[str, Callable]):
        self.source, self.verifiers = source, verifiers

    def __call__(self, prompt: Prompt, candidates: list[Candidate],
                 judged: dict[str, list[float | None]] | None = None) -> list[float | None]:
        judged = judged or {}
        for name, verifier in self.verifiers.items():
            scores = judged[name] if name in judged else verifier(prompt, candidates)
            if any(s is not None for s in scores):
                return [None] * len(candidates)
        return self.source(prompt, candidates)

