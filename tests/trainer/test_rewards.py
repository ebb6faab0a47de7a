import pytest

from trainer.rewards import Candidate, Prompt, asked_keys, ensemble, json_verifier, score_extraction, user_feedback

TEXT = ("Extract the fields customer, item, quantity, total from the text below. Reply with only a JSON object.\n"
        "Text: Maria Lopez ordered 3 lamps for a total of 45.00 dollars.")


def prompt(text=TEXT, feedback=()):
    return Prompt("p1", [{"role": "user", "content": text}], feedback=list(feedback))


def test_asked_keys():
    assert asked_keys(TEXT) == ["customer", "item", "quantity", "total"]
    assert asked_keys("Extract the fields name and city as a JSON object. Text: ...") == ["name", "city"]
    assert asked_keys("What is 2 + 2?") is None


@pytest.mark.parametrize("answer,expected", [
    ('{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}', 1.0),
    ('Sure! {"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}', 0.9),
    ('{"customer": "Maria Lopez", "item": "lamps"}', 0.2 + 0.15 + 0.25),
    ('{"customer": "Bob", "item": "cars", "quantity": 9, "total": "1"}', 0.5),  # keys but invented values
    ("The customer is Maria.", 0.0),
    ('{"customer": "Maria Lopez", "item": ', 0.0),
    ('[1, 2]', 0.0),
])
def test_score_extraction(answer, expected):
    assert score_extraction(answer, asked_keys(TEXT), TEXT) == pytest.approx(expected)


def test_extra_keys_cost_and_scores_stay_in_range():
    full = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00", "a": 1, "b": 2}'
    assert score_extraction(full, asked_keys(TEXT), TEXT) == pytest.approx(0.9)
    many = "{" + ", ".join(f'"k{i}": {i}' for i in range(40)) + "}"
    assert score_extraction(many, asked_keys(TEXT), TEXT) == 0.0


def test_verifier_has_no_opinion_on_other_prompts():
    assert json_verifier(prompt("What is 2 + 2?"), [Candidate("4", "plain")]) == [None]


def test_feedback_scores_only_served_answer_and_corrections():
    cands = [Candidate("a", "plain"), Candidate("b", "served"), Candidate("c", "correction")]
    assert user_feedback(prompt(feedback=[{"kind": "thumbs", "value": "down", "choice_index": 0}]), cands) == [
        None, 0.0, 1.0]
    assert user_feedback(prompt(feedback=[{"kind": "rating", "value": 4, "choice_index": 0}]), cands)[1] == 0.75
    assert user_feedback(prompt(), cands) == [None, None, 1.0]


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
