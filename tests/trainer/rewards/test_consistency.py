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


def cands(*texts, strategy="plain"):
    return [Candidate(t, strategy) for t in texts]


def test_majority_vote_rewards_the_clear_majority_of_short_answers():
    from trainer.rewards.consistency import majority_vote

    got = majority_vote(prompt("Q"), cands("So it is 12.", "12", "12 apples", "13", "A long paragraph of prose with many words."))
    assert got == [1.0, 1.0, 1.0, 0.0, None]  # prose has no vote and no score


@pytest.mark.parametrize("texts", [
    ("12", "13", "14"),            # no majority
    ("12", "12", "13", "13"),      # a tie
    ("12", "12"),                  # too few voters
    ("12", "13", "12", "13", "14"),  # 2 of 5 is no majority
])
def test_no_clear_majority_is_masked(texts):
    from trainer.rewards.consistency import majority_vote

    assert majority_vote(prompt("Q"), cands(*texts)) == [None] * len(texts)


def test_json_answers_vote_field_by_field():
    from trainer.rewards.consistency import majority_vote

    texts = ['{"name": "Ann", "city": "Oslo"}', '{"name": "ann", "city": "Bergen"}', '{"Name": "Ann", "city": "Oslo"}',
             '{"name": "Bob", "city": "Oslo"}', "no json here"]
    assert majority_vote(prompt("Q"), cands(*texts)) == [1.0, 0.5, 1.0, 0.5, None]
    # A field without a clear majority (Oslo 2 of 4) is left out; the others still vote.
    texts[3] = '{"name": "Bob", "city": "Rome"}'
    assert majority_vote(prompt("Q"), cands(*texts)) == [1.0, 1.0, 1.0, 0.0, None]


def test_corrections_are_scored_but_never_vote():
    from trainer.rewards.consistency import majority_vote

    pool = cands("12", "12", "13") + cands("13", "13", "13", strategy="correction")
    assert majority_vote(prompt("Q"), pool) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_the_vote_is_only_a_fallback_where_no_verifier_judges():
    from trainer.rewards.consistency import Fallback, majority_vote

    judged = Fallback(majority_vote, {"v": lambda p, c: [1.0] * len(c)})
    unjudged = Fallback(majority_vote, {"v": lambda p, c: [None] * len(c)})
    pool = cands("12", "12", "13")
    assert judged(prompt("Q"), pool) == [None] * 3 and unjudged(prompt("Q"), pool) == [1.0, 1.0, 0.0]


def test_agreement_compares_tool_calls_by_what_they_do():
    def call(args):
        return Candidate("", "plain", tool_calls=[{"name": "f", "arguments": args}])

    same_a, same_b = call('{"city": "Lima", "unit": "C"}'), call('{"unit": "C",  "city": "Lima"}')
    got = agreement(Prompt("p", [{"role": "user", "content": "x"}]), [same_a, same_b, call('{"city": "Oslo"}')])
    assert got == [0.5, 0.5, 0.0]


def test_a_correction_is_no_vote_in_agreement():
    p = Prompt("p", [{"role": "user", "content": "What is 6 x 7?"}])
    cands = [Candidate("41", "plain"), Candidate("41", "correction"), Candidate("42", "plain"),
             Candidate("42", "plain")]
    # The planted "41" lifts no model answer copying it; it is scored against the model's answers.
    assert agreement(p, cands) == [0.0, 1 / 3, 0.5, 0.5]
    assert agreement(p, cands[:3]) == [None] * 3  # two answers of the model's own: no group
