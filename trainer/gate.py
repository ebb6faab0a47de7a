"""Gate: promote a candidate model only when it is better where it was trained and no worse
anywhere else, each with confidence, and with no labels.

1. Held-out traffic (a stable hash keeps it out of training): the parent (the live model)
   and the candidate answer each prompt, greedily or several times sampled with the same
   random numbers; the label-free scorers that built the training pairs score all of a
   prompt's answers as one group, and the two models' mean scores make a win, a loss or a
   tie. Ties are not half wins: the win rate is wins / (wins + losses), and its Wilson
   interval's low end must be above 0.5. The prompt is the unit (its samples are not
   independent of each other); sampling turns greedy ties (the same answer twice) into
   decided prompts where the models differ.
2. No verifier's pass rate on held-out traffic falls.
3. The general probe suite (trainer/probes.py, 200+ prompts of many kinds, none from the
   benchmark): each probe's own check passes or fails for the candidate's, the parent's and
   the base's answers (several samples each, with the same random numbers for every model:
   a probe scores the share that pass). The candidate must be non-inferior to both: the paired-bootstrap interval of
   (candidate - reference) pass rate must lie above -margin (1 point by default). Against
   the parent, losses cannot add up cycle after cycle; against the base, they cannot add up
   at all. And no kind of probe (facts, reasoning, formats, refusals, languages, code) may be
   worse beyond the margin: each kind's interval, at a Bonferroni-corrected confidence, must
   reach -margin, so gains in one kind cannot hide losses in another. Short answers'
   agreement and the drift of the parent's answers' log-probability under the candidate are
   reported beside them.
Every figure is reported with its interval and sample size; the reasons name the figure
that failed.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from feedback.files import write_json_atomic
from trainer.probes import Probe, load_probes, passed, short_answer
from trainer.prompts import Candidate, Prompt
from trainer.rewards import ensemble
from trainer.rewards.ensemble import PASS_AT
from trainer.stats import Interval, paired_bootstrap, wilson

if TYPE_CHECKING:
    from trainer.generate import Engine

TIE_EPS = 0.05        # score differences below this are ties: scorers are noisy
# Probe answers are short (a fact, a number, a line of code). Cut at 32 tokens, a sampled
# answer keeps the verdict it has at 64 in 90-99% of cases by kind (code 90%, reasoning 94%,
# the rest 97-99%; docs/measurements.md), at half the cost: the samples that cost buys narrow
# the interval more than the cut changes the figure, which both models share.
PROBE_MAX_TOKENS = 32
# The first look at sampled probes (Gate.judge): enough to refuse a clearly worse candidate,
# a quarter of the default 16.
SCREEN_SAMPLES = 4
HELDOUT_SEED = 1_000_003  # the held-out samples' noise is not the probes' (seeds seed and seed + 1)
SHORT_KINDS = frozenset({"fact", "reasoning", "language"})  # kinds whose answers agree or not in a word


class ProbeAnswers(NamedTuple):
    """Each model's answers to the probe suite, in the suite's order: one greedy answer per
    probe, or several samples (the i-th samples of two models drew the same noise)."""
    base: list[list[str]]
    parent: list[list[str]]
    candidate: list[list[str]]


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


Answers = list[str] | list[list[str]]  # per prompt: one answer, or its samples


def _samples(answers: Answers) -> list[list[str]]:
    return [[a] if isinstance(a, str) else list(a) for a in answers]


def _mean(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return sum(got) / len(got) if got else None


def pairwise(prompts: list[Prompt], current: Answers, candidate: Answers,
             sources: dict[str, tuple[float, Callable]]) -> tuple[int, int, int, list[dict]]:
    """Win, loss or tie per prompt. A prompt's answers from both models are scored as one
    group (a majority vote needs the group: two answers have no majority), and each model's
    score is the mean over its answers the scorers had an opinion on."""
    wins = losses = ties = 0
    details = []
    for p, cur, cand in zip(prompts, _samples(current), _samples(candidate)):
        group = [Candidate(a, "current") for a in cur] + [Candidate(a, "candidate") for a in cand]
        scores, _ = ensemble(sources, p, group)
        s_cur, s_cand = _mean(scores[: len(cur)]), _mean(scores[len(cur):])
        if s_cur is None or s_cand is None or abs(s_cand - s_cur) < TIE_EPS:
            ties += 1
            verdict = "tie"
        elif s_cand > s_cur:
            wins += 1
            verdict = "win"
        else:
            losses += 1
            verdict = "loss"
        details.append({"prompt_id": p.prompt_id, "verdict": verdict, "current": cur[0], "candidate": cand[0],
                        "samples": len(cand), "score_current": s_cur, "score_candidate": s_cand})
    return wins, losses, ties, details


def pass_rate(prompts: list[Prompt], answers: Answers, verifier: Callable) -> tuple[float | None, int]:
    """Share of answers the verifier passes (every sample of a prompt), over the answers it
    has an opinion on (and how many)."""
    scores = [verifier(p, [Candidate(a, "eval")])[0] for p, group in zip(prompts, _samples(answers)) for a in group]
    judged = [s for s in scores if s is not None]
    return (sum(s >= PASS_AT for s in judged) / len(judged) if judged else None), len(judged)


def probe_figures(probes: list[Probe], answers: ProbeAnswers, *, confidence: float, seed: int = 0,
                  drift: list[float] | None = None) -> dict:
    """Pass rates per model and kind, the candidate's paired difference to the parent and the
    base with intervals, short-answer agreement, and drift (nats per token, when given). A
    probe's score is the share of its answers that pass (0 or 1 when answered greedily)."""
    checked = [i for i, p in enumerate(probes) if p.checked]
    score = {who: [sum(bool(passed(probes[i], a)) for a in getattr(answers, who)[i]) / len(getattr(answers, who)[i])
                   for i in checked] for who in ProbeAnswers._fields}
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for j, i in enumerate(checked):
        for who in ProbeAnswers._fields:
            by_kind[probes[i].kind][who].append(score[who][j])
    short = [i for i, p in enumerate(probes) if p.kind in SHORT_KINDS]

    def agreement(ref: list[list[str]]) -> float | None:
        # The i-th answers of two models side by side (the same noise, when sampled).
        pairs = [(c, r) for i in short for c, r in zip(answers.candidate[i], ref[i])]
        return sum(short_answer(c) == short_answer(r) for c, r in pairs) / len(pairs) if pairs else None

    def versus(scores: dict[str, list[float]], level: float) -> dict[str, dict]:
        # The candidate's paired difference to each reference, probe by probe.
        return {f"vs_{ref}": paired_bootstrap([c - r for c, r in zip(scores["candidate"], scores[ref])],
                                              confidence=level, seed=seed).as_dict()
                for ref in ("parent", "base")}

    # Each kind is tested too (a gain in code must not pay for a loss in facts), at a
    # Bonferroni-corrected confidence: with 6 kinds, a model no worse than the margin in any
    # kind is called worse in one about as rarely as the suite's own test errs (per
    # reference: the parent and the base are two such families).
    kind_confidence = 1 - (1 - confidence) / max(1, len(by_kind))

    def kind(d: dict[str, list[float]]) -> dict:
        return ({who: round(sum(v) / len(v), 4) for who, v in d.items()} | {"n": len(d["candidate"])}
                | versus(d, kind_confidence))

    return {
        "n": len(probes), "checked": len(checked), "samples": len(answers.candidate[0]) if answers.candidate else 0,
        "pass_rate": {who: round(sum(v) / len(v), 4) if v else None for who, v in score.items()},
        **versus(score, confidence), "kind_confidence": kind_confidence,
        "by_kind": {k: kind(d) for k, d in sorted(by_kind.items())},
        "agreement": {"parent": agreement(answers.parent), "base": agreement(answers.base), "n": len(short)},
        "drift": paired_bootstrap(drift, confidence=confidence, seed=seed).as_dict() if drift else None,
    }


