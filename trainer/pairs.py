"""Preference pairs for DPO: best vs worst candidate of a prompt, on the BARE prompt."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from trainer.prompts import Candidate, Prompt


class Pair(TypedDict):
    """One DPO pair: what trainer/optimize.py trains on and pairs.parquet keeps. A dict (typed),
    because TRL's trainers take rows of dicts."""
    prompt_id: str
    prompt: list[dict]  # the bare request's messages
    chosen: str
    rejected: str
    margin: float
    chosen_strategy: str


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
        cands = [s for s in scored.get(p.prompt_id, []) if s.score is not None and s.candidate.text.strip()]
        if len(cands) < 2:
            continue
        best = max(cands, key=lambda s: s.score)
        worst = min(cands, key=lambda s: s.score)
        margin = best.score - worst.score
        if margin < min_margin or best.score < min_best or best.candidate.text == worst.candidate.text:
            continue
        pairs.append(Pair(prompt_id=p.prompt_id, prompt=p.messages, chosen=best.candidate.text,
                          rejected=worst.candidate.text, margin=round(margin, 4),
                          chosen_strategy=best.candidate.strategy))
    return pairs
