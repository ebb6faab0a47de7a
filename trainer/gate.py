"""Gate: promote a candidate model only when it is better where it was trained and no worse
anywhere else, each with confidence, and with no labels.

1. Held-out traffic (a stable hash keeps it out of training): the parent (the live model)
   and the candidate answer greedily; the label-free scorers that built the training pairs
   compare the two answers of each prompt: win, loss or tie. Ties are not half wins: the
   win rate is wins / (wins + losses), and its Wilson interval's low end must be above 0.5.
2. No verifier's pass rate on held-out traffic falls.
3. The general probe suite (trainer/probes.py, 200+ prompts of many kinds, none from the
   benchmark): each probe's own check passes or fails for the candidate, the parent and
   the base. The candidate must be non-inferior to both: the paired-bootstrap interval of
   (candidate - reference) pass rate must lie above -margin (1 point by default). Against
   the parent, losses cannot add up cycle after cycle; against the base, they cannot add up
   at all. Short answers' agreement and the drift of the parent's answers' log-probability
   under the candidate are reported beside them.
Every figure is reported with its interval and sample size; the reasons name the figure
that failed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from trainer.probes import Probe, load_probes, passed, short_answer
from trainer.prompts import Candidate, Prompt
from trainer.rewards import ensemble
from trainer.rewards.ensemble import PASS_AT
from trainer.stats import Interval, paired_bootstrap, wilson

TIE_EPS = 0.05        # score differences below this are ties: scorers are noisy
PROBE_MAX_TOKENS = 64  # probe answers are short: a fact, a number, a line of code, a few sentences
SHORT_KINDS = frozenset({"fact", "reasoning", "language"})  # kinds whose answers agree or not in a word


class ProbeAnswers(NamedTuple):
    """Each model's answers to the probe suite, in the suite's order."""
    base: list[str]
    parent: list[str]
    candidate: list[str]


@dataclass
class GateResult:
    promote: bool
    reasons: list[str]
    win_rate: float | None  # wins / (wins + losses): ties are not half wins
    wins: int = 0
    losses: int = 0
    ties: int = 0
    win_interval: dict = field(default_factory=dict)  # stats.Interval.as_dict()
    verifier_pass: dict[str, dict] = field(default_factory=dict)
    probes: dict = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    heldout_better: bool = False  # the win-rate interval lies above 0.5
    mix: float = 1.0              # the weight of the trained candidate against its parent (trainer/interpolate.py)
    tries: list[dict] = field(default_factory=list)  # each mix judged: its weight, verdict and reasons

    def as_dict(self) -> dict:
        return asdict(self)


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


def pass_rate(prompts: list[Prompt], answers: list[str], verifier: Callable) -> tuple[float | None, int]:
    """Share of answers the verifier passes, over the prompts it has an opinion on (and how many)."""
    scores = [verifier(p, [Candidate(a, "eval")])[0] for p, a in zip(prompts, answers)]
    judged = [s for s in scores if s is not None]
    return (sum(s >= PASS_AT for s in judged) / len(judged) if judged else None), len(judged)


def probe_figures(probes: list[Probe], answers: ProbeAnswers, *, confidence: float, seed: int = 0,
                  drift: list[float] | None = None) -> dict:
    """Pass rates per model and kind, the candidate's paired difference to the parent and the
    base with intervals, short-answer agreement, and drift (nats per token, when given)."""
    checked = [i for i, p in enumerate(probes) if p.checked]
    ok = {who: [bool(passed(probes[i], getattr(answers, who)[i])) for i in checked] for who in ProbeAnswers._fields}
    by_kind: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for j, i in enumerate(checked):
        for who in ProbeAnswers._fields:
            by_kind[probes[i].kind][who].append(ok[who][j])
    short = [i for i, p in enumerate(probes) if p.kind in SHORT_KINDS]

    def agreement(ref: list[str]) -> float | None:
        return (sum(short_answer(answers.candidate[i]) == short_answer(ref[i]) for i in short) / len(short)
                if short else None)

    vs = {ref: paired_bootstrap([int(c) - int(r) for c, r in zip(ok["candidate"], ok[ref])],
                                confidence=confidence, seed=seed).as_dict() for ref in ("parent", "base")}
    return {
        "n": len(probes), "checked": len(checked),
        "pass_rate": {who: round(sum(v) / len(v), 4) if v else None for who, v in ok.items()},
        "vs_parent": vs["parent"], "vs_base": vs["base"],
        "by_kind": {k: {who: round(sum(v) / len(v), 4) for who, v in d.items()} | {"n": len(d["candidate"])}
                    for k, d in sorted(by_kind.items())},
        "agreement": {"parent": agreement(answers.parent), "base": agreement(answers.base), "n": len(short)},
        "drift": paired_bootstrap(drift, confidence=confidence, seed=seed).as_dict() if drift else None,
    }


def decide(heldout: list[Prompt], current: list[str], candidate: list[str], probes: list[Probe],
           probe_answers: ProbeAnswers, sources: dict[str, tuple[float, Callable]],
           verifiers: dict[str, Callable], *, margin: float = 0.01, confidence: float = 0.95,
           drift: list[float] | None = None, seed: int = 0) -> GateResult:
    reasons: list[str] = []
    wins, losses, ties, details = pairwise(heldout, current, candidate, sources)
    win = wilson(wins, wins + losses, confidence=confidence)
    tally = f"{wins} wins, {losses} losses, {ties} ties"
    if not heldout:
        reasons.append("no held-out prompts to compare on")
    elif win.value is None:
        reasons.append(f"held-out: no prompt told the models apart ({tally})")
    elif win.low <= 0.5:
        reasons.append(f"held-out: not better than the parent with {confidence:.0%} confidence: "
                       f"win rate {win.text()} ({tally})")

    vpass = {}
    for name, fn in verifiers.items():
        (cur, n_cur), (cand, n_cand) = pass_rate(heldout, current, fn), pass_rate(heldout, candidate, fn)
        vpass[name] = {"current": cur, "candidate": cand, "n": n_cand}
        if cur is not None and cand is not None and cand < cur:
            reasons.append(f"{name} verifier pass rate dropped: {cur:.2f} -> {cand:.2f} (n={n_cand})")

    figures = probe_figures(probes, probe_answers, confidence=confidence, seed=seed, drift=drift) if probes else {}
    for ref in ("parent", "base"):
        d = figures.get(f"vs_{ref}")
        if d and d["low"] is not None and d["low"] < -margin:
            worst = min(figures["by_kind"].items(), key=lambda kv: kv[1]["candidate"] - kv[1][ref])
            reasons.append(
                f"probe suite vs {ref}: {Interval(**d).text(points=True)} points, below the -{100 * margin:.1f}-point "
                f"margin (pass rate {figures['pass_rate'][ref]:.3f} -> {figures['pass_rate']['candidate']:.3f}; "
                f"most lost in {worst[0]}: {worst[1][ref]:.2f} -> {worst[1]['candidate']:.2f})")

    return GateResult(promote=not reasons, reasons=reasons or ["passed"], win_rate=win.value, wins=wins,
                      losses=losses, ties=ties, win_interval=win.as_dict(), verifier_pass=vpass, probes=figures,
                      examples=details[:5], heldout_better=win.low is not None and win.low > 0.5)


# -- generation, with the probe answers of a model cached (a version never changes) -------
class AnswerCache:
    """A model's greedy answers to a fixed prompt set (and their log-probs under the model
    itself), kept in a directory (DATA_DIR/gate_cache): a version never changes, so the base
    and the parent answered in earlier cycles, and a cycle generates for its candidate only.
    Used for the probe suite (the gate) and the replay set (trainer/replay.py)."""

    def __init__(self, root: Path, conversations: list[list[dict]], max_new_tokens: int, dtype: str,
                 log: Callable[[str], None] = print):
        self.root, self.conversations, self.max_new_tokens, self.dtype, self.log = (
            root, conversations, max_new_tokens, dtype, log)
        self.digest = hashlib.sha256(json.dumps(conversations, sort_keys=True).encode()).hexdigest()[:16]

    def _path(self, model_dir: Path) -> Path:
        # The weight files' sizes and times too: an interpolated model renamed into a version's
        # weights/ directory must not find the answers of the model that was there before.
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(model_dir).glob("*.safetensors"))
        key = f"{Path(model_dir).resolve()}|{files}|{self.digest}|{self.max_new_tokens}|{self.dtype}"
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"

    def get(self, model_dir: Path) -> dict:
        path = self._path(model_dir)
        entry = json.loads(path.read_text()) if path.exists() else {}
        if "answers" not in entry:
            from trainer.generate import generate

            entry["answers"] = generate(model_dir, self.conversations, dtype=self.dtype,
                                        max_new_tokens=self.max_new_tokens, log=self.log)
            self._put(path, entry)
        return entry

    def own_logprobs(self, model_dir: Path) -> list[list[float]]:
        """[sum log-prob, tokens] of the model's own answers."""
        path = self._path(model_dir)
        entry = self.get(model_dir)
        if "logprobs" not in entry:
            from trainer.generate import answer_logprobs

            entry["logprobs"] = [list(x) for x in answer_logprobs(model_dir, self.conversations, entry["answers"],
                                                                  dtype=self.dtype)]
            self._put(path, entry)
        return entry["logprobs"]

    def _put(self, path: Path, entry: dict) -> None:
        # A temporary name of this writer's own: several processes may share the directory.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(entry))
        os.replace(tmp, path)