def decide(heldout: list[Prompt], current: Answers, candidate: Answers, probes: list[Probe],
           probe_answers: ProbeAnswers, sources: dict[str, tuple[float, Callable]],
           verifiers: dict[str, Callable], *, margin: float = 0.01, confidence: float = 0.95,
           drift: list[float] | None = None, seed: int = 0,
           compared: tuple[int, int, int, list[dict]] | None = None) -> GateResult:
    """`compared`: `pairwise`'s result on these held-out answers, when the caller has it (the
    gate's second look at the probes compares the same held-out answers again)."""
    reasons: list[str] = []
    wins, losses, ties, details = compared or pairwise(heldout, current, candidate, sources)
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
        (cur, _), (cand, n_cand) = pass_rate(heldout, current, fn), pass_rate(heldout, candidate, fn)
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
        for name, k in figures.get("by_kind", {}).items():
            d = k[f"vs_{ref}"]
            if d["high"] is not None and d["high"] < -margin:
                reasons.append(f"probe kind {name} vs {ref}: {Interval(**d).text(points=True)} points, worse "
                               f"beyond the -{100 * margin:.1f}-point margin (pass rate {k[ref]:.3f} -> "
                               f"{k['candidate']:.3f})")

    return GateResult(promote=not reasons, reasons=reasons or ["passed"], win_rate=win.value, wins=wins,
                      losses=losses, ties=ties, win_interval=win.as_dict(), verifier_pass=vpass, probes=figures,
                      examples=details[:5], heldout_better=win.low is not None and win.low > 0.5)


