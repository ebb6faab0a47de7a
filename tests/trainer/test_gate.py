"""The gate's decision (trainer/gate.py) on given answers: no model here. The real models
are in tests/e2e/test_gate_cycle.py."""
from pathlib import Path

import pytest

from trainer.gate import ProbeAnswers, decide, drift_per_probe, pairwise, probe_figures
from trainer.probes import Probe
from trainer.prompts import Prompt
from trainer.rewards import json_verifier

TEXT = ("Extract the fields customer, item from the text below. Reply with only a JSON object.\n"
        "Text: Ann Lee bought lamps.")
GOOD = '{"customer": "Ann Lee", "item": "lamps"}'
BAD = "Ann Lee bought some lamps, I think."
SOURCES = {"verifier": (1.0, json_verifier)}
VERIFIERS = {"json": json_verifier}


def heldout(n):
    return [Prompt(f"p{i}", [{"role": "user", "content": TEXT}]) for i in range(n)]


def probes(n):
    """n fact probes whose answer is the word w<i>."""
    return [Probe(f"fact-{i}", "fact", [{"role": "user", "content": f"Say w{i}."}], {"words": [f"w{i}"]})
            for i in range(n)]


def answers(n, wrong=()):
    """One (greedy) answer per probe."""
    return [[f"w{i}" if i not in wrong else "no idea"] for i in range(n)]


def same(n=200, **kw):
    a = answers(n, **kw)
    return ProbeAnswers(a, a, a)


def test_a_better_candidate_that_keeps_every_probe_is_promoted():
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, probes(200), same(), SOURCES, VERIFIERS)
    assert r.promote and r.reasons == ["passed"]
    assert (r.wins, r.losses, r.ties, r.win_rate) == (12, 0, 0, 1.0)
    assert r.win_interval["low"] > 0.5 and r.win_interval["n"] == 12
    assert r.verifier_pass["json"] == {"current": 0.0, "candidate": 1.0, "n": 12}
    assert r.probes["vs_parent"]["value"] == 0 and r.probes["pass_rate"]["candidate"] == 1.0


def test_ties_are_not_half_wins_and_too_few_wins_are_not_enough():
    # 3 wins, 9 ties: ties counted half this was 0.625 and promoted; here it is 3 of 3 decided,
    # whose interval still reaches below 0.5.
    r = decide(heldout(12), [BAD] * 3 + [GOOD] * 9, [GOOD] * 12, probes(200), same(), SOURCES, VERIFIERS)
    assert not r.promote and r.win_rate == 1.0 and r.ties == 9
    assert r.win_interval["low"] < 0.5 and "not better than the parent" in r.reasons[0]
    r = decide(heldout(4), [GOOD] * 4, [GOOD] * 4, probes(200), same(), SOURCES, VERIFIERS)
    assert not r.promote and r.win_rate is None and "no prompt told the models apart (0 wins, 0 losses, 4 ties)" in \
        r.reasons[0]


def test_sampled_heldout_answers_decide_on_the_mean_of_each_models_samples():
    # Greedy, the two models said the same (a tie on every prompt); their samples, drawn with
    # the same noise, differ on some draws: 3 of 4 good for the candidate against 1 of 4.
    cur = [[GOOD, BAD, BAD, BAD]] * 12
    cand = [[GOOD, GOOD, GOOD, BAD]] * 12
    greedy = decide(heldout(12), [GOOD] * 12, [GOOD] * 12, probes(200), same(), SOURCES, VERIFIERS)
    assert greedy.ties == 12 and not greedy.promote
    r = decide(heldout(12), cur, cand, probes(200), same(), SOURCES, VERIFIERS)
    assert r.promote and (r.wins, r.losses, r.ties) == (12, 0, 0)
    # The prompt is the unit: 12 decided prompts, not 48 samples.
    assert r.win_interval["n"] == 12
    # Pass rates count every sample.
    assert r.verifier_pass["json"] == {"current": 0.25, "candidate": 0.75, "n": 48}
    assert r.examples[0]["samples"] == 4 and r.examples[0]["current"] == GOOD
    assert (r.examples[0]["score_current"], r.examples[0]["score_candidate"]) == (0.25, 0.75)
    # A difference under TIE_EPS in the means is still a tie.
    r = decide(heldout(4), [[GOOD] * 20 + [BAD]] * 4, [[GOOD] * 21] * 4, probes(200), same(), SOURCES, VERIFIERS)
    assert r.ties == 4


