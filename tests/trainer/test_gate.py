"""The gate's decision (trainer/gate.py) on given answers: no model here. The real models
are in tests/e2e/test_gate_cycle.py."""
from trainer.gate import ProbeAnswers, decide, drift_per_probe, probe_figures
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
    return [f"w{i}" if i not in wrong else "no idea" for i in range(n)]


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


def test_forgetting_on_the_probe_suite_is_refused_and_named():
    base = parent = answers(200)
    forgot = answers(200, wrong=range(0, 200, 20))  # 10 of 200 facts lost: -5 points
    r = decide(heldout(12), [BAD] * 12, [GOOD] * 12, probes(200), ProbeAnswers(base, parent, forgot), SOURCES,
               VERIFIERS)
    assert not r.promote
    assert [x.split(":")[0] for x in r.reasons] == ["probe suite vs parent", "probe suite vs base"]
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
    assert not r.promote and [x.split(":")[0] for x in r.reasons] == ["probe suite vs base"]


def test_a_broken_candidate_is_refused_for_every_reason():
    r = decide(heldout(4), [GOOD] * 4, ["!!!!"] * 4, probes(200), ProbeAnswers(answers(200), answers(200),
                                                                                ["!!!!"] * 200), SOURCES, VERIFIERS)
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
    f = probe_figures(ps, ProbeAnswers(base, base, cand), confidence=0.9, drift=[-0.1, -0.3])
    assert f["n"] == 6 and f["checked"] == 5
    assert f["by_kind"]["fact"] == {"base": 1.0, "parent": 1.0, "candidate": 0.75, "n": 4}
    assert f["by_kind"]["code"]["candidate"] == 0.0
    assert f["agreement"] == {"parent": 0.75, "base": 0.75, "n": 4}  # "W1." agrees with "w1"
    assert f["drift"]["value"] == -0.2 and f["drift"]["n"] == 2


def test_drift_is_per_token_and_skips_empty_answers():
    assert drift_per_probe([[-4.0, 4], [0.0, 0]], [(-8.0, 4), (-1.0, 0)]) == [-1.0]