# -- generation, with the probe answers of a model cached (a version never changes) -------
class AnswerCache:
    """A model's answers to a fixed prompt set (greedy, or `samples` each at a temperature),
    and the log-probs of its first answers under itself, kept in a directory
    (DATA_DIR/gate_cache): a version never changes, so the base and the parent answered in
    earlier cycles, and a cycle generates for its candidate only. Used for the probe suite
    (the gate) and the replay set (trainer/replay.py)."""

    def __init__(self, root: Path, conversations: list[list[dict]], max_new_tokens: int, dtype: str,
                 log: Callable[[str], None] = print):
        self.root, self.conversations, self.max_new_tokens, self.dtype, self.log = (
            root, conversations, max_new_tokens, dtype, log)
        self.digest = hashlib.sha256(json.dumps(conversations, sort_keys=True).encode()).hexdigest()[:16]

    def _path(self, model_dir: Path) -> Path:
        # The weight files' sizes and times too: an interpolated model renamed into a version's
        # weights/ directory must not find the answers of the model that was there before.
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(model_dir).glob("*.safetensors"))
        key = f"v4|{Path(model_dir).resolve()}|{files}|{self.digest}|{self.max_new_tokens}|{self.dtype}"
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"

    def _engine(self, model_dir: Path, engine: "Engine | None") -> "Engine":
        from trainer.generate import Engine

        return engine or Engine(model_dir, dtype=self.dtype, log=self.log)

    @staticmethod
    def mode(samples: int, temperature: float, seed: int) -> str:
        return "greedy" if samples <= 0 else f"k{samples}-t{temperature:g}-s{seed}"

    def answers(self, model_dir: Path, *, samples: int = 0, temperature: float = 0.0, seed: int = 0,
                engine: "Engine | None" = None) -> list[list[str]]:
        """Each prompt's answers: one greedy (samples=0), or `samples` at `temperature` with
        common random numbers (trainer.generate.Engine.sample)."""
        path, mode = self._path(model_dir), self.mode(samples, temperature, seed)
        entry = json.loads(path.read_text()) if path.exists() else {}
        if mode not in entry:
            engine = self._engine(model_dir, engine)
            entry[mode] = {"answers": [[a] for a in engine.generate(self.conversations,
                                                                     max_new_tokens=self.max_new_tokens)]
                           if samples <= 0 else engine.sample(self.conversations, samples=samples,
                                                              temperature=temperature,
                                                              max_new_tokens=self.max_new_tokens, seed=seed)}
            self._put(path, entry)
        return entry[mode]["answers"]

    def greedy(self, model_dir: Path, engine: "Engine | None" = None) -> list[str]:
        return [a[0] for a in self.answers(model_dir, engine=engine)]

    def own_logprobs(self, model_dir: Path, *, samples: int = 0, temperature: float = 0.0, seed: int = 0,
                     engine: "Engine | None" = None) -> list[list[float]]:
        """[sum log-prob, tokens] of the model's own first answer to each prompt."""
        path, mode = self._path(model_dir), self.mode(samples, temperature, seed)
        first = [a[0] for a in self.answers(model_dir, samples=samples, temperature=temperature, seed=seed,
                                            engine=engine)]
        entry = json.loads(path.read_text())
        if "logprobs" not in entry[mode]:
            entry[mode]["logprobs"] = [list(x) for x in self._engine(model_dir, engine).logprobs(self.conversations,
                                                                                                first)]
            self._put(path, entry)
        return entry[mode]["logprobs"]

    def _put(self, path: Path, entry: dict) -> None:
        write_json_atomic(path, entry)  # several processes may share the directory


def drift_per_probe(parent_own: list[list[float]], candidate_on_parent: list[tuple[float, int]]) -> list[float]:
    """Per probe, the change in mean log-prob per token of the parent's answer, candidate minus
    parent: 0 = the candidate would say what the parent said as readily; negative = it moved."""
    return [c / n - p / n for (p, n), (c, _) in zip(parent_own, candidate_on_parent) if n]