def test_heldout_answers_are_scored_as_one_group_so_a_majority_can_speak():
    from trainer.rewards.consistency import majority_vote

    math = [Prompt("m", [{"role": "user", "content": "Each box has 7 pens. How many pens are in 28 boxes? "
                                                      "Answer with the number."}])]
    sources = {"majority": (1.0, majority_vote)}
    # Two answers (one per model, greedy) have no majority: a tie.
    assert pairwise(math, ["196"], ["27"], sources)[:3] == (0, 0, 1)
    # Eight answers do: the candidate's agree with the group's clear majority more often.
    w, l, t, details = pairwise(math, [["196", "27", "27", "196"]], [["196", "196", "196", "196"]], sources)
    assert (w, l, t) == (1, 0, 0), details


def test_forgetting_on_the_probe_suite_is_refused_and_named():
    base = parent = answers(200)
    forgot = answers(200, wrong=range(0, 200, 20))  # 10 of 200 facts lost: -5 points
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, probes(200), ProbeAnswers(base, parent, forgot), SOURCES,
               VERIFIERS)
    assert not r.promote
    assert [x.split(":")[0] for x in r.reasons] == ["probe suite vs parent", "probe kind fact vs parent",
                                                    "probe suite vs base", "probe kind fact vs base"]
    assert "-5.0 [" in r.reasons[0] and "most lost in fact: 1.00 -> 0.95" in r.reasons[0]
    assert r.probes["vs_parent"]["high"] < 0


def test_losses_cannot_add_up_against_the_base():
    # Each cycle lost 2 of 200 against its parent (within a 3-point margin against the parent
    # alone); the base is the fixed reference, so the third cycle is refused.
    base = answers(200)
    parent = answers(200, wrong=range(4))
    cand = answers(200, wrong=range(6))  # -1 point against the parent, -3 against the base
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, probes(200), ProbeAnswers(base, parent, cand), SOURCES,
               VERIFIERS, margin=0.03)
    # The one kind (fact) is the suite here: surely worse, but not surely beyond the margin.
    assert not r.promote and [x.split(":")[0] for x in r.reasons] == ["probe suite vs base"]
    assert r.probes["by_kind"]["fact"]["vs_base"]["high"] < 0


def mixed(n_fact, n_code):
    return probes(n_fact) + [Probe(f"code-{i}", "code", [{"role": "user", "content": f"Say c{i}."}],
                                   {"words": [f"c{i}"]}) for i in range(n_code)]


def mixed_answers(n_fact, n_code, wrong_facts=(), right_code=None):
    right_code = range(n_code) if right_code is None else right_code
    return answers(n_fact, wrong=wrong_facts) + [[f"c{i}" if i in right_code else "no idea"] for i in range(n_code)]


def test_gains_in_one_kind_cannot_pay_for_losses_in_another():
    # The measured failure (docs/measurements.md, lift with copy): code and format gains hid
    # fact and refusal losses in the suite's mean. Here +20 code probes and -8 facts: +10
    # points overall, well within the margin, yet facts are surely worse.
    ps = mixed(60, 60)
    ref = mixed_answers(60, 60, right_code=range(30))
    cand = mixed_answers(60, 60, wrong_facts=range(8), right_code=range(50))
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, ps, ProbeAnswers(ref, ref, cand), SOURCES, VERIFIERS)
    assert r.probes["vs_parent"]["low"] > 0  # the suite's mean alone would promote
    assert not r.promote and [x.split(":")[0] for x in r.reasons] == ["probe kind fact vs parent",
                                                                      "probe kind fact vs base"], r.reasons
    assert "-13.3 [" in r.reasons[0] and "(n=60, 98%)" in r.reasons[0] and "0.867" in r.reasons[0]
    assert r.probes["kind_confidence"] == pytest.approx(0.975) and r.probes["by_kind"]["code"]["vs_base"]["low"] > 0
    # One fact lost is not a sure loss: the kind's interval reaches 0, and the gains stand.
    # Nor are 3 of 60 (-5 points, sure at the suite's 95%) beyond the margin at 97.5%.
    cand = mixed_answers(60, 60, wrong_facts=[3], right_code=range(50))
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, ps, ProbeAnswers(ref, ref, cand), SOURCES, VERIFIERS)
    assert r.promote, r.reasons
    assert r.probes["by_kind"]["fact"]["vs_parent"]["high"] == 0
    cand = mixed_answers(60, 60, wrong_facts=range(3), right_code=range(50))
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, ps, ProbeAnswers(ref, ref, cand), SOURCES, VERIFIERS)
    assert r.probes["by_kind"]["fact"]["vs_parent"]["high"] >= -0.01, r.probes["by_kind"]["fact"]