def drift_per_probe(parent_own: list[list[float]], candidate_on_parent: list[tuple[float, int]]) -> list[float]:
    """Per probe, the change in mean log-prob per token of the parent's answer, candidate minus
    parent: 0 = the candidate would say what the parent said as readily; negative = it moved."""
    return [c / n - p / n for (p, n), (c, _) in zip(parent_own, candidate_on_parent) if n]


class Gate:
    """Judges candidates against one parent: the parent's held-out answers and every model's
    probe answers are computed once (the probes' across cycles, in the cache), so judging a
    second candidate of the same cycle (an interpolation) costs only that candidate's answers."""

    def __init__(self, parent_dir: Path, base_dir: Path, heldout: list[Prompt],
                 sources: dict[str, tuple[float, Callable]], verifiers: dict[str, Callable], *, cache_dir: Path,
                 margin: float, confidence: float, max_new_tokens: int, dtype: str = "float32", seed: int = 0,
                 log: Callable[[str], None] = print):
        self.parent_dir, self.base_dir, self.heldout = parent_dir, base_dir, heldout
        self.sources, self.verifiers = sources, verifiers
        self.margin, self.confidence, self.max_new_tokens, self.dtype, self.seed, self.log = (
            margin, confidence, max_new_tokens, dtype, seed, log)
        self.probes = load_probes()
        self.cache = AnswerCache(cache_dir, [p.messages for p in self.probes], PROBE_MAX_TOKENS, dtype, log)
        self._parent_heldout: list[str] | None = None

    def _answers(self, model_dir: Path) -> list[str]:
        from trainer.generate import generate

        convs = [p.messages for p in self.heldout]
        return generate(model_dir, convs, max_new_tokens=self.max_new_tokens, dtype=self.dtype, log=self.log) \
            if convs else []

    def judge(self, candidate_dir: Path) -> GateResult:
        from trainer.generate import answer_logprobs

        base = self.cache.get(self.base_dir)["answers"]
        parent = self.cache.get(self.parent_dir)["answers"]
        parent_own = self.cache.own_logprobs(self.parent_dir)
        if self._parent_heldout is None:
            self._parent_heldout = self._answers(self.parent_dir)
        cand = self._answers(candidate_dir)
        cand_probes = self.cache.get(candidate_dir)["answers"]  # cached: a promoted mix, renamed, answers anew
        on_parent = answer_logprobs(candidate_dir, [p.messages for p in self.probes], parent, dtype=self.dtype)
        return decide(self.heldout, self._parent_heldout, cand, self.probes, ProbeAnswers(base, parent, cand_probes),
                      self.sources, self.verifiers, margin=self.margin, confidence=self.confidence,
                      drift=drift_per_probe(parent_own, on_parent), seed=self.seed)
