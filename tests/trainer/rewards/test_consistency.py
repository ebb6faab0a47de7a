import pytest

from trainer.prompts import Candidate, Prompt
from trainer.rewards.consistency import agreement, final_answer_key


def prompt(text):
    return Prompt("p1", [{"role": "user", "content": text}])


@pytest.mark.parametrize("a,b", [
    ("The answer is 42.", "So 6 * 7 = 42"),                       # last number
    ("Total: 1,000", "1000.0"),
    ('{"name": "Ann", "total": "45.00"}', 'Here: {"Total": 45, "name": "ann"}'),  # the object's values
    ("Paris.", "  paris "),
])
def test_same_final_answer(a, b):
    assert final_answer_key(a) == final_answer_key(b)


@pytest.mark.parametrize("a,b", [
    ("The answer is 42.", "The answer is 41."),
    ("Between 1-3 items", "Between 1 and -3 items"),              # a hyphen is not a minus sign
    ('{"name": "Ann", "total": 45}', '{"name": "Bob", "total": 45}'),
    ('{"name": "Ann"}', '{"name": "Ann", "extra": 1}'),
    ("Paris", "Lyon"),
])
def test_different_final_answer(a, b):
    assert final_answer_key(a) != final_answer_key(b)


def test_agreement_is_the_share_of_other_candidates_agreeing():
    texts = ["So the answer is 12.", "12", "It is 12 apples.", "13", "   "]
    assert agreement(prompt("Q"), [Candidate(t, "plain") for t in texts]) == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert agreement(prompt("Q"), [Candidate("12", "plain"), Candidate("12", "plain")]) == [None, None]
    assert agreement(prompt("Q"), [Candidate("", "plain")] * 3) == [0.0, 0.0, 0.0]  # empty answers agree on nothing
