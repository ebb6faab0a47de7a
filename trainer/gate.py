"""Gate: promote a candidate model only if it beats the current one, with no labels.

On the held-out prompts (a stable hash keeps them out of training) both models answer
greedily; the same label-free scorers that built the training pairs compare the two
answers of each prompt (pairwise win, loss or tie). The candidate is promoted only if
  - its pairwise win rate (ties count half) reaches the threshold (default 0.55),
  - no verifier's pass rate drops, and
  - on a fixed canary set of general prompts it does not regress beyond a tolerance
    (fixed checks, and the same pairwise comparison).
Otherwise the current model stays, and the reasons say why.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Callable

from trainer.prompts import Candidate, Prompt
from trainer.rewards import ensemble
from trainer.rewards.ensemble import PASS_AT

TIE_EPS = 0.05     # score differences below this are ties: scorers are noisy


@dataclass
class GateResult:
    promote: bool
    reasons: list[str]
    win_rate: float | None
    wins: int = 0
    losses: int = 0
    ties: int = 0
    verifier_pass: dict[str, dict[str, float | None]] = field(default_factory=dict)
    canary: dict[str, float | None] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def load_canary() -> list[dict]:
    lines = files("trainer").joinpath("canary.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def canary_passed(case: dict, answer: str) -> bool:
    a = answer.lower()
    return any(e in a for e in case["expect_any"])


def pairwise(prompts: list[Prompt], current: list[str], candidate: list[str],
             sources: dict[str, tuple[float, Callable]]) -> tuple[int, int, int, list[dict]]:
    wins = losses = ties = 0
    details = []
    for p, cur, cand in zip(prompts, current, candidate):
        (s_cur, s_cand), _ = ensemble(sources, p, [Candidate(cur, "current"), Candidate(cand, "candidate")])
        if s_cur is None or s_cand is None or abs(s_cand - s_cur) < TIE_EPS:
            ties += 1
            verdict = "tie"
        elif s_cand > s_cur:
            wins += 1
            verdict = "win"
        else:
            losses += 1
            verdict = "loss"
        details.append({"prompt_id": p.prompt_id, "verdict": verdict, "current": cur, "candidate": cand,
                        "score_current": s_cur, "score_candidate": s_cand})
    return wins, losses, ties, details


def pass_rate(prompts: list[Prompt], answers: list[str], verifier: Callable) -> float | None:
    """Share of answers the verifier passes, over the prompts it has an opinion on."""
    scores = [verifier(p, [Candidate(a, "eval")])[0] for p, a in zip(prompts, answers)]
    judged = [s for s in scores if s is not None]
    return sum(s >= PASS_AT for s in judged) / len(judged) if judged else None


def decide(heldout: list[Prompt], current: list[str], candidate: list[str],
           canary: list[dict], canary_current: list[str], canary_candidate: list[str],
           sources: dict[str, tuple[float, Callable]], verifiers: dict[str, Callable],
           threshold: float = 0.55, canary_tolerance: float = 0.1) -> GateResult:
    reasons: list[str] = []
    wins, losses, ties, details = pairwise(heldout, current, candidate, sources)
    n = wins + losses + ties
    win_rate = (wins + 0.5 * ties) / n if n else None
    if win_rate is None:
        reasons.append("no held-out prompts to compare on")
    elif win_rate < threshold:
        reasons.append(f"win rate {win_rate:.2f} < {threshold:.2f} ({wins} wins, {losses} losses, {ties} ties)")

    vpass = {}
    for name, fn in verifiers.items():
        cur, cand = pass_rate(heldout, current, fn), pass_rate(heldout, candidate, fn)
        vpass[name] = {"current": cur, "candidate": cand}
        if cur is not None and cand is not None and cand < cur:
            reasons.append(f"{name} verifier pass rate dropped: {cur:.2f} -> {cand:.2f}")

    c_cur = sum(canary_passed(c, a) for c, a in zip(canary, canary_current)) / len(canary) if canary else None
    c_cand = sum(canary_passed(c, a) for c, a in zip(canary, canary_candidate)) / len(canary) if canary else None
    canary_prompts = [Prompt(f"canary-{i}", c["messages"]) for i, c in enumerate(canary)]
    cw, cl, ct, _ = pairwise(canary_prompts, canary_current, canary_candidate, sources)
    c_win = (cw + 0.5 * ct) / len(canary) if canary else None
    if c_cur is not None and c_cand < c_cur - canary_tolerance:
        reasons.append(f"canary checks regressed: {c_cur:.2f} -> {c_cand:.2f} (tolerance {canary_tolerance})")
    if c_win is not None and c_win < 0.5 - canary_tolerance:
        reasons.append(f"canary pairwise win rate {c_win:.2f} < {0.5 - canary_tolerance:.2f}")

    return GateResult(promote=not reasons, reasons=reasons or ["passed"], win_rate=win_rate, wins=wins,
                      losses=losses, ties=ties, verifier_pass=vpass,
                      canary={"checks_current": c_cur, "checks_candidate": c_cand, "pairwise_win_rate": c_win},
                      examples=details[:5])


def run_gate(current_dir: Path, candidate_dir: Path, heldout: list[Prompt],
             sources: dict[str, tuple[float, Callable]], verifiers: dict[str, Callable], *,
             threshold: float, canary_tolerance: float, max_new_tokens: int, dtype: str = "float32",
             log: Callable[[str], None] = print) -> GateResult:
    from trainer.generate import generate

    canary = load_canary()
    convs = [p.messages for p in heldout] + [c["messages"] for c in canary]
    cur = generate(current_dir, convs, max_new_tokens=max_new_tokens, dtype=dtype, log=log)
    cand = generate(candidate_dir, convs, max_new_tokens=max_new_tokens, dtype=dtype, log=log)
    k = len(heldout)
    return decide(heldout, cur[:k], cand[:k], canary, cur[k:], cand[k:], sources, verifiers,
                  threshold=threshold, canary_tolerance=canary_tolerance)
