"""What users said: thumbs and ratings of the served answer, and their corrections.

Feedback is evidence, not truth. A correction is one API key's text: any key can write one,
so on its own it says nothing about the answer. It joins the pool as a candidate that the
other sources score like any other (verifiers, consistency, judge), and this source speaks
for it only when it is corroborated:
  - at least `min_tenants` different tenants wrote the same correction for the prompt, or
  - a verifier of substance (one that checks what the answer says, not only its form)
    finds nothing wrong with it (full marks: 0.875 for a JSON answer can be one planted value
    in four) AND one of the model's own answers in the group says the same (`answer_key`): a
    verifier alone is too weak a witness ("SELECT 1" runs on any schema; grounded values can
    sit under the wrong keys).
Even then its bonus is bounded (`CORRECTION_SCORE`, below a verifier's full marks), so the
ensemble's other sources still rank it. trainer/pairs.py lets an uncorroborated correction
be neither side of a pair.
"""
from __future__ import annotations

from typing import Callable

from trainer.prompts import USER_WRITTEN, Candidate, Prompt
from trainer.rewards.consistency import answer_key
# What a corroborated correction gets from this source: good, never above a check's full marks.
CORRECTION_SCORE = 0.8
FULL_MARKS = 1.0 - 1e-9


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def served_score(prompt: Prompt) -> float | None:
    """Thumbs or rating of the served answer (choice 0); the last one said wins."""
    served = None
    for fb in prompt.feedback:
        if fb.get("choice_index", 0) != 0:
            continue
        kind, value = fb["kind"], fb["value"]
        if kind == "thumbs":
            served = 1.0 if value == "up" else 0.0
        elif kind == "rating":
            served = (float(value) - 1) / 4
    return served


def correction_tenants(prompt: Prompt) -> dict[str, set[str]]:
    """Normalized correction text -> the tenants that wrote it. Feedback without a tenant
    (older snapshots) counts as one unknown tenant."""
    out: dict[str, set[str]] = {}
    for fb in prompt.feedback:
        if fb["kind"] == "correction":
            out.setdefault(_norm(fb["value"]), set()).add(str(fb.get("tenant") or "?"))
    return out


def corroborated(prompt: Prompt, text: str, min_tenants: int) -> bool:
    """Did several tenants write this correction? (Outside a group of candidates, as for the
    reward model, that is the only witness there is.)"""
    return len(correction_tenants(prompt).get(_norm(text), ())) >= min_tenants


class UserFeedback:
    """The feedback source (see the module docstring). Reads the first-phase sources' scores
    (ensemble.reads_others) to see whether a verifier of substance passes a correction."""

    reads_others = True

    def __init__(self, substance: dict[str, Callable], min_tenants: int = 2):
        self.substance, self.min_tenants = substance, min_tenants

    def __call__(self, prompt: Prompt, candidates: list[Candidate],
                 judged: dict[str, list[float | None]] | None = None) -> list[float | None]:
        judged = judged or {}
        served = served_score(prompt)
        tenants = correction_tenants(prompt)
        verdicts = {name: judged[name] if name in judged else fn(prompt, candidates)
                    for name, fn in self.substance.items()} if any(c.strategy in USER_WRITTEN for c in candidates) else {}
        own = {answer_key(c) for c in candidates if c.strategy not in USER_WRITTEN} - {None}
        out: list[float | None] = []
        for i, c in enumerate(candidates):
            if c.strategy == "served":
                out.append(served)
            elif c.strategy in USER_WRITTEN:
                by_tenants = len(tenants.get(_norm(c.text), ())) >= self.min_tenants
                by_verifier = (any((v[i] or 0) >= FULL_MARKS for v in verdicts.values())
                               and answer_key(c) in own)
                out.append(CORRECTION_SCORE if by_tenants or by_verifier else None)
            else:
                out.append(None)
        return out


def user_feedback(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """The feedback source with no verifier to corroborate: a correction counts only when
    several tenants wrote it."""
    return UserFeedback({})(prompt, candidates)