class Gate:
    """Judges candidates against one parent: the parent's held-out answers and every model's
    probe answers are computed once (the probes' across cycles, in the cache), so judging a
    second candidate of the same cycle (an interpolation) costs only that candidate's answers.
    Each model is loaded once per judgement (trainer.generate.Engine).

    The probe suite is answered greedily (`probe_samples` 0) or `probe_samples` times per probe
    at `probe_temperature`; a probe's score is then the share of its answers that pass. Greedy
    verdicts flip on small weight changes, and those flips, not the weights, set the width of
    the interval (docs/measurements.md): averaging samples narrows it."""

    def __init__(self, parent_dir: Path, base_dir: Path, heldout: list[Prompt],
                 sources: dict[str, tuple[float, Callable]], verifiers: dict[str, Callable], *, cache_dir: Path,
                 margin: float, confidence: float, max_new_tokens: int, dtype: str = "float32", seed: int = 0,
                 probe_samples: int = 0, probe_temperature: float = 0.7, heldout_samples: int = 0,
                 log: Callable[[str], None] = print):
        self.parent_dir, self.base_dir, self.heldout = parent_dir, base_dir, heldout
        self.sources, self.verifiers = sources, verifiers
        self.margin, self.confidence, self.max_new_tokens, self.dtype, self.seed, self.log = (
            margin, confidence, max_new_tokens, dtype, seed, log)
        self.probe_samples, self.probe_temperature = probe_samples, probe_temperature
        self.heldout_samples = heldout_samples
        self.probes = load_probes()
        self.cache = AnswerCache(cache_dir, [p.messages for p in self.probes], PROBE_MAX_TOKENS, dtype, log)
        self._parent_heldout: list[list[str]] | None = None

    def _heldout_answers(self, engine: "Engine") -> list[list[str]]:
        """Greedy (heldout_samples 0), or that many samples per prompt at the probes'
        temperature, with the same seed for both models: where their next-token distributions
        agree they draw the same answer, so a difference is the weights', not the dice's."""
        convs = [p.messages for p in self.heldout]
        if not convs:
            return []
        if self.heldout_samples <= 0:
            return [[a] for a in engine.generate(convs, max_new_tokens=self.max_new_tokens)]
        return engine.sample(convs, samples=self.heldout_samples, temperature=self.probe_temperature,
                             max_new_tokens=self.max_new_tokens, seed=self.seed + HELDOUT_SEED)

    def judge(self, candidate_dir: Path) -> GateResult:
        """The verdict on `candidate_dir`. Sampled probes are looked at twice: first with
        SCREEN_SAMPLES answers per probe, and a candidate already refused then (not better on
        held-out traffic, or worse on the probes beyond the margin even at the interval's high
        end) is refused without the rest; otherwise with all of them. Only a refusal stops
        early, so the first look never makes a promotion likelier."""
        from trainer.generate import Engine

        def engine(d: Path) -> Engine:
            return Engine(d, dtype=self.dtype, log=self.log)  # loads on first use only

        engines = {"parent": engine(self.parent_dir), "candidate": engine(candidate_dir)}
        dirs = {"base": self.base_dir, "parent": self.parent_dir, "candidate": candidate_dir}
        parent_engine, cand_engine = engines["parent"], engines["candidate"]
        if self._parent_heldout is None:
            self._parent_heldout = self._heldout_answers(parent_engine)
        cand = self._heldout_answers(cand_engine)
        # The held-out comparison (the scorers, a judge among them) is the same at both looks.
        compared = pairwise(self.heldout, self._parent_heldout, cand, self.sources)
        k, temperature, seed = self.probe_samples, self.probe_temperature, self.seed
        first_k = min(k, SCREEN_SAMPLES)  # 0: greedy

        def probe_answers(samples: int, seed: int) -> ProbeAnswers:
            # Cached per model, mode and seed: the parent's and base's from earlier cycles.
            return ProbeAnswers(*(self.cache.answers(dirs[who], samples=samples, temperature=temperature, seed=seed,
                                                     engine=engines.get(who)) for who in ProbeAnswers._fields))

        first = probe_answers(first_k, seed)
        # Drift: the parent's first answer to each probe, under the candidate.
        parent_own = self.cache.own_logprobs(self.parent_dir, samples=first_k, temperature=temperature, seed=seed,
                                             engine=parent_engine)
        drift = drift_per_probe(parent_own, cand_engine.logprobs([p.messages for p in self.probes],
                                                                 [a[0] for a in first.parent]))

        def verdict(answers: ProbeAnswers) -> GateResult:
            return decide(self.heldout, self._parent_heldout, cand, self.probes, answers, self.sources,
                          self.verifiers, margin=self.margin, confidence=self.confidence, drift=drift, seed=self.seed,
                          compared=compared)

        screen = verdict(first)
        if k <= SCREEN_SAMPLES:
            return screen
        highs = [(screen.probes.get(f"vs_{ref}") or {}).get("high") for ref in ("parent", "base")]
        # Kinds are judged at the second look only: their test is already the final one, and
        # testing it at both looks would refuse a sound candidate more often than it says.
        worse = any(h is not None and h < -self.margin for h in highs)
        if not screen.heldout_better or worse:
            self.log(f"gate: refused at the first look ({SCREEN_SAMPLES} samples per probe): "
                     f"{'worse on the probes beyond the margin' if worse else 'not better on held-out traffic'}")
            screen.probes["screened"] = True
            return screen
        # The rest of the samples, with a seed of their own: every model draws the same again.
        rest = probe_answers(k - SCREEN_SAMPLES, seed + 1)
        return verdict(ProbeAnswers(*([a + b for a, b in zip(x, y)] for x, y in zip(first, rest))))
