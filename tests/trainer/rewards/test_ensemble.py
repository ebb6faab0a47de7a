import pytest

from tests.trainer.rewards.test_json_extraction import prompt
from trainer.prompts import Candidate
from trainer.rewards import agreement, constraint_verifier, ensemble, json_verifier, user_feedback


def test_ensemble_weighted_mean_of_opinions():
    p = prompt(feedback=[{"kind": "thumbs", "value": "up", "choice_index": 0}])
    good = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}'
    cands = [Candidate(good, "served"), Candidate("no idea", "plain")]
    scores, detail = ensemble({"verifier": (1.0, json_verifier), "feedback": (3.0, user_feedback)}, p, cands)
    assert scores == [pytest.approx(1.0), pytest.approx(0.0)]
    assert detail[1] == {"verifier": 0.0}
    scores, _ = ensemble({"verifier": (1.0, json_verifier), "feedback": (3.0, user_feedback)},
                         prompt(feedback=[{"kind": "thumbs", "value": "down", "choice_index": 0}]), cands)
    assert scores[0] == pytest.approx(0.25)  # (1*1.0 + 3*0.0) / 4


def test_ensemble_rejects_a_source_with_the_wrong_number_of_scores():
    with pytest.raises(ValueError, match="'bad' gave 1 scores for 2"):
        ensemble({"bad": (1.0, lambda p, c: [0.5])}, prompt(), [Candidate("a", "plain"), Candidate("b", "plain")])


def test_ensemble_skips_zero_weight_sources_and_combines_new_ones():
    p = prompt("Answer with a number. What is 2 + 2?")
    cands = [Candidate("4", "plain"), Candidate("4", "plain"), Candidate("The answer is five.", "plain")]
    never = lambda p, c: pytest.fail("a source with weight 0 must not run")  # noqa: E731
    scores, detail = ensemble({"constraints": (1.0, constraint_verifier), "agreement": (1.0, agreement),
                               "off": (0.0, never)}, p, cands)
    assert detail[0] == {"constraints": 1.0, "agreement": 0.5}
    assert scores == [pytest.approx(0.75), pytest.approx(0.75), pytest.approx(0.0)]


def test_a_fallback_source_reuses_the_ensembles_scores_and_no_verifier_runs_twice():
    from trainer.rewards.consistency import Fallback, majority_vote

    calls = []

    def verifier(p, c):
        calls.append(1)
        return [None] * len(c)

    cands = [Candidate("12", "plain"), Candidate("12", "plain"), Candidate("13", "plain")]
    sources = {"majority": (1.0, Fallback(majority_vote, {"v": verifier})), "v": (1.0, verifier)}
    scores, detail = ensemble(sources, prompt("Q"), cands)
    assert calls == [1] and scores == [1.0, 1.0, 0.0] and list(detail[0]) == ["majority"]
    # A verifier that is not a source of this ensemble (weight 0 or absent) is still asked.
    ensemble({"majority": (1.0, Fallback(majority_vote, {"v": verifier})), "v": (0.0, verifier)}, prompt("Q"), cands)
    assert calls == [1, 1]