def test_a_broken_candidate_is_refused_for_every_reason():
    r = decide(heldout(4), [GOOD] * 4, ["!!!!"] * 4, probes(200), ProbeAnswers(answers(200), answers(200),
                                                                                [["!!!!"]] * 200), SOURCES, VERIFIERS)
    text = " | ".join(r.reasons)
    assert "not better than the parent" in text and "json verifier pass rate dropped: 1.00 -> 0.00 (n=4)" in text
    assert "probe suite vs parent: -100.0" in text


def test_no_heldout_prompts_is_no_promotion():
    r = decide([], [], [], probes(10), same(10), SOURCES, VERIFIERS)
    assert not r.promote and r.win_rate is None and r.reasons[0] == "no held-out prompts to compare on"


def test_probe_figures_agreement_by_kind_and_drift():
    ps = probes(4) + [Probe("code-0", "code", [{"role": "user", "content": "x"}], {"python": True}),
                      Probe("open-0", "open", [{"role": "user", "content": "y"}], {"open": True})]
    base = ["w0", "w1", "w2", "w3", "x = 1", "hi"]
    cand = ["w0", "W1.", "nope", "w3", "x = (", "hello"]
    base, cand = [[a] for a in base], [[a] for a in cand]
    f = probe_figures(ps, ProbeAnswers(base, base, cand), confidence=0.9, drift=[-0.1, -0.3])
    assert f["n"] == 6 and f["checked"] == 5
    fact = f["by_kind"]["fact"]
    assert {k: fact[k] for k in ("base", "parent", "candidate", "n")} == {"base": 1.0, "parent": 1.0, "candidate": 0.75,
                                                                           "n": 4}
    # Each kind's difference has its interval, at the confidence corrected for 2 kinds.
    assert fact["vs_base"]["value"] == -0.25 and fact["vs_base"]["confidence"] == pytest.approx(0.95)
    assert f["by_kind"]["code"]["candidate"] == 0.0
    assert f["agreement"] == {"parent": 0.75, "base": 0.75, "n": 4}  # "W1." agrees with "w1"
    assert f["drift"]["value"] == -0.2 and f["drift"]["n"] == 2


def test_drift_is_per_token_and_skips_empty_answers():
    assert drift_per_probe([[-4.0, 4], [0.0, 0]], [(-8.0, 4), (-1.0, 0)]) == [-1.0]


def test_sampled_probes_score_the_share_of_answers_that_pass():
    ps = probes(200)
    four = [[f"w{i}"] * 4 for i in range(200)]
    # The candidate's 4 samples: on 50 probes one of four fails (-25 points on each: -6.25 in all).
    cand = [[f"w{i}"] * 3 + ["no idea"] if i % 4 == 0 else [f"w{i}"] * 4 for i in range(200)]
    f = probe_figures(ps, ProbeAnswers(four, four, cand), confidence=0.95)
    assert f["samples"] == 4 and f["pass_rate"]["candidate"] == 0.9375
    assert f["vs_parent"]["value"] == -0.0625 and f["vs_parent"]["high"] < 0
    assert f["agreement"]["parent"] == 0.9375  # sample against sample: 50 of 800 differ
    # Half as many losses spread as quarter-probes narrow the interval that greedy flips
    # (the same mean, as whole probes) would give: the reason to sample.
    greedy = [[f"w{i}"] if i % 16 else ["no idea"] for i in range(200)]  # 13 probes lost whole: -6.5
    g = probe_figures(ps, ProbeAnswers(answers(200), answers(200), greedy), confidence=0.95)
    width = lambda d: d["high"] - d["low"]  # noqa: E731
    assert width(f["vs_parent"]) < width(g["vs_parent"])


