from trainer.gate import canary_passed, decide, load_canary
from trainer.prompts import Prompt
from trainer.rewards import json_verifier

TEXT = ("Extract the fields customer, item from the text below. Reply with only a JSON object.\n"
        "Text: Ann Lee bought lamps.")
GOOD = '{"customer": "Ann Lee", "item": "lamps"}'
BAD = "Ann Lee bought some lamps, I think."
SOURCES = {"verifier": (1.0, json_verifier)}
VERIFIERS = {"json": json_verifier}
CANARY = [{"messages": [{"role": "user", "content": "Capital of France?"}], "expect_any": ["paris"]},
          {"messages": [{"role": "user", "content": "2+3?"}], "expect_any": ["5"]}]


def heldout(n):
    return [Prompt(f"p{i}", [{"role": "user", "content": TEXT}]) for i in range(n)]


def test_better_candidate_is_promoted():
    r = decide(heldout(4), [BAD] * 4, [GOOD] * 4, CANARY, ["Paris", "5"], ["Paris.", "It is 5"], SOURCES, VERIFIERS)
    assert r.promote and r.reasons == ["passed"]
    assert r.win_rate == 1.0 and r.wins == 4
    assert r.verifier_pass["json"] == {"current": 0.0, "candidate": 1.0}


def test_identical_candidate_is_not_promoted():
    r = decide(heldout(4), [GOOD] * 4, [GOOD] * 4, CANARY, ["Paris", "5"], ["Paris", "5"], SOURCES, VERIFIERS)
    assert not r.promote and r.win_rate == 0.5
    assert "win rate 0.50 < 0.55" in r.reasons[0]


def test_broken_candidate_is_rejected_with_reasons():
    r = decide(heldout(4), [GOOD] * 4, ["!!!!"] * 4, CANARY, ["Paris", "5"], ["!!!!", "!!!!"], SOURCES, VERIFIERS)
    assert not r.promote
    text = " | ".join(r.reasons)
    assert "win rate 0.00" in text and "json verifier pass rate dropped: 1.00 -> 0.00" in text
    assert "canary checks regressed: 1.00 -> 0.00" in text


def test_canary_regression_alone_blocks_promotion():
    r = decide(heldout(4), [BAD] * 4, [GOOD] * 4, CANARY, ["Paris", "5"], ["London", "5"], SOURCES, VERIFIERS,
               canary_tolerance=0.1)
    assert not r.promote and r.reasons == ["canary checks regressed: 1.00 -> 0.50 (tolerance 0.1)"]
    ok = decide(heldout(4), [BAD] * 4, [GOOD] * 4, CANARY, ["Paris", "5"], ["London", "5"], SOURCES, VERIFIERS,
                canary_tolerance=0.5)
    assert ok.promote


def test_no_heldout_prompts_is_no_promotion():
    r = decide([], [], [], CANARY, ["Paris", "5"], ["Paris", "5"], SOURCES, VERIFIERS)
    assert not r.promote and r.win_rate is None


def test_shipped_canary_set_is_well_formed():
    cases = load_canary()
    assert len(cases) >= 10
    for c in cases:
        assert c["messages"][0]["role"] == "user" and c["expect_any"]
        assert canary_passed(c, " ".join(c["expect_any"]).upper())
        assert not canary_passed(c, "zzz")
