"""The ensemble of reward sources: a weighted mean of the opinions given."""
from __future__ import annotations

from typing import Callable

from trainer.prompts import Candidate, Prompt

PASS_AT = 0.8  # a verifier "passes" an answer scoring at least this (the gate's pass rates, corroboration)


def ensemble(sources: dict[str, tuple[float, Callable]], prompt: Prompt,
             candidates: list[Candidate]) -> tuple[list[float | None], list[dict]]:
    """Weighted mean of the sources that gave an opinion. Returns (scores, per-source detail)."""
    active = {name: fn for name, (w, fn) in sources.items() if w > 0}
    got = {name: fn(prompt, candidates) for name, fn in active.items() if not reads_others(fn)}
    # Sources that read the others' scores (a fallback, the corroboration of a correction) run
    # after them, given those scores: a verifier never runs twice for one group.
    got |= {name: fn(prompt, candidates, got) for name, fn in active.items() if reads_others(fn)}
    per_source = {name: got[name] for name in active}  # in the sources' order
    for name, s in per_source.items():
        if len(s) != len(candidates):  # zip would silently give a score to the wrong answer
            raise ValueError(f"reward source {name!r} gave {len(s)} scores for {len(candidates)} candidates")
    scores: list[float | None] = []
    detail: list[dict] = []
    for i in range(len(candidates)):
        opinions = {name: s[i] for name, s in per_source.items() if s[i] is not None}
        detail.append(opinions)
        total_w = sum(sources[n][0] for n in opinions)
        scores.append(sum(sources[n][0] * v for n, v in opinions.items()) / total_w if total_w else None)
    return scores, detail


def reads_others(source: Callable) -> bool:
    """A source called as fn(prompt, candidates, judged) with the first-phase sources' scores."""
    return getattr(source, "reads_others", False)