class FakeEngine:
    """A mock of trainer.generate.Engine (the real one is tests/trainer/test_gate_models.py's; this
    tests only the order of looks, in a second): each model directory's name says how it answers
    (held-out: the GOOD JSON or the BAD chat; probes: right, or wrong on every 4th), and every
    sampling request is recorded."""
    asked: list = []

    def __init__(self, model_dir, **kw):
        self.name = Path(model_dir).name

    def generate(self, convs, **kw):
        if "Say w" in convs[0][-1]["content"]:  # the probes, answered greedily
            return [self._probe(c) for c in convs]
        return [GOOD if self.name.startswith("cand") else BAD for _ in convs]

    def _probe(self, conv):
        i = int(conv[-1]["content"][len("Say w"):-1])
        return "no idea" if self.name == "cand-forgot" and i % 4 == 0 else f"w{i}"

    def sample(self, convs, *, samples, seed, **kw):
        FakeEngine.asked.append((self.name, samples, seed))
        if "Say w" not in convs[0][-1]["content"]:  # held-out prompts, sampled
            return [self.generate([c]) * samples for c in convs]
        return [[self._probe(c)] * samples for c in convs]

    def logprobs(self, convs, answers):
        return [(-1.0, 1) for _ in convs]


def fake_gate(tmp_path, monkeypatch, **samples):
    """A Gate over FakeEngine models in tmp_path (parent, base, cand-forgot, cand-good), seed 7."""
    import trainer.generate
    import trainer.gate as gate_module

    monkeypatch.setattr(trainer.generate, "Engine", FakeEngine)
    monkeypatch.setattr(gate_module, "load_probes", lambda: probes(200))
    FakeEngine.asked = []
    for d in ("parent", "base", "cand-forgot", "cand-good"):
        (tmp_path / d).mkdir()
    return gate_module.Gate(tmp_path / "parent", tmp_path / "base", heldout(12), SOURCES, VERIFIERS,
                            cache_dir=tmp_path / "cache", margin=0.01, confidence=0.95, max_new_tokens=8,
                            seed=7, log=lambda m: None, **samples)


def test_sampled_probes_refuse_a_clearly_worse_candidate_at_the_first_look_fake_engine(tmp_path, monkeypatch):
    g = fake_gate(tmp_path, monkeypatch, probe_samples=16)
    bad = g.judge(tmp_path / "cand-forgot")
    # 25% of probes lost: refused at the first look, with 4 samples each, never the other 12.
    assert not bad.promote and bad.probes["screened"] and bad.probes["samples"] == 4
    assert ("cand-forgot", 12, 8) not in FakeEngine.asked and ("cand-forgot", 4, 7) in FakeEngine.asked
    good = g.judge(tmp_path / "cand-good")
    # Level on the probes: looked at again with all 16 (4 + 12 drawn with the next seed).
    assert good.promote and good.probes["samples"] == 16 and "screened" not in good.probes
    assert ("cand-good", 12, 8) in FakeEngine.asked and ("base", 12, 8) in FakeEngine.asked
    # The base's and the parent's answers came from the cache the second time round.
    assert sum(a[0] == "base" for a in FakeEngine.asked) == 2
    # Held-out prompts greedy here (heldout_samples 0): only probes were sampled.
    assert all(a[1] in (4, 12) for a in FakeEngine.asked)


def test_sampled_heldout_answers_use_one_seed_for_both_models_fake_engine(tmp_path, monkeypatch):
    from trainer.gate import HELDOUT_SEED

    g = fake_gate(tmp_path, monkeypatch, probe_samples=0, heldout_samples=3)
    r = g.judge(tmp_path / "cand-good")
    assert r.promote and (r.wins, r.ties) == (12, 0) and r.examples[0]["samples"] == 3
    heldout_draws = [a for a in FakeEngine.asked if a[1] == 3]
    assert heldout_draws == [("parent", 3, 7 + HELDOUT_SEED), ("cand-good", 3, 7 + HELDOUT_SEED)]
